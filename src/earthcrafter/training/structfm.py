"""StructFM training on the cached latents: the coarse stage, then the fine stage, then a look.

Each stage is one :class:`~earthcrafter.training.trainer.Trainer` run (nested MLflow runs
``structfm/coarse`` and ``structfm/fine``) of a :class:`StructFMTask`. Samples come from
``latents_manifest`` (the ``cache_latents`` stage): the tile's occupied L/8 cells, their
normalised structure latents (``latents_stats.json``) and the semantic layout of the voxel tile.
Latents are not flipped or cropped: a latent encodes its cell's geometry in one orientation.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.utils.data import Dataset

from earthcrafter import tracking
from earthcrafter.evaluation import voxel_metrics as vm
from earthcrafter.flow import RectifiedFlow, euler_sample, guidance
from earthcrafter.flow.latent_stats import latent_inputs, normalize
from earthcrafter.io.latents import read_conditions, read_latent_tile
from earthcrafter.io.tiles import read_tile, read_views, tile_views_path
from earthcrafter.models.flow_net import VIEW_CONDITIONS, WINDOW_SHIFTS, check_window_shifts
from earthcrafter.models.struct_fm import (
    StructFM,
    StructFMConfig,
    full_grid,
    keep_cells,
    patchify_grid,
    stage_net,
    unpatchify_grid,
)
from earthcrafter.seeding import draw_seed, randn_per_sample, sample_generators
from earthcrafter.sparse import SparseTensor
from earthcrafter.training.checkpoint import load_export
from earthcrafter.training.conditions import RASTERS_VERSION, join_condition, tile_rasters
from earthcrafter.training.config import TrainerConfig
from earthcrafter.training.flow_task import FlowTask, flow_loss_metrics, flow_loss_stats
from earthcrafter.training.sampler import Draw
from earthcrafter.training.trainer import Trainer
from earthcrafter.training.voxel_data import check_manifest, evenly_spaced, rows_fingerprint

log = logging.getLogger(__name__)


class StructFMDataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    train_split: str = "train"
    val_split: str = "val"
    max_val_tiles: int = Field(0, ge=0, description="validate on this many evenly spaced tiles (0: all)")
    cache_tiles: bool = Field(False, description="keep loaded tiles in memory (small datasets: every loader "
                              "worker holds its own copy of every tile it has read)")  # fmt: skip
    dilation: float = Field(0.3, ge=0, le=1, description="fine stage: chance that an empty face-neighbour cell of "
                            "an occupied one joins the input, with target 0 (voxel dilation augmentation)")  # fmt: skip
    root: str | None = Field(None, description="folder that relative manifest paths start from (default: cwd)")


class StructFMSampleConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    steps: int = Field(25, ge=1, description="Euler steps (paper: 25)")
    cfg_strength: float = Field(3.0, ge=0, description="classifier-free guidance (paper: 3)")


class StructFMRunConfig(BaseModel):
    """``train_structfm`` parameters."""

    model_config = ConfigDict(extra="forbid")
    name: str = "structfm"
    output_dir: str = "data/06_models/struct_fm"
    structvae_path: str | None = Field("data/06_models/structvae/model.pt",
                                       description="decodes generated latents for the preview and gen_* metrics")  # fmt: skip
    device: str = "auto"
    mlflow: bool = True
    preview_tiles: int = Field(4, ge=0, description="validation layouts generated and decoded at the end (0: none)")
    preview_split: Literal["val", "train"] = Field("val", description="the split whose tiles' conditions the "
                                                   "preview and gen_* metrics generate from (the paper's Table 4: train)")
    variant: Literal["two_stage", "dense"] = Field("two_stage", description="the paper's coarse + fine stages, or "
                                                   "Table 4's one-stage DenseSFM (trained with the `fine` trainer settings)")  # fmt: skip
    report_dir: str = "data/08_reporting/train_structfm"
    ablations: dict[str, dict[str, Any]] = Field(default_factory=dict, description="Table 4 rows: overrides of "
                                                 "this configuration, one run each (structfm_ablations)")  # fmt: skip
    model: StructFMConfig = StructFMConfig()
    data: StructFMDataConfig = StructFMDataConfig()
    sample: StructFMSampleConfig = StructFMSampleConfig()
    coarse: TrainerConfig = TrainerConfig()
    fine: TrainerConfig = TrainerConfig()


# --------------------------------------------------------------------------- data

class LatentTileDataset(Dataset):
    """One split of the latent manifest: ``{"tile_id", "cells", "latents", "layout", "semantic", "seed"}``
    — the ``kind`` latents ("struct": L/8 cells, "tex": the tile's voxels) normalised with ``stats``,
    their coords, the tile's ``condition`` raster on a ``grid`` x ``grid`` raster (L/8; the semantic
    layout for "none") and its semantic layout (for figures)."""

    def __init__(
        self, manifest: pd.DataFrame, stats: dict, split: str, grid: int, max_tiles: int = 0, root: str | None = None,
        kind: str = "struct", condition: str = "semantic", cache: bool = False,
    ):
        self.path_column = f"{kind}_path"
        rows = check_manifest(manifest, split, root, (self.path_column, "tile_path"), "latent manifest",
                              optional_path_columns=("cond_path",))
        if 0 < max_tiles < len(rows):
            rows = rows.iloc[evenly_spaced(len(rows), max_tiles)].reset_index(drop=True)
        self.rows, self.stats, self.grid, self.kind, self.condition = rows, stats, grid, kind, condition
        # Off at paper scale: 447k tiles of latents and condition rasters do not fit in a worker's memory.
        self.cache = cache
        self._cache: dict[int, dict] = {}
        self._warned_stale = False

    def fingerprint(self) -> str:
        return rows_fingerprint(self.rows, (self.path_column, "tile_path"))

    def __len__(self) -> int:
        return len(self.rows)

    def _load(self, i: int) -> dict:
        if i in self._cache:
            return self._cache[i]
        r = self.rows.iloc[i]
        lt = read_latent_tile(r[self.path_column], logvar=False)  # the flows learn the posterior mean
        L = lt.meta["L"]
        if not (lt.stride * self.grid == L if self.kind == "struct" else L % self.grid == 0):
            raise ValueError(f"{r[self.path_column]}: L={lt.meta['L']} / stride {lt.stride} does not match the "
                             f"model's grid {self.grid}")  # fmt: skip
        z = normalize(torch.from_numpy(lt.mean), self.stats)
        rasters = self._rasters(r)
        cond = join_condition(self.condition, rasters, lt.tile_id)
        sample = {"tile_id": lt.tile_id, "cells": torch.from_numpy(lt.coords).long(), "latents": z,
                  "layout": torch.from_numpy(cond), "semantic": torch.from_numpy(rasters["semantic"])}  # fmt: skip
        if self.cache:
            self._cache[i] = sample
        return sample

    def _rasters(self, r: pd.Series) -> dict[str, np.ndarray]:
        """The tile's condition rasters: those ``cache_latents`` stored when they fit this dataset (grid,
        raster version, a view where the condition needs one), else computed from the tile and its views."""
        path = r.get("cond_path")
        needs_view = self.condition in VIEW_CONDITIONS
        if isinstance(path, str) and path:
            try:
                grid, version, rasters, _ = read_conditions(path)
                problem = None
            except (OSError, ValueError) as e:  # missing or unreadable: the tile itself still serves
                grid, version, rasters, problem = -1, -1, {}, str(e)
            if grid == self.grid and version == RASTERS_VERSION and ("rgbd" in rasters or not needs_view):
                return rasters
            if not self._warned_stale:
                why = problem or (f"grid {grid} / version {version}{'' if 'rgbd' in rasters else ', no view'}; "
                                  f"this dataset needs grid {self.grid} / version {RASTERS_VERSION}"
                                  f"{', a view' if needs_view else ''}")  # fmt: skip
                log.warning("%s: stored condition rasters not used (%s); computing them from the tiles. "
                            "cache_latents stores them on the L/8 grid, from the tiles' views where they have "
                            "them.", path, why)  # fmt: skip
                self._warned_stale = True
        tile = read_tile(r["tile_path"], features=False)  # the conditions need the voxels' classes only
        views = read_views(tile_views_path(r["tile_path"], r["tile_id"])) if needs_view else None
        return tile_rasters(tile, views, self.grid)

    def __getitem__(self, item: int | Draw) -> dict:
        index, seed = (item.index, item.seed) if isinstance(item, Draw) else (int(item), (0, int(item)))
        return {**self._load(index), "seed": draw_seed(seed)}


# --------------------------------------------------------------------------- task

def dilate(cells: torch.Tensor, grid: int, p: float, rng: np.random.Generator) -> torch.Tensor:
    """Empty face-neighbours [K, 3] of ``cells`` inside the grid, each kept with probability ``p``."""
    if p == 0 or len(cells) == 0:
        return cells.new_zeros((0, 3))
    steps = torch.tensor([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]])
    nb = (cells[:, None] + steps[None]).reshape(-1, 3)
    nb = nb[((nb >= 0) & (nb < grid)).all(1)]
    key = lambda c: (c[:, 0] * grid + c[:, 1]) * grid + c[:, 2]  # noqa: E731
    # unique over 1-D keys (10-17x faster than over rows); sorted keys are the rows in (x, y, z) order
    keys = torch.unique(key(nb))
    keys = keys[~torch.isin(keys, key(cells))]
    nb = torch.stack([keys // (grid * grid), keys // grid % grid, keys % grid], 1)
    return nb[torch.from_numpy(rng.random(len(nb)) < p)]


class StructFMTask(FlowTask):
    """One StructFM stage for the shared trainer: ``coarse`` (occupancy on the full grid), ``fine``
    (latents on the cells + a dilation ring) or ``dense`` (Table 4's one-stage DenseSFM: latents on
    the full grid, 0 on empty cells, cells decided by the fine stage's keep rule)."""

    name = "structfm"

    def __init__(self, stage: str, config: StructFMConfig, data: StructFMDataConfig, sample: StructFMSampleConfig,
                 inputs: dict | None = None):
        if stage not in ("coarse", "fine", "dense"):
            raise ValueError(f"StructFM stage must be coarse, fine or dense, got {stage!r}")
        self.stage, self.config, self.data, self.sample, self.inputs = stage, config, data, sample, inputs
        self.flow = RectifiedFlow()

    def build_model(self) -> nn.Module:
        return stage_net(self.config, self.stage)

    def export_config(self) -> dict[str, Any]:
        unet = {"window_shifts": WINDOW_SHIFTS} if self.stage == "fine" and self.config.fine_arch == "unet" else {}
        return {"struct_fm": self.config.model_dump(mode="json"), "stage": self.stage, **unet}

    def collate(self, samples: list[dict]) -> dict[str, Any]:
        G, C, p, feats, coords = self.config.grid, self.config.latent_channels, self.config.coarse_patch, [], []
        grid, tokens = full_grid(1, G)[:, 1:].long(), full_grid(1, G // p)[:, 1:].long()
        for s in samples:
            idx = (s["cells"][:, 0] * G + s["cells"][:, 1]) * G + s["cells"][:, 2]  # rows of the x-major grid
            if self.stage == "coarse":  # on the patch tokens (the cells themselves when coarse_patch is 1)
                occ = -torch.ones(G**3, 1)
                occ[idx] = 1.0
                coords.append(tokens)
                feats.append(patchify_grid(occ, 1, G, p))
            elif self.stage == "dense":
                dense = torch.zeros(G**3, C)
                dense[idx] = s["latents"]
                coords.append(grid)
                feats.append(dense)
            else:
                extra = dilate(s["cells"], G, self.data.dilation, np.random.default_rng(s["seed"]))
                coords.append(torch.cat([s["cells"], extra]))
                feats.append(torch.cat([s["latents"], torch.zeros(len(extra), C)]))
        x0 = SparseTensor.from_list(feats, coords)
        layout = torch.stack([s["layout"] for s in samples])
        return {"x0": x0, "layout": layout, "seeds": torch.tensor([s["seed"] for s in samples]),
                "cells": [s["cells"] for s in samples], "tile_ids": [s["tile_id"] for s in samples]}  # fmt: skip

    @torch.no_grad()
    def validation_stats(self, model: nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        x0: SparseTensor = batch["x0"]
        B, dev = x0.batch_size, x0.device
        layout = self._layout(batch)
        gens = sample_generators(batch["seeds"], dev)  # a tile's noise is its own, at any batch size
        stats = flow_loss_stats(self.flow, model, x0, layout, x0.replace(randn_per_sample(x0, gens)))
        # sample the stage as generation does (noise continues from each tile's generator) and score its cells
        uncond, strength = guidance(layout, self.sample.cfg_strength)
        start = x0.replace(randn_per_sample(x0, gens))
        velocity = lambda z, tt, c: model(z, tt, c)  # noqa: E731
        out = euler_sample(velocity, start, self.sample.steps, layout, uncond, strength)
        if self.stage == "coarse":  # back from the patch tokens to the cells
            G = self.config.grid
            out = SparseTensor(unpatchify_grid(out.feats, B, G, self.config.coarse_patch), full_grid(B, G, dev), B)
        kept = out.feats[:, 0] > 0 if self.stage == "coarse" else keep_cells(self.config, out.feats)
        gt = torch.cat([torch.cat([torch.full((len(c), 1), b), c], 1) for b, c in enumerate(batch["cells"])]).to(dev)
        cand = out.coords
        counts = {**vm.candidate_accuracy(cand, kept, gt.int(), B), **vm.confusion(cand[kept], gt.int(), B)}
        stats.update({k: v.sum().cpu() for k, v in counts.items()})
        return stats

    def metrics_from_stats(self, stats: dict[str, torch.Tensor]) -> dict[str, float]:
        out = flow_loss_metrics(stats)
        out.update(vm.ratios({k: stats[k] for k in ("tp", "fp", "fn", "correct", "candidates")}))
        return out

    def figures(self, model: nn.Module, batch: dict) -> dict[str, Any]:
        return {}


# --------------------------------------------------------------------------- runs

def load_structfm(out_dir: str | Path, map_location: str | torch.device = "cpu") -> StructFM:
    """The flow from a ``train_structfm`` output folder: ``coarse/`` + ``fine/`` (two_stage) or ``dense/``."""
    out_dir = Path(out_dir)
    variant = "dense" if (out_dir / "dense" / "model.pt").is_file() and not (out_dir / "coarse").exists() else "two_stage"
    stages = ("dense",) if variant == "dense" else ("coarse", "fine")
    blobs = {}
    for stage in stages:
        path = out_dir / stage / "model.pt"
        blob = load_export(path, "structfm", "train_structfm", f"StructFM {stage} stage", map_location)
        if blob["config"].get("stage") != stage:
            raise ValueError(f"{path}: holds the StructFM {blob['config'].get('stage')!r} stage, not {stage!r}")
        fine_arch = blob["config"]["struct_fm"].get("fine_arch", "transformer")
        check_window_shifts(blob["config"], stage == "fine" and fine_arch == "unet", str(path))
        blobs[stage] = blob
    model = StructFM(StructFMConfig.model_validate(blobs[stages[0]]["config"]["struct_fm"]), variant)
    for stage, blob in blobs.items():
        getattr(model, stage).load_state_dict(blob["state_dict"])
    model.inputs = blobs[stages[-1]].get("inputs") or {}  # the latent stage's (both stages learned from the same)
    return model.eval()


def build_datasets(manifest: pd.DataFrame, stats: dict, cfg: StructFMRunConfig) -> tuple[LatentTileDataset, LatentTileDataset]:
    """Training and validation tiles of the structure latents (what ``train_structfm`` trains on)."""
    grid, d = cfg.model.grid, cfg.data
    c = cfg.model.condition
    return (LatentTileDataset(manifest, stats, d.train_split, grid, root=d.root, condition=c, cache=d.cache_tiles),
            LatentTileDataset(manifest, stats, d.val_split, grid, d.max_val_tiles, root=d.root, condition=c,
                              cache=d.cache_tiles))  # fmt: skip


def train_structfm(
    manifest: pd.DataFrame, stats: dict, config: StructFMRunConfig | dict, tags: dict[str, str] | None = None
) -> dict[str, Any]:
    """Train the coarse, then the fine stage; generate from validation layouts. Final metrics
    ``coarse/*``, ``fine/*`` (validation) and ``gen_*`` (generated and decoded structures).

    Each stage's MLflow run is tagged ``model=structfm``, ``stage`` and ``tags`` (default
    ``ablation=main, table=none``; Table 4 rows: ``ablation=<row>, table=4``); the ``gen_*``
    metrics are added to the last stage's run as ``final/gen_*``, so one run per row holds them."""
    cfg = config if isinstance(config, StructFMRunConfig) else StructFMRunConfig.model_validate(config)
    if "struct" not in stats:
        raise ValueError("latents_stats has no 'struct' entry: run `kedro run --pipelines=cache_latents`")
    train, val = build_datasets(manifest, stats["struct"], cfg)
    log.info("StructFM: %d training / %d validation tiles, grid %d", len(train), len(val), cfg.model.grid)
    metrics: dict[str, Any] = {"train_tiles": len(train), "val_tiles": len(val)}
    run_tags = {"model": "structfm", "ablation": "main", "table": "none", **(tags or {})}
    stages = ("coarse", "fine") if cfg.variant == "two_stage" else ("dense",)
    for stage in stages:
        task = StructFMTask(stage, cfg.model, cfg.data, cfg.sample, latent_inputs(stats, "struct"))
        trainer = Trainer(task, cfg.fine if stage == "dense" else getattr(cfg, stage), train, val, out_dir=Path(cfg.output_dir) / stage,
                          run_name=f"{cfg.name}/{stage}", tags={**run_tags, "stage": stage},
                          params=cfg.model_dump(mode="json"), device=cfg.device, mlflow=cfg.mlflow,
                          operational_sections=("coarse", "fine"))  # the stage's own: its trainer config  # fmt: skip
        result = trainer.fit()
        metrics.update({f"{stage}/{k}": v for k, v in result.items() if isinstance(v, (int, float))})
        metrics[f"{stage}/run_id"] = trainer.run_id or ""
    if cfg.preview_tiles and cfg.structvae_path and tracking.is_main_process():  # under torchrun: rank 0's files
        from earthcrafter.training.structfm_preview import generate_preview

        tiles = train if cfg.preview_split == "train" else val
        model = load_structfm(cfg.output_dir)
        generated = generate_preview(model, tiles, stats["struct"], cfg)
        if model.config.height_dropout > 0:  # it also takes photos: the same tiles from their views' colours alone
            generated.update(generate_preview(model, tiles, stats["struct"], cfg, given="rgb"))
        metrics.update(generated)
        # what the gen_* numbers were measured on, so a table built later from stored rows can say it
        metrics.update(gen_split=cfg.preview_split, gen_condition=cfg.model.condition)
        numeric = {k: v for k, v in generated.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        tracking.log_metrics_to_run(metrics[f"{stages[-1]}/run_id"], numeric, prefix="final/")
    return metrics


# --------------------------------------------------------------------------- Table 4

TABLE4_PAPER = {  # Table 4 of the paper (train data, image condition): mIoU^3 at L/8, mIoU^0 at L
    "DenseSFM": (1, 1, 82.8, 18.9), "ClassSFM": (2, 1, 84.7, None), "LatentSFM": (2, 2, 86.1, 25.4),
}


def ablation_config(config: StructFMRunConfig, row: str) -> StructFMRunConfig:
    """Table 4 row ``row``: this configuration with the row's overrides, its own folder and run name."""
    from earthcrafter.training.structvae import _deep_merge

    if row not in config.ablations:
        raise ValueError(f"train_structfm.ablations has no row {row!r}; rows: {sorted(config.ablations)}")
    raw = _deep_merge(config.model_dump(mode="json", exclude={"ablations"}), config.ablations[row])
    raw.update(output_dir=str(Path(config.output_dir) / "ablations" / row), name=f"{config.name}/{row}")
    return StructFMRunConfig.model_validate(raw)


def table4(two_stage: dict, dense: dict, extra: dict[str, dict] | None = None) -> pd.DataFrame:
    """Table 4 from a two-stage and a dense run's metrics (percent), the paper's numbers beside, and
    the MLflow run each row's numbers are logged on (its last stage's; "" without tracking).
    ``extra``: more two-stage runs (label -> metrics), one LatentSFM row each, without paper numbers."""
    pct = lambda m, k: round(100 * m[k], 1) if k in m else None  # noqa: E731
    run = lambda m: m.get("fine/run_id") or m.get("dense/run_id") or ""  # noqa: E731
    ours = {"DenseSFM": (pct(dense, "gen_cell_iou"), pct(dense, "gen_iou")),
            "ClassSFM": (pct(two_stage, "gen_coarse_cell_iou"), None),
            "LatentSFM": (pct(two_stage, "gen_cell_iou"), pct(two_stage, "gen_iou"))}  # fmt: skip
    rows = []
    for method, (s_num, s_idx, p3, p0) in TABLE4_PAPER.items():
        rows.append({"Method": method, "S-Num": s_num, "S-Index": s_idx, "mIoU3": ours[method][0],
                     "mIoU0": ours[method][1], "paper mIoU3": p3, "paper mIoU0": p0,
                     "run_id": run(dense if method == "DenseSFM" else two_stage)})  # fmt: skip
    for label, m in (extra or {}).items():
        rows.append({"Method": label, "S-Num": 2, "S-Index": 2, "mIoU3": pct(m, "gen_cell_iou"), "mIoU0": pct(m, "gen_iou"),
                     "paper mIoU3": None, "paper mIoU0": None, "run_id": run(m)})  # fmt: skip
    return pd.DataFrame(rows)
