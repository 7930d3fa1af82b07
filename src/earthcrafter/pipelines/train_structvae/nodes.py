"""train_structvae nodes: thin calls into earthcrafter.training.structvae and evaluation.reports."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from earthcrafter import tracking
from earthcrafter.evaluation.reports import OPTIONAL_TABLE3_ROWS, find_table3_runs, table3, table3_markdown
from earthcrafter.io.atomic import atomic_write_text
from earthcrafter.training.structvae import StructVAERunConfig, ablation_config, train_structvae

log = logging.getLogger(__name__)


def train_main(voxel_manifest: pd.DataFrame, params: dict) -> dict:
    """Train the main StructVAE configuration; the final validation metrics."""
    return train_structvae(voxel_manifest, StructVAERunConfig.model_validate(params))


def make_row_trainer(row: str) -> Callable[[pd.DataFrame, dict], dict]:
    """A node function training Table 3 row ``row``."""

    def train_row(voxel_manifest: pd.DataFrame, params: dict) -> dict:
        cfg = StructVAERunConfig.model_validate(params)
        if row in OPTIONAL_TABLE3_ROWS and row not in cfg.ablations:
            log.info("Table 3: optional row %r is not configured in train_structvae.ablations; not trained", row)
            return {"ablation": row, "status": "not configured"}
        return train_structvae(voxel_manifest, ablation_config(cfg, row))

    train_row.__name__ = f"train_structvae_{row}"
    return train_row


def report_table3(params: dict, *row_metrics: dict) -> dict:
    """Table 3 from the MLflow runs the sweep produced (queried by tag), written to
    ``<report_dir>/table3.csv`` and ``table3.md``; returns the table as JSON records."""
    cfg = StructVAERunConfig.model_validate(params)
    row_metrics = tuple(m for m in row_metrics if m.get("status") != "not configured")
    run_ids = [m.get("run_id") for m in row_metrics if m.get("run_id")]
    if not tracking.is_main_process():  # under torchrun every rank runs this node; rank 0 writes the table
        return {"rows": []}
    runs = find_table3_runs(run_ids) if run_ids else pd.DataFrame()
    if len(runs) < len(row_metrics):
        log.warning("Table 3: %d of %d rows found in MLflow; missing rows come from the node outputs",
                    len(runs), len(row_metrics))
        runs = pd.concat([runs, _runs_from_metrics(row_metrics, set(runs.get("tags.ablation", [])))], ignore_index=True)
    df = table3(runs)
    out = Path(cfg.report_dir)
    atomic_write_text(out / "table3.csv", df.to_csv(index=False))
    steps = sorted({int(m["steps"]) for m in row_metrics if "steps" in m})
    budget = "/".join(map(str, steps)) + (" steps each" if len(steps) == 1 else " steps") if steps else "no rows trained"
    caption = (f"StructVAE ablations (paper Table 3) on the `{cfg.data.train_split}`/`{cfg.data.val_split}` "
               f"tiles of this dataset, {budget}, batch {cfg.trainer.batch_size}, L={cfg.model.L}.")
    atomic_write_text(out / "table3.md", table3_markdown(df, caption))
    tracking.log_dict({"table3": df.to_dict(orient="records")}, "table3.json")  # beside Tables 2 and 4's
    log.info("Table 3 written to %s", out)
    return {"rows": df.to_dict(orient="records")}


def _runs_from_metrics(row_metrics: tuple[dict, ...], have: set) -> pd.DataFrame:
    """Fallback rows (tracking disabled): the node outputs shaped like MLflow search results."""
    rows = []
    for m in row_metrics:
        if m.get("ablation") in have:
            continue
        rows.append({"run_id": m.get("run_id", ""), "tags.ablation": m.get("ablation"), "status": "FINISHED",
                     **{f"metrics.final/{k}": v for k, v in m.items() if isinstance(v, (int, float))}})
    return pd.DataFrame(rows)
