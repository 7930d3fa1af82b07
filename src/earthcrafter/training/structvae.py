"""StructVAE training: the task for the shared trainer, run configuration, Table 3 ablations.

``train_structvae(manifest, config)`` trains one configuration on the voxel tiles of a
manifest and returns its final validation metrics; ``ablation_configs(config)`` expands
the named Table 3 rows (xcube, naive_upsample, pixshuffle, cblock, fullattn) into full
configurations that share data and budget.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from torch import nn

from earthcrafter.evaluation import voxel_metrics as vm
from earthcrafter.evaluation.reports import occupancy_figure
from earthcrafter.io.atomic import atomic_path
from earthcrafter.models.struct_vae import StructVAE, StructVAEConfig, struct_vae_loss
from earthcrafter.sparse import SparseTensor
from earthcrafter.training.checkpoint import load_export
from earthcrafter.training.config import TrainerConfig
from earthcrafter.training.distributed import DEVICE_PATTERN
from earthcrafter.training.task import Task
from earthcrafter.training.trainer import Trainer
from earthcrafter.training.voxel_data import VoxelDataConfig, VoxelSample, VoxelTileDataset

log = logging.getLogger(__name__)

LEVEL_STRIDES = (4, 2, 1)


class StructVAERunConfig(BaseModel):
    """Everything one StructVAE training needs (``train_structvae:`` in the parameters).

    ``ablations`` maps a Table 3 row name to overrides deep-merged onto this
    configuration (minus ``ablations``); every row is validated at load.
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field("structvae/main", description="MLflow run name")
    ablation: str = Field("main", description="value of the run's `ablation` tag")
    table: str = Field("", description="value of the run's `table` tag ('3' for Table 3 rows)")
    output_dir: str = Field("data/06_models/structvae", description="checkpoints, model.pt, figures")
    report_dir: str = Field("data/08_reporting/train_structvae", description="Table 3 csv / md")
    device: str = Field("auto", pattern=DEVICE_PATTERN, description="auto, cpu, cuda (cuda:LOCAL_RANK) or cuda:N")
    threshold: float = Field(0.0, description="decoder keep threshold on logits at validation")
    mlflow: bool = True
    model: StructVAEConfig = Field(default_factory=StructVAEConfig)
    data: VoxelDataConfig = Field(default_factory=VoxelDataConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    ablations: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any) -> Any:
        if isinstance(data, dict) and "accum_steps" in data:
            raise ValueError("accum_steps is a trainer setting now: set train_structvae.trainer.accum_steps")
        return data

    @model_validator(mode="after")
    def _check_rows(self) -> StructVAERunConfig:
        for row in self.ablations:
            ablation_config(self, row)  # raises naming ablations.<row>.<key>
        return self


def _deep_merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in override.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def ablation_config(config: StructVAERunConfig, row: str) -> StructVAERunConfig:
    """The full configuration of Table 3 row ``row``: base + overrides, own run name,
    tags ``ablation=row, table=3`` and output folder ``<output_dir>/ablations/<row>``."""
    if row not in config.ablations:
        raise KeyError(f"train_structvae.ablations has no row {row!r}; rows: {sorted(config.ablations)}")
    base = config.model_dump(mode="json", exclude={"ablations"})
    defaults = {"name": f"structvae/{row}", "ablation": row, "table": "3",
                "output_dir": str(Path(config.output_dir) / "ablations" / row)}
    merged = _deep_merge({**base, **defaults}, config.ablations[row])
    try:
        return StructVAERunConfig.model_validate(merged)
    except ValidationError as e:
        lines = [f"  ablations.{row}.{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()]
        raise ValueError("invalid Table 3 row:\n" + "\n".join(lines)) from None


def ablation_configs(config: StructVAERunConfig) -> dict[str, StructVAERunConfig]:
    return {row: ablation_config(config, row) for row in config.ablations}


def read_tile_occupancy(path: str) -> SimpleNamespace:
    """Occupancy-only tile reader (coords + meta; skips the 66-d features)."""
    from earthcrafter.io.tiles import read_tile_coords

    coords, meta = read_tile_coords(path)
    return SimpleNamespace(tile_id=meta.get("tile_id", Path(path).stem), coords=coords, meta=meta)


def level_counts(levels: list, gt_coords: torch.Tensor, batch_size: int) -> dict[str, torch.Tensor]:
    """Summed counts of free-running decoder ``levels`` against the ground truth ``gt_coords``
    [N, 4] at L: ``correct``/``candidates`` (Acc) and ``tp``/``fp``/``fn`` per level, keyed
    ``<count>_s<stride>``; they add up over batches and ranks."""
    stats = {}
    for lvl in levels:
        gt = vm.coarsen(gt_coords, lvl.stride)
        counts = {**vm.candidate_accuracy(lvl.candidates, lvl.keep, gt, batch_size),
                  **vm.confusion(lvl.candidates[lvl.keep], gt, batch_size)}  # fmt: skip
        for k, v in counts.items():
            stats[f"{k}_s{lvl.stride}"] = v.sum()
    return stats


def level_metrics(stats: dict[str, torch.Tensor]) -> dict[str, float]:
    """Counts of :func:`level_counts` -> acc, iou, precision, recall at L (no suffix) and
    ``<name>_s2``, ``<name>_s4`` at the coarser levels."""
    out: dict[str, float] = {}
    for s in LEVEL_STRIDES:
        level = {k[: -len(f"_s{s}")]: v for k, v in stats.items() if k.endswith(f"_s{s}")}
        for name, value in vm.ratios(level).items():
            out[name if s == 1 else f"{name}_s{s}"] = value
    return out


class StructVAETask(Task):
    """StructVAE for the shared trainer: batches are ``{"voxels", "seeds", "tile_ids"}``."""

    name = "structvae"

    def __init__(self, model_config: StructVAEConfig, threshold: float = 0.0):
        self.model_config, self.threshold = model_config, threshold

    def build_model(self) -> nn.Module:
        return StructVAE(self.model_config)

    def collate(self, samples: list[VoxelSample]) -> dict[str, Any]:
        coords = [s.coords for s in samples]
        voxels = SparseTensor.from_list([torch.ones(len(c), 1) for c in coords], coords, stride=1)
        return {"voxels": voxels, "seeds": torch.tensor([s.seed for s in samples], dtype=torch.int64),
                "tile_ids": [s.tile_id for s in samples]}

    def training_step(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        out = model(batch["voxels"], seeds=batch["seeds"])
        return struct_vae_loss(out, self.model_config)

    def count(self, batch: dict) -> dict[str, int]:
        return {"samples": batch["voxels"].batch_size, "voxels": len(batch["voxels"])}

    def validation_stats(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        voxels: SparseTensor = batch["voxels"]
        _, levels = model.reconstruct(voxels, self.threshold)
        return level_counts(levels, voxels.coords, voxels.batch_size)

    def metrics_from_stats(self, stats: dict[str, torch.Tensor]) -> dict[str, float]:
        return level_metrics(stats)

    def figures(self, model: nn.Module, batch: dict) -> dict[str, Any]:
        voxels: SparseTensor = batch["voxels"]
        recon, _ = model.reconstruct(voxels, self.threshold)
        _, gts = voxels.unbind()
        _, preds = recon.unbind()
        figs = {}
        for b, (gt, pred) in enumerate(zip(gts, preds)):
            r = vm.ratios(vm.confusion(recon.coords[recon.batch_idx == b], voxels.coords[voxels.batch_idx == b], voxels.batch_size))
            title = f"{batch['tile_ids'][b]}: IoU {100 * r['iou']:.1f}%, precision {100 * r['precision']:.1f}%, recall {100 * r['recall']:.1f}%"
            figs[f"reconstruction_{b}"] = occupancy_figure(gt.cpu().numpy(), pred.cpu().numpy(), self.model_config.L, title)
        return figs

    def export_config(self) -> dict[str, Any]:
        return {"struct_vae": self.model_config.model_dump(mode="json")}


def save_structvae(model: StructVAE, path: str | Path) -> Path:
    """Export ``model`` in the trainer's ``model.pt`` format (config + weights), atomically."""
    path = Path(path)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"model": "structvae", "config": {"struct_vae": model.config.model_dump(mode="json")},
                    "state_dict": state}, tmp)  # fmt: skip
    return path


def load_structvae(path: str | Path, map_location: str | torch.device = "cpu") -> StructVAE:
    """Rebuild a StructVAE from an exported ``model.pt`` (EMA weights + config)."""
    blob = load_export(path, "structvae", "train_structvae", "StructVAE export", map_location)
    model = StructVAE(StructVAEConfig.model_validate(blob["config"]["struct_vae"]))
    model.load_state_dict(blob["state_dict"])
    return model.eval()


def build_datasets(
    manifest: pd.DataFrame, config: StructVAERunConfig, read_tile=read_tile_occupancy
) -> tuple[VoxelTileDataset, VoxelTileDataset]:
    """Train (augmented) and validation datasets; fails at once on a bad manifest."""
    L, data = config.model.L, config.data
    train = VoxelTileDataset(manifest, read_tile, split=data.train_split, L=L, config=data, augment=True)
    val = VoxelTileDataset(manifest, read_tile, split=data.val_split, L=L, config=data, augment=False)
    return train, val


def train_structvae(
    manifest: pd.DataFrame, config: StructVAERunConfig | dict, read_tile=read_tile_occupancy, stop_after: int | None = None
) -> dict[str, float | str]:
    """Train one StructVAE configuration; returns the final validation metrics (EMA weights),
    plus ``name``, ``ablation`` and ``run_id`` (the MLflow run, when tracking)."""
    if not isinstance(config, StructVAERunConfig):
        config = StructVAERunConfig.model_validate(config)
    train, val = build_datasets(manifest, config, read_tile)
    log.info("%s: %d training / %d validation tiles", config.name, len(train), len(val))
    task = StructVAETask(config.model, config.threshold)
    trainer = Trainer(
        task, config.trainer, train, val, out_dir=config.output_dir, run_name=config.name,
        tags={"model": "structvae", "ablation": config.ablation, "table": config.table or "none"},
        params=config.model_dump(mode="json", exclude={"ablations"}), device=config.device,
        mlflow=config.mlflow,
    )
    metrics: dict[str, Any] = dict(trainer.fit(stop_after=stop_after))
    metrics.update(name=config.name, ablation=config.ablation, run_id=trainer.run_id or "")
    return metrics
