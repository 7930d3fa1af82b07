"""TexFM training on the cached texture latents, then a look: textures generated on validation
structures, decoded by the TexVAE and rendered next to the photo and the TexVAE reconstruction."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from earthcrafter import tracking
from earthcrafter.flow import RectifiedFlow
from earthcrafter.flow.latent_stats import latent_inputs
from earthcrafter.io.latents import read_latent_tile
from earthcrafter.models.flow_net import WINDOW_SHIFTS, check_window_shifts
from earthcrafter.models.tex_fm import TexFMConfig, build_texfm, check_layout_stride
from earthcrafter.seeding import randn_per_sample, sample_generators
from earthcrafter.sparse import SparseTensor
from earthcrafter.training.checkpoint import load_export
from earthcrafter.training.config import TrainerConfig
from earthcrafter.training.flow_task import FlowTask, flow_loss_metrics, flow_loss_stats
from earthcrafter.training.structfm import LatentTileDataset, StructFMSampleConfig
from earthcrafter.training.trainer import Trainer
from earthcrafter.training.voxel_data import crop_to_budget

log = logging.getLogger(__name__)


class TexFMDataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    train_split: str = "train"
    val_split: str = "val"
    max_val_tiles: int = Field(0, ge=0, description="validate on this many evenly spaced tiles (0: all)")
    cache_tiles: bool = Field(False, description="keep loaded tiles in memory (small datasets: every loader "
                              "worker holds its own copy of every tile it has read)")  # fmt: skip
    max_voxels: int = Field(250_000, ge=1, description="voxel budget per sample; larger tiles are cropped (paper 250k)")
    root: str | None = None


class TexFMRunConfig(BaseModel):
    """``train_texfm`` parameters."""

    model_config = ConfigDict(extra="forbid")
    name: str = "texfm"
    output_dir: str = "data/06_models/tex_fm"
    texvae_path: str | None = Field("data/06_models/tex_vae/model.pt", description="decodes the preview's latents")
    device: str = "auto"
    mlflow: bool = True
    preview_tiles: int = Field(3, ge=0)
    preview_size: int = Field(128, ge=16, description="rendered view edge in pixels")
    model: TexFMConfig = TexFMConfig()
    data: TexFMDataConfig = TexFMDataConfig()
    sample: StructFMSampleConfig = StructFMSampleConfig()
    trainer: TrainerConfig = TrainerConfig()


class TexFMTask(FlowTask):
    name = "texfm"

    def __init__(self, config: TexFMConfig, data: TexFMDataConfig, inputs: dict | None = None):
        self.config, self.data, self.flow, self.inputs = config, data, RectifiedFlow(), inputs

    def build_model(self) -> nn.Module:
        return build_texfm(self.config)

    def export_config(self) -> dict[str, Any]:
        unet = {"window_shifts": WINDOW_SHIFTS} if self.config.arch == "unet" else {}
        return {"tex_fm": self.config.model_dump(mode="json"), **unet}

    def collate(self, samples: list[dict]) -> dict[str, Any]:
        coords, feats = [], []
        for s in samples:
            keep = torch.from_numpy(crop_to_budget(s["cells"].numpy(), self.data.max_voxels,
                                                   np.random.default_rng(s["seed"])))  # fmt: skip
            coords.append(s["cells"][keep])
            feats.append(s["latents"][keep])
        return {"x0": SparseTensor.from_list(feats, coords), "layout": torch.stack([s["layout"] for s in samples]),
                "seeds": torch.tensor([s["seed"] for s in samples])}  # fmt: skip

    @torch.no_grad()
    def validation_stats(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        x0 = batch["x0"]
        noise = x0.replace(randn_per_sample(x0, sample_generators(batch["seeds"], x0.device)))
        return flow_loss_stats(self.flow, model, x0, self._layout(batch), noise)

    def metrics_from_stats(self, stats: dict[str, torch.Tensor]) -> dict[str, float]:
        return flow_loss_metrics(stats)


def load_texfm(out_dir: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    blob = load_export(Path(out_dir) / "model.pt", "texfm", "train_texfm", "TexFM", map_location)
    cfg = TexFMConfig.model_validate(blob["config"]["tex_fm"])
    check_window_shifts(blob["config"], cfg.arch == "unet", str(Path(out_dir) / "model.pt"))
    net = build_texfm(cfg)
    net.load_state_dict(blob["state_dict"])
    net.inputs = blob.get("inputs") or {}
    return net.eval()


def build_datasets(manifest: pd.DataFrame, stats: dict, cfg: TexFMRunConfig) -> tuple[LatentTileDataset, LatentTileDataset]:
    """Training and validation tiles of the texture latents (what ``train_texfm`` trains on)."""
    d, g = cfg.data, cfg.model.layout_grid
    c = cfg.model.condition
    kw = dict(root=d.root, kind="tex", condition=c, cache=d.cache_tiles)
    return (LatentTileDataset(manifest, stats, d.train_split, g, **kw),
            LatentTileDataset(manifest, stats, d.val_split, g, d.max_val_tiles, **kw))


def train_texfm(manifest: pd.DataFrame, stats: dict, config: TexFMRunConfig | dict) -> dict[str, Any]:
    """Train TexFM; then textures generated on validation structures (``gen_*`` metrics, preview)."""
    cfg = config if isinstance(config, TexFMRunConfig) else TexFMRunConfig.model_validate(config)
    if "tex" not in stats:
        raise ValueError("latents_stats has no 'tex' entry: run cache_latents with a TexVAE (texvae_path)")
    if "tex_path" in manifest.columns and (manifest["tex_path"] == "").any():
        raise ValueError("latent manifest has tiles without texture latents: run cache_latents with a TexVAE")
    train, val = build_datasets(manifest, stats["tex"], cfg)
    first = read_latent_tile(train.rows["tex_path"].iloc[0])
    check_layout_stride(cfg.model, int(first.meta["L"]), "model: ")
    stride = first.stride
    if stride != 1:
        raise ValueError(f"TexFM generates a latent per voxel; the cached texture latents have stride {stride} "
                         f"(a unet2 TexVAE): cache them with a tube TexVAE")  # fmt: skip
    log.info("TexFM: %d training / %d validation tiles", len(train), len(val))
    task = TexFMTask(cfg.model, cfg.data, latent_inputs(stats, "tex"))
    trainer = Trainer(task, cfg.trainer, train, val, out_dir=cfg.output_dir, run_name=cfg.name,
                      tags={"model": "texfm"}, params=cfg.model_dump(mode="json"), device=cfg.device,
                      mlflow=cfg.mlflow)  # fmt: skip
    metrics: dict[str, Any] = {k: v for k, v in trainer.fit().items() if isinstance(v, (int, float))}
    metrics.update(train_tiles=len(train), val_tiles=len(val), run_id=trainer.run_id or "")
    if cfg.preview_tiles and cfg.texvae_path and tracking.is_main_process():  # under torchrun: rank 0's files
        from earthcrafter.training.texfm_preview import texture_preview

        metrics.update(texture_preview(load_texfm(cfg.output_dir), val, stats["tex"], cfg))
    return metrics
