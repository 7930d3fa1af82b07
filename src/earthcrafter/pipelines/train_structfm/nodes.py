"""train_structfm nodes: a thin call into earthcrafter.training.structfm."""

from __future__ import annotations

import logging

import pandas as pd

from earthcrafter import tracking
from earthcrafter.io.atomic import atomic_write_text
from earthcrafter.training.structfm import StructFMRunConfig, ablation_config, table4, train_structfm

log = logging.getLogger(__name__)


def train(latents_manifest: pd.DataFrame, latents_stats: dict, params: dict) -> dict:
    """Both stages, then generation from validation layouts; the final metrics."""
    return train_structfm(latents_manifest, latents_stats, StructFMRunConfig.model_validate(params))


def make_row_trainer(row: str, optional: bool = False):
    """A node function training Table 4 row ``row``; an ``optional`` row that the configuration
    does not name is skipped (logged, and its metrics say why)."""

    def train_row(latents_manifest: pd.DataFrame, latents_stats: dict, params: dict) -> dict:
        cfg = StructFMRunConfig.model_validate(params)
        if optional and row not in cfg.ablations:
            log.info("structfm_ablations: row %s is not configured (train_structfm.ablations): skipped", row)
            return {"skipped": f"train_structfm.ablations has no row {row!r}"}
        row_tags = {"ablation": row, "table": "4"}
        return train_structfm(latents_manifest, latents_stats, ablation_config(cfg, row), tags=row_tags)

    train_row.__name__ = f"train_structfm_{row}"
    return train_row


# Table 4 rows beyond the paper's, trained when train_structfm.ablations names them: the paper's
# architecture choices that the base configuration leaves out, each on the two_stage row's budget.
OPTIONAL_ROWS = {
    "two_stage_unet": "LatentSFM, fine stage: Swin U-Net",
    "two_stage_condnet": "LatentSFM, Swin CondNet",
}


def report_table4(params: dict, two_stage: dict, dense: dict, *optional: dict | None) -> dict:
    """Table 4 (csv + md) in ``report_dir`` from the rows' metrics, also logged to MLflow; each
    optional row's metrics follow, in the order of :data:`OPTIONAL_ROWS`, and each that ran is
    added below the paper's rows."""
    from pathlib import Path

    cfg = StructFMRunConfig.model_validate(params)
    extra = {OPTIONAL_ROWS[row]: m for row, m in zip(OPTIONAL_ROWS, optional) if m and "skipped" not in m}
    df = table4(two_stage, dense, extra)
    if not tracking.is_main_process():  # under torchrun every rank runs this node; rank 0 writes the table
        return {"rows": df.to_dict(orient="records")}
    out = Path(cfg.report_dir)
    atomic_write_text(out / "table4.csv", df.to_csv(index=False))
    cell = lambda v: "–" if v is None or v != v else str(v)  # noqa: E731 (None / NaN: not measured)
    shown = df.drop(columns="run_id")  # the csv names each row's MLflow run
    md = "\n".join(["| " + " | ".join(shown.columns) + " |", "|---|" + "--:|" * (len(shown.columns) - 1)]
                   + ["| " + " | ".join(cell(v) for v in r) + " |" for r in shown.itertuples(index=False)])  # fmt: skip
    tiles = int(two_stage.get("gen_tiles", 0))
    row = ablation_config(cfg, "two_stage")
    condition = {"semantic": "semantic layout", "rgbd": "RGBD view", "mixed": "semantic layout of a mixed-input model",
                 "none": "no"}[row.model.condition]  # fmt: skip
    atomic_write_text(out / "table4.md", f"StructFM Table 4 on {tiles} {row.preview_split} tiles ({condition} condition), "
                                         f"percent; the paper's numbers (train data, image condition) beside.\n\n{md}\n")  # fmt: skip
    tracking.log_dict({"table4": df.to_dict(orient="records")}, "table4.json")
    return {"rows": df.to_dict(orient="records")}
