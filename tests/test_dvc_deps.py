"""dvc.yaml lists, for every stage, the code the stage runs: otherwise `dvc repro` calls a stage
up to date after a change to code it imports, and stale outputs survive a code change.

The code a stage runs is the static import closure (imports inside functions included) of its
Kedro pipeline package, the project settings (hooks, config loader) and the catalog's datasets.
A dependency covers a file when it names the file or a folder above it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
EVERY_STAGE = ("earthcrafter.settings", "earthcrafter.datasets")  # Kedro loads these for any run


def module_file(name: str) -> Path | None:
    path = SRC.joinpath(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def imported_modules(path: Path) -> set[str]:
    """earthcrafter modules (and candidate names) that ``path`` imports anywhere in its body."""
    package = ".".join(path.relative_to(SRC).with_suffix("").parts)
    if path.name != "__init__.py":
        package = package.rsplit(".", 1)[0]
    else:
        package = package[: -len(".__init__")]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(parent + ([base] if base else []))
            names |= {base} | {f"{base}.{a.name}" for a in node.names}  # `from pkg import module`
    return {n for n in names if n.split(".")[0] == "earthcrafter"}


def code_closure(*roots: str) -> set[Path]:
    seen: set[Path] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        path = module_file(name)
        if path is None or path in seen:
            continue
        seen.add(path)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages run first
        todo += imported_modules(path)
    return seen


def test_every_stage_depends_on_the_code_it_runs():
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    assert stages, "dvc.yaml has no stages"
    missing = {}
    for name, stage in stages.items():
        pipeline = stage["cmd"].split("--pipelines=")[1].split()[0]
        deps = [ROOT / d for d in stage.get("deps", [])]
        code = code_closure(f"earthcrafter.pipelines.{pipeline}.pipeline", *EVERY_STAGE)
        assert SRC / "earthcrafter" / "pipelines" / pipeline / "nodes.py" in code, f"{name}: closure missed its nodes"
        lacking = sorted(str(f.relative_to(ROOT)) for f in code if not any(d == f or d in f.parents for d in deps))
        if lacking:
            missing[name] = lacking
    assert not missing, "dvc.yaml stages miss code they run (add the files, or a folder above them):\n" + "\n".join(
        f"  {stage}: {files}" for stage, files in missing.items()
    )


def test_the_closure_follows_imports_inside_functions():
    """meshing imports earthcrafter.geometry.surface inside mesh_one; the closure must see it."""
    code = code_closure("earthcrafter.pipelines.meshing.pipeline")
    assert SRC / "earthcrafter" / "geometry" / "surface.py" in code
    assert SRC / "earthcrafter" / "geometry" / "raycast.py" in code
    assert SRC / "earthcrafter" / "models" / "struct_vae.py" not in code


def test_the_report_is_remade_when_a_table_it_shows_changes():
    """The evaluation report shows Tables 2-4 (written by the ablation pipelines, outside dvc repro)
    and the meshing report: its stage must depend on them, or dvc repro keeps a report saying
    'not run' beside a table that exists."""
    from earthcrafter.evaluation.html_report import TABLES

    deps = [ROOT / d for d in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["evaluation"]["deps"]]
    reports = ROOT / "data" / "08_reporting"
    for title, (rel, _) in TABLES.items():
        path = reports / rel
        assert any(d == path or d in path.parents for d in deps), f"{title}: {path} is not an evaluation dependency"
