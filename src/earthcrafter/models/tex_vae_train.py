"""Training TexVAE runs and the Table 2 ablation sweep (library side of ``train_texvae``).

- :class:`TexVAETrainConfig` is the ``train_texvae:`` parameter section.
- :func:`train_texvae` trains one configuration with the shared
  :class:`~earthcrafter.training.trainer.Trainer` (one MLflow run, nested under the active one,
  tagged ``model=texvae, table=2, ablation=<row>``).
- :func:`run_table2` trains every row of Table 2 (or logs why a row is skipped) and
  :func:`table2` / :func:`table2_markdown` build the table from the MLflow runs.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from earthcrafter import tracking
from earthcrafter.models.tex_vae import TexVAE, TexVAEConfig, feature_groups
from earthcrafter.models.tex_vae_data import TexVAEDataConfig, TexVAEDataset
from earthcrafter.models.tex_vae_losses import LpipsPair
from earthcrafter.models.tex_vae_task import RenderConfig, TexVAELossConfig, TexVAETask
from earthcrafter.training.config import TrainerConfig
from earthcrafter.training.distributed import DEVICE_PATTERN
from earthcrafter.training.trainer import Trainer
from earthcrafter.training.tracking import training_run

log = logging.getLogger(__name__)

TABLE2_TAGS = {"model": "texvae", "table": "2"}
_RUN_FACTS = ("train_time_s", "num_params", "steps")  # trainer facts among the final metrics


class Table2Row(BaseModel):
    """One ablation row: overrides of the base configuration and the paper's numbers."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    model: dict[str, Any] = Field(default_factory=dict, description="overrides of train_texvae.model")
    data: dict[str, Any] = Field(default_factory=dict, description="overrides of train_texvae.data")
    manifest: str | None = Field(None, description="another voxel manifest (e.g. tiles with DINOv2 features)")
    paper_feat: str = ""
    paper_L: int | None = None
    paper_channels: int | None = None
    paper_net: str = ""
    paper_psnr: float | None = None
    paper_l1: float | None = None


def _row(desc, model, data, feat, L, ch, net, psnr, l1) -> Table2Row:
    return Table2Row(description=desc, model=model, data=data, paper_feat=feat, paper_L=L, paper_channels=ch,
                     paper_net=net, paper_psnr=psnr, paper_l1=l1)  # fmt: skip


# Table 2 of the paper. TexB's coarser L is the base tiles pooled by 2 (see tex_vae_data).
TABLE2_ROWS: dict[str, Table2Row] = {
    "TexA": _row("DINOv2 features, coarse L", {"features": "dinov2"}, {"pool": 2}, "DinoSmall", 200, 768, "Tube", 17.76, 0.069),
    "TexB": _row("f0, coarse L", {"features": "f0"}, {"pool": 2}, "f0", 200, 16, "Tube", 17.36, 0.070),
    "TexC": _row("f0", {"features": "f0"}, {}, "f0", 360, 16, "Tube", 18.90, 0.061),
    "TexD": _row("f0, f1, f2", {"features": "f0_f1_f2"}, {}, "f0, f1, f2", 360, 48, "Tube", 19.20, 0.058),
    "TexE": _row("f_feat (default)", {"features": "f_feat"}, {}, "f_feat", 360, 66, "Tube", 19.49, 0.056),
    "TexF": _row("f_feat, two-level U-Net", {"features": "f_feat", "arch": "unet2"}, {}, "f_feat", 360, 66, "UNet-2", 16.22, 0.098),
}


class AblationConfig(BaseModel):
    """The Table 2 sweep (``train_texvae.ablations``)."""

    model_config = ConfigDict(extra="forbid")

    rows: dict[str, Table2Row] = Field(default_factory=lambda: copy.deepcopy(TABLE2_ROWS))
    trainer: dict[str, Any] = Field(default_factory=dict, description="trainer overrides applied to every row")
    out_dir: str = "data/06_models/tex_vae_ablations"


class TexVAETrainConfig(BaseModel):
    """The ``train_texvae:`` parameter section."""

    model_config = ConfigDict(extra="forbid")

    model: TexVAEConfig = TexVAEConfig()
    loss: TexVAELossConfig = TexVAELossConfig()
    data: TexVAEDataConfig = TexVAEDataConfig()
    render: RenderConfig = RenderConfig()
    trainer: TrainerConfig = TrainerConfig()
    device: str = Field("auto", pattern=DEVICE_PATTERN, description="auto, cpu, cuda (cuda:LOCAL_RANK) or cuda:N")
    threads: int | None = Field(
        None, ge=1, description="torch intra-op CPU threads during the run (None: torch's default)"
    )
    row: str = Field("TexE", description="Table 2 row the main run represents (its MLflow tag)")
    out_dir: str = Field("data/06_models/tex_vae/run", description="checkpoints, figures, metrics of the main run")
    target_psnr: float = Field(20.0, description="validation PSNR the main run is expected to reach (reported)")
    ablations: AblationConfig = AblationConfig()

    @model_validator(mode="after")
    def _rows_valid(self) -> TexVAETrainConfig:
        for name in self.ablations.rows:
            row_config(self, name)  # raises naming the row and key
        return self


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def row_config(cfg: TexVAETrainConfig, name: str) -> TexVAETrainConfig:
    """The base configuration with row ``name``'s model / data overrides and the sweep's trainer overrides."""
    if name not in cfg.ablations.rows:
        raise KeyError(f"Table 2 row {name!r} is not configured; rows: {list(cfg.ablations.rows)}")
    row = cfg.ablations.rows[name]
    try:
        return cfg.model_copy(
            update={
                "model": TexVAEConfig.model_validate(_merge(cfg.model.model_dump(), row.model)),
                "data": TexVAEDataConfig.model_validate(_merge(cfg.data.model_dump(), row.data)),
                "trainer": TrainerConfig.model_validate(_merge(cfg.trainer.model_dump(), cfg.ablations.trainer)),
                "row": name,
                "out_dir": str(Path(cfg.ablations.out_dir) / name),
            }
        )
    except ValidationError as e:
        section = e.title.removeprefix("TexVAE").removesuffix("Config").lower() or "model"
        problems = "; ".join(
            f"train_texvae.ablations.rows.{name}.{section}.{'.'.join(map(str, err['loc']))}: {err['msg']}"
            for err in e.errors()
        )
        raise ValueError(problems) from None


# --------------------------------------------------------------------------- one run

def build_datasets(cfg: TexVAETrainConfig, manifest: pd.DataFrame) -> tuple[TexVAEDataset, TexVAEDataset]:
    """Training (augmented) and validation tiles with their views (what ``train_texvae`` trains on)."""
    common = dict(features=cfg.model.features, config=cfg.data)
    train = TexVAEDataset(manifest, split=cfg.data.train_split, augment=True, **common)
    val = TexVAEDataset(manifest, split=cfg.data.val_split, augment=False, **common)
    return train, val


def texvae_task(cfg: TexVAETrainConfig, in_channels: int) -> TexVAETask:
    """The training task of ``cfg``, with LPIPS when its weights are on disk (else without, said so)."""
    lpips = LpipsPair.load(cfg.loss.lpips_vgg > 0, cfg.loss.lpips_alex > 0, cfg.loss.lpips_weights_dir)
    if not lpips.available:
        log.warning("TexVAE: training without LPIPS (%s)", lpips.status)
    return TexVAETask(cfg.model, in_channels, cfg.loss, cfg.render, lpips)


def train_texvae(
    cfg: TexVAETrainConfig,
    manifest: pd.DataFrame,
    *,
    out_dir: str | Path | None = None,
    run_name: str | None = None,
    mlflow: bool = True,
    table: str = "none",
) -> tuple[TexVAE, dict[str, Any]]:
    """Train one TexVAE; return the EMA model and a summary (validation metrics, run facts).

    The run is tagged ``model=texvae, table=<table>, ablation=<cfg.row>`` (``table=2`` for the
    Table 2 sweep's rows, ``none`` for the stage's main training) plus ``lpips`` (enabled backbones
    or ``disabled: <reason>``), ``features``, ``arch`` and the grid ``L``.
    """
    train_set, val_set = build_datasets(cfg, manifest)
    in_channels = train_set.layout_channels()
    L, voxel_size = train_set.grid()
    task = texvae_task(cfg, in_channels)
    lpips = task.lpips
    if cfg.loss.require_lpips and (cfg.loss.lpips_vgg > 0 or cfg.loss.lpips_alex > 0) and not lpips.available:
        raise RuntimeError(
            f"train_texvae.loss.require_lpips: LPIPS is weighted (vgg {cfg.loss.lpips_vgg}, alex {cfg.loss.lpips_alex}) "
            f"but {lpips.status}. Install it (pip install -e '.[lpips]') and put its backbones in "
            f"loss.lpips_weights_dir, or set the LPIPS weights to 0, or require_lpips: false"
        )
    name = run_name or f"texvae/{cfg.row}"
    tags = {"model": "texvae", "table": table, "ablation": cfg.row, "lpips": lpips.status, "features": cfg.model.features,
            "arch": cfg.model.arch, "L": L, "pool": cfg.data.pool}  # fmt: skip
    trainer = Trainer(
        task, cfg.trainer, train_set, val_set, out_dir=out_dir or cfg.out_dir, run_name=name, tags=tags,
        params=cfg.model_dump(mode="json", exclude={"ablations"}), device=cfg.device, mlflow=mlflow,
    )  # fmt: skip
    old_threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        metrics = trainer.fit()
    finally:
        torch.set_num_threads(old_threads)
    run_id = trainer.run_id if mlflow else None
    summary = {
        "row": cfg.row, "run_id": run_id, "lpips": lpips.status, "features": cfg.model.features,
        "arch": cfg.model.arch, "L": L, "voxel_size_m": voxel_size, "in_channels": in_channels,
        "train_tiles": len(train_set), "val_tiles": len(val_set),
        **{(k if k in _RUN_FACTS else f"val_{k}"): v for k, v in metrics.items()},
    }  # fmt: skip
    return trainer.ema.model, summary


# --------------------------------------------------------------------------- Table 2

def _skip_reason(cfg: TexVAETrainConfig, manifest: pd.DataFrame) -> str | None:
    """Why a row cannot run on ``manifest`` (features absent from the tiles), or None."""
    train_set = TexVAEDataset(manifest, split=cfg.data.train_split, features=cfg.model.features, config=cfg.data)
    tile = train_set.read_tile_fn(train_set.rows.at[0, "path"])
    try:
        feature_groups(cfg.model.features, tile.layout)
    except ValueError as e:
        hint = ""
        if cfg.model.features == "dinov2":
            hint = (" — voxelize with the dinov2 extractor (needs local DINOv2 weights) and point "
                    "train_texvae.ablations.rows.TexA.manifest at that manifest")  # fmt: skip
        return f"{e}{hint}"
    return None


def log_skipped_row(name: str, reason: str, mlflow: bool = True) -> str | None:
    """A FINISHED MLflow run tagged ``status=skipped`` with the reason, so the table shows it."""
    log.warning("Table 2 row %s skipped: %s", name, reason)
    tags = {**TABLE2_TAGS, "ablation": name, "status": "skipped", "skip_reason": reason[:5000]}
    with training_run(f"texvae/{name}", tags, enabled=mlflow and tracking.is_main_process()) as run_id:
        return run_id


def run_table2(
    cfg: TexVAETrainConfig, manifest: pd.DataFrame, *, rows: list[str] | None = None, mlflow: bool = True
) -> dict[str, dict[str, Any]]:
    """Train each Table 2 row (all by default); returns ``{row: summary}`` (skipped rows say why)."""
    results: dict[str, dict[str, Any]] = {}
    for name in rows or list(cfg.ablations.rows):
        rc = row_config(cfg, name)
        spec = cfg.ablations.rows[name]
        man = pd.read_parquet(spec.manifest) if spec.manifest else manifest
        reason = _skip_reason(rc, man)
        if reason is not None:
            results[name] = {"row": name, "status": "skipped", "reason": reason, "run_id": log_skipped_row(name, reason, mlflow)}
            continue
        log.info("Table 2 row %s: %s", name, spec.description)
        _, summary = train_texvae(rc, man, mlflow=mlflow, table=TABLE2_TAGS["table"])
        results[name] = {"status": "finished", **summary}
    return results


def find_table2_runs(run_ids: list[str] | None = None) -> pd.DataFrame:
    """MLflow runs tagged ``model=texvae, table=2`` (all experiments), newest first; only ``run_ids`` if given."""
    import mlflow

    flt = " and ".join(f"tags.{k} = '{v}'" for k, v in TABLE2_TAGS.items())
    runs = mlflow.search_runs(filter_string=flt, search_all_experiments=True, order_by=["attributes.start_time DESC"])
    if run_ids is not None and len(runs):
        runs = runs[runs["run_id"].isin([r for r in run_ids if r])]
    return runs.reset_index(drop=True)


def runs_from_results(results: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """:func:`run_table2` summaries in the column layout of ``mlflow.search_runs`` (no tracking server)."""
    rows = []
    for name, r in results.items():
        row = {"run_id": r.get("run_id") or "", "tags.ablation": name, "status": r.get("status", "").upper()}
        if r.get("status") == "skipped":
            row.update({"tags.status": "skipped", "tags.skip_reason": r.get("reason", "")})
        else:
            row.update({"tags.L": r.get("L"), "tags.lpips": r.get("lpips", ""),
                        "metrics.final/train_time_s": r.get("train_time_s"),
                        **{f"metrics.final/{k}": r.get(f"val_{k}") for k in ("psnr", "l1", "ssim")}})  # fmt: skip
        rows.append(row)
    return pd.DataFrame(rows)


def _get(r: pd.Series, key: str, default=np.nan):
    v = r.get(key, default)
    return default if v is None or (isinstance(v, float) and np.isnan(v)) else v


def table2(runs: pd.DataFrame, rows: dict[str, Table2Row] | None = None) -> pd.DataFrame:
    """One line per row (paper order) from the newest run of each: ours beside the paper's numbers."""
    rows = rows or TABLE2_ROWS
    out = []
    for name, spec in rows.items():
        mine = runs[runs["tags.ablation"] == name] if len(runs) and "tags.ablation" in runs else runs.iloc[0:0]
        line = {"row": name, "feat": spec.paper_feat, "net": spec.paper_net, "paper_L": spec.paper_L,
                "paper_channels": spec.paper_channels, "paper_psnr": spec.paper_psnr, "paper_l1": spec.paper_l1}  # fmt: skip
        if not len(mine):
            out.append({**line, "status": "missing"})
            continue
        r = mine.iloc[0]
        if _get(r, "tags.status", "") == "skipped":
            out.append({**line, "status": "skipped: " + str(_get(r, "tags.skip_reason", "")), "run_id": r["run_id"]})
            continue
        out.append({
            **line, "status": str(_get(r, "status", "")).lower() or "finished",
            "L": _get(r, "tags.L"), "psnr": _get(r, "metrics.final/psnr"), "l1": _get(r, "metrics.final/l1"),
            "ssim": _get(r, "metrics.final/ssim"), "train_time_s": _get(r, "metrics.final/train_time_s"),
            "lpips": _get(r, "tags.lpips", ""), "run_id": r["run_id"],
        })  # fmt: skip
    return pd.DataFrame(out)


def table2_orderings(df: pd.DataFrame) -> dict[str, bool | None]:
    """The paper's conclusions, checked on our numbers (None when a row is missing)."""
    psnr = {r["row"]: r.get("psnr") for _, r in df.iterrows()}
    ok = lambda v: v is not None and not (isinstance(v, float) and np.isnan(v))  # noqa: E731

    def gt(a: str, b: str) -> bool | None:
        return bool(psnr[a] > psnr[b]) if ok(psnr.get(a)) and ok(psnr.get(b)) else None

    more = [gt("TexD", "TexC"), gt("TexE", "TexD")]
    return {
        "finer L beats coarser (TexC > TexB)": gt("TexC", "TexB"),
        "more channels at the same L (TexA > TexB)": gt("TexA", "TexB"),
        "more feature groups help (TexE > TexD > TexC)": None if None in more else all(more),
        "spatial compression hurts (TexE > TexF)": gt("TexE", "TexF"),
    }


def table2_markdown(df: pd.DataFrame, caption: str = "") -> str:
    fmt = lambda v, f: "–" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, f)  # noqa: E731
    lines = [
        "| ID | FeatType | Net | L (ours) | PSNR ↑ | L1 ↓ | SSIM ↑ | paper L | paper PSNR | paper L1 | status |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for _, r in df.iterrows():
        L = r.get("L")
        lines.append(
            f"| {r['row']} | {r['feat']} | {r['net']} | {'–' if L is None or L != L else int(float(L))} "
            f"| {fmt(r.get('psnr'), '.2f')} | {fmt(r.get('l1'), '.4f')} | {fmt(r.get('ssim'), '.3f')} "
            f"| {fmt(r.get('paper_L'), 'd')} | {fmt(r.get('paper_psnr'), '.2f')} | {fmt(r.get('paper_l1'), '.3f')} "
            f"| {r.get('status', '')} |"
        )
    checks = table2_orderings(df)
    lines += ["", "Paper orderings on these numbers:", ""]
    lines += [f"- {k}: {'yes' if v else 'no' if v is not None else 'n/a'}" for k, v in checks.items()]
    text = "\n".join(lines) + "\n"
    return (caption.strip() + "\n\n" + text) if caption else text
