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


CONDITION_NAMES = {"semantic": "semantic layout", "rgbd": "RGBD view", "mixed": "semantic layout of a mixed-input model",
                   "none": "no"}  # fmt: skip


def table4_caption(rows: dict[str, dict]) -> str:
    """What Table 4's generated structures were measured on, read from the rows' own metrics (a row
    may come from an earlier run than the current configuration): one phrase when the rows agree,
    the rows that differ named otherwise."""
    def measured_on(m: dict) -> str:
        if "gen_split" not in m:
            return f"{int(m.get('gen_tiles', 0))} tiles (split and condition not recorded)"
        condition = CONDITION_NAMES.get(m["gen_condition"], m["gen_condition"])
        return f"{int(m.get('gen_tiles', 0))} {m['gen_split']} tiles ({condition} condition)"

    phrases = {label: measured_on(m) for label, m in rows.items()}
    if len(set(phrases.values())) == 1:
        return f"StructFM Table 4 on {next(iter(phrases.values()))}, percent"
    return "StructFM Table 4, percent; the rows were measured on different sets: " + "; ".join(
        f"{label} on {phrase}" for label, phrase in phrases.items())


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
    rows = {"LatentSFM": two_stage, "DenseSFM": dense, **extra}
    atomic_write_text(out / "table4.md", f"{table4_caption(rows)}; the paper's numbers (train data, image condition) "
                                         f"beside.\n\n{md}\n")  # fmt: skip
    tracking.log_dict({"table4": df.to_dict(orient="records")}, "table4.json")
    return {"rows": df.to_dict(orient="records")}
