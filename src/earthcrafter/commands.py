"""``earthcrafter`` command line (module named so Kedro does not mistake it for a project CLI plugin): inspect what the pipelines produced.

    earthcrafter info [--root .]      what each data layer holds, and the MLflow runs
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

LAYERS = (
    ("01_raw/scenes", "raw scenes"),
    ("02_intermediate/meshes", "meshed scenes"),
    ("03_primary/featured", "featured scenes"),
    ("05_model_input/voxels", "voxel tiles"),
    ("05_model_input/latents/struct", "structure latents"),
    ("05_model_input/latents/tex", "texture latents"),
    ("06_models", "models"),
    ("07_model_output/generated", "generated scenes"),
    ("08_reporting", "reports"),
)


def _count(path: Path) -> tuple[int, int]:
    """(entries directly inside, total bytes)."""
    if not path.exists():
        return 0, 0
    entries = [p for p in path.iterdir() if not p.name.startswith(".")]
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return len(entries), size


def cmd_info(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    root = Path(args.root)
    console = Console()
    table = Table(title="earthcrafter data")
    table.add_column("layer")
    table.add_column("path")
    table.add_column("entries", justify="right")
    table.add_column("size", justify="right")
    for rel, label in LAYERS:
        n, size = _count(root / "data" / rel)
        table.add_row(label, f"data/{rel}", str(n), f"{size / 1e6:.1f} MB")
    console.print(table)
    for metrics in sorted((root / "data" / "08_reporting").glob("*/metrics.json")):
        console.print(f"[bold]{metrics.parent.name}[/bold] {json.loads(metrics.read_text())}")
    db = root / "mlflow.db"
    if db.is_file():
        try:
            import mlflow

            mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{db.resolve()}"))
            runs = mlflow.search_runs(search_all_experiments=True, max_results=1000)
            console.print(f"MLflow: {len(runs)} run(s) in {db} — view with `make ui` (mlflow ui --backend-store-uri sqlite:///mlflow.db)")
        except Exception as e:  # a broken store must not hide the data summary
            console.print(f"MLflow store {db}: unreadable ({e})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="earthcrafter", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="summarise the data layers and MLflow runs")
    p.add_argument("--root", default=".", help="project root")
    p.set_defaults(func=cmd_info)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
