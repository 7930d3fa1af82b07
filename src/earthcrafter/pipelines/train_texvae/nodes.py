"""train_texvae nodes: thin calls into earthcrafter.models.tex_vae_train."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pandas as pd

from earthcrafter import tracking
from earthcrafter.models.tex_vae import TexVAE
from earthcrafter.models.tex_vae_train import (
    TexVAETrainConfig,
    find_table2_runs,
    row_config,
    run_table2,
    runs_from_results,
    table2,
    table2_markdown,
    train_texvae,
)

log = logging.getLogger(__name__)


def train_main(params: dict, voxel_manifest: pd.DataFrame) -> tuple[TexVAE, dict]:
    """Train the configured row (TexE by default); metrics.json says whether it reached the target PSNR."""
    cfg = TexVAETrainConfig.model_validate(params)
    model, summary = train_texvae(cfg, voxel_manifest)
    psnr = summary.get("val_psnr")
    summary.update(target_psnr=cfg.target_psnr, reached_target=psnr is not None and psnr >= cfg.target_psnr)
    if not summary["reached_target"]:
        log.warning("TexVAE validation PSNR %s dB is below the target %.1f dB", psnr, cfg.target_psnr)
    return model.cpu(), summary


def make_row_trainer(row: str) -> Callable[[dict, pd.DataFrame], dict]:
    """A node function training Table 2 row ``row`` (or recording why it is skipped)."""

    def train_row(params: dict, voxel_manifest: pd.DataFrame) -> dict:
        return run_table2(TexVAETrainConfig.model_validate(params), voxel_manifest, rows=[row])[row]

    train_row.__name__ = f"train_texvae_{row}"
    return train_row


def report_table2(params: dict, *row_runs: dict) -> tuple[str, str]:
    """Table 2 from this sweep's MLflow runs (queried by tag, restricted to their run ids)."""
    cfg = TexVAETrainConfig.model_validate(params)
    results = {r["row"]: r for r in row_runs}
    run_ids = [r.get("run_id") for r in row_runs if r.get("run_id")]
    runs = find_table2_runs(run_ids) if run_ids and tracking.is_main_process() else pd.DataFrame()
    found = set(runs["tags.ablation"]) if len(runs) else set()
    if len(found) < len(results):
        log.warning("Table 2: %d of %d rows found in MLflow; the others come from the node outputs", len(found), len(results))
        missing = {k: v for k, v in results.items() if k not in found}
        runs = pd.concat([runs, runs_from_results(missing)], ignore_index=True)
    df = table2(runs, {k: v for k, v in cfg.ablations.rows.items() if k in results})
    steps = row_config(cfg, row_runs[0]["row"]).trainer.steps if row_runs else cfg.trainer.steps
    caption = (f"Table 2 (TexVAE data type and network) on this project's `{cfg.data.train_split}`/"
               f"`{cfg.data.val_split}` tiles, {steps} steps per row; the paper's numbers beside ours.")  # fmt: skip
    tracking.log_dict({"table2": df.to_dict(orient="records")}, "table2.json")
    return df.to_csv(index=False), table2_markdown(df, caption)
