"""Dry run: a few real training steps of every model of a configuration, on synthetic tiles.

Before a long job (the paper configuration is 200k steps per model on many GPUs), run on the
machine that will train it: every model is built from the configuration as its pipeline builds it,
and trained for a few steps by the same :class:`~earthcrafter.training.trainer.Trainer` (DDP under
``torchrun``, bf16 autocast on CUDA, EMA, clipping, activation checkpointing) through the same
datasets and collation, up to the configured voxel budget per sample. What comes back per model:
parameters, the per-rank batch, voxels per sample against the budget, step time (and the part of it
spent loading data), throughput, peak memory (CUDA: allocated and reserved since the model's start;
CPU: the process's resident peak so far), the losses, skipped updates, and the weights the last step
gave no gradient (DDP stops on those). Nothing is written outside a temporary folder, and no
MLflow run is opened.

The tiles are :func:`~earthcrafter.training.synthetic.textured_tile` heightfields at each model's
L (0.5 m voxels, enough of them to fill the paper's 250k budget at L = 360), with their features
and views; the latent tiles hold random latents on those tiles' cells, with the condition rasters
``cache_latents`` would store. A dry run measures whether and how fast a configuration trains, not
what it learns.
"""

from __future__ import annotations

import gc
import json
import logging
import statistics
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from earthcrafter.training.config import TrainerConfig
from earthcrafter.training.trainer import Trainer, uses_bf16

log = logging.getLogger(__name__)

MODELS = ("structvae", "texvae", "structfm_coarse", "structfm_fine", "texfm")
SECTIONS = {"structvae": "train_structvae", "texvae": "train_texvae", "structfm_coarse": "train_structfm",
            "structfm_fine": "train_structfm", "texfm": "train_texfm"}  # fmt: skip


def load_parameters(conf_dir: str | Path, env: str) -> dict[str, Any]:
    """The parameters ``kedro run --env=<env>`` would see: conf/base, then ``env``'s files over it."""
    from earthcrafter.settings import CONFIG_LOADER_ARGS, CONFIG_LOADER_CLASS

    args = {**CONFIG_LOADER_ARGS, "default_run_env": env}
    return dict(CONFIG_LOADER_CLASS(str(conf_dir), **args)["parameters"])


# --------------------------------------------------------------------------- synthetic tiles

class SyntheticTiles:
    """Textured tiles (with views) at each L asked for, and random latents on them, under ``root``."""

    def __init__(self, root: Path, tiles: int = 2, seed: int = 0):
        self.root, self.tiles, self.seed = root, tiles, seed
        self._voxels: dict[int, pd.DataFrame] = {}
        self._latents: dict[tuple[int, int, int], tuple[pd.DataFrame, dict]] = {}

    def voxel_manifest(self, L: int) -> pd.DataFrame:
        """``tiles`` tiles of L³ voxels (0.5 m) with two views each, in the train and the val split."""
        from earthcrafter.training.synthetic import textured_tile, write_textured_tiles

        if L not in self._voxels:
            # four hill periods: ~2.2 voxels per column, 290k voxels at L = 360 (the paper's budget: 250k)
            made = [(*textured_tile(L=L, voxel_size=0.5, views=2, px=min(4 * L, 512), seed=self.seed + i,
                                    tile_id=f"dry_L{L}_{i}", hills=4), "train") for i in range(self.tiles)]  # fmt: skip
            self._voxels[L] = _both_splits(write_textured_tiles(self.root / f"voxels_L{L}", made))
        return self._voxels[L]

    def latent_manifest(self, L: int, struct_channels: int, tex_channels: int) -> tuple[pd.DataFrame, dict]:
        """Latent tiles of the voxel tiles at L: structure latents on the occupied L/8 cells,
        texture latents on every voxel, both N(0, 1); and unit statistics."""
        from earthcrafter.io.latents import LatentTile, conditions_path, write_latent_tile
        from earthcrafter.io.tiles import read_tile
        from earthcrafter.latents.cache import store_conditions

        key = (L, struct_channels, tex_channels)
        if key not in self._latents:
            rows, rng = [], np.random.default_rng(self.seed)
            for r in self.voxel_manifest(L).itertuples():
                tile = read_tile(r.path)
                out = {"tile_id": r.tile_id, "scene_id": r.scene_id, "split": "train", "tile_path": r.path}
                for kind, stride, C in (("struct", 8, struct_channels), ("tex", 1, tex_channels)):
                    coords = np.unique(tile.coords // stride, axis=0)
                    meta = {"scene_id": r.scene_id, "L": L, "stride": stride, "voxel_size_m": tile.voxel_size,
                            "origin_m": tile.meta["origin_m"], "model": "dry-run", "source": "random"}  # fmt: skip
                    lt = LatentTile(r.tile_id, kind, coords, rng.normal(size=(len(coords), C)),
                                    np.zeros((len(coords), C)), meta)  # fmt: skip
                    path = self.root / f"latents_L{L}_{struct_channels}_{tex_channels}" / kind / f"{r.tile_id}.parquet"
                    out[f"{kind}_path"] = str(write_latent_tile(path, lt))
                # the condition rasters, as cache_latents stores them (what the flows' loaders read)
                out["cond_path"] = str(conditions_path(self.root / f"conditions_L{L}", r.tile_id))
                store_conditions(Path(out["cond_path"]), tile, r.path, L // 8)
                rows.append(out)
            stats = {"struct": {"mean": [0.0] * struct_channels, "std": [1.0] * struct_channels},
                     "tex": {"mean": [0.0] * tex_channels, "std": [1.0] * tex_channels}}  # fmt: skip
            self._latents[key] = (_both_splits(pd.DataFrame(rows)), stats)
        return self._latents[key]


def _both_splits(manifest: pd.DataFrame) -> pd.DataFrame:
    """The rows as training tiles and again as validation tiles (the datasets want both splits)."""
    return pd.concat([manifest.assign(split="train"), manifest.assign(split="val")], ignore_index=True)


# --------------------------------------------------------------------------- models

def _trainer_config(
    cfg: TrainerConfig, steps: int, batch: int | None, world: int, accum: int = 1, checkpointing: bool | None = None
) -> TrainerConfig:
    """The model's trainer settings with only the run's length, cadence and I/O changed (no data
    workers: the step time includes loading, which the records give apart). ``batch`` (samples per
    rank and micro-step) replaces the configured global batch, and ``checkpointing`` the configured
    activation checkpointing, when given."""
    update = dict(steps=steps, warmup_steps=0, log_every=1, val_every=0, ckpt_every=0, resume=False,
                  figures=False, progress=False, num_workers=0)  # fmt: skip
    if batch is not None:
        update["batch_size"] = batch * world * accum
    if checkpointing is not None:
        update["activation_checkpointing"] = checkpointing
    return cfg.model_copy(update=update)


def _with_budget(data, voxels: int | None):
    return data.model_copy(update={"max_voxels": voxels}) if voxels else data


def _structvae(params: dict, tiles: SyntheticTiles, voxels: int | None):
    from earthcrafter.training.structvae import StructVAERunConfig, StructVAETask, build_datasets

    cfg = StructVAERunConfig.model_validate(params["train_structvae"])
    cfg = cfg.model_copy(update={"data": _with_budget(cfg.data, voxels)})
    train, _ = build_datasets(tiles.voxel_manifest(cfg.model.L), cfg)
    return StructVAETask(cfg.model, cfg.threshold), train, cfg.trainer, cfg.device, cfg.data.max_voxels


def _texvae(params: dict, tiles: SyntheticTiles, voxels: int | None):
    from earthcrafter.models.tex_vae_train import TexVAETrainConfig, build_datasets, texvae_task

    cfg = TexVAETrainConfig.model_validate(params["train_texvae"])
    cfg = cfg.model_copy(update={"data": _with_budget(cfg.data, voxels)})
    train, _ = build_datasets(cfg, tiles.voxel_manifest(_tile_L(params)))
    return texvae_task(cfg, train.layout_channels()), train, cfg.trainer, cfg.device, cfg.data.max_voxels


def _structfm(stage: str):
    def build(params: dict, tiles: SyntheticTiles, voxels: int | None):
        from earthcrafter.training.structfm import StructFMRunConfig, StructFMTask, build_datasets

        cfg = StructFMRunConfig.model_validate(params["train_structfm"])
        m = cfg.model
        manifest, stats = tiles.latent_manifest(8 * m.grid, m.latent_channels, _channels(params, "train_texfm", 8))
        train, _ = build_datasets(manifest, stats["struct"], cfg)
        budget = (m.grid // m.coarse_patch) ** 3 if stage == "coarse" else None  # the grid's tokens; fine: the cells
        return StructFMTask(stage, m, cfg.data, cfg.sample), train, getattr(cfg, stage), cfg.device, budget

    return build


def _texfm(params: dict, tiles: SyntheticTiles, voxels: int | None):
    from earthcrafter.training.texfm import TexFMRunConfig, TexFMTask, build_datasets

    cfg = TexFMRunConfig.model_validate(params["train_texfm"])
    cfg = cfg.model_copy(update={"data": _with_budget(cfg.data, voxels)})
    m = cfg.model
    manifest, stats = tiles.latent_manifest(m.layout_grid * m.layout_stride, _channels(params, "train_structfm", 32),
                                            m.latent_channels)  # fmt: skip
    train, _ = build_datasets(manifest, stats["tex"], cfg)
    return TexFMTask(m, cfg.data), train, cfg.trainer, cfg.device, cfg.data.max_voxels


def _tile_L(params: dict) -> int:
    """The voxel tiles' L: the voxelization grid's (semantic_aggregation.grid.L), else StructVAE's."""
    grid = params.get("semantic_aggregation", {}).get("grid", {})
    return int(grid.get("L") or params["train_structvae"]["model"]["L"])


def _channels(params: dict, section: str, default: int) -> int:
    """The latent channels the other flow's latent tiles need (when that flow is not configured: ``default``)."""
    return int(params.get(section, {}).get("model", {}).get("latent_channels", default))


BUILDERS: dict[str, Callable] = {"structvae": _structvae, "texvae": _texvae, "structfm_coarse": _structfm("coarse"),
                                 "structfm_fine": _structfm("fine"), "texfm": _texfm}  # fmt: skip


# --------------------------------------------------------------------------- the run

def dry_run_model(
    name: str, params: dict, tiles: SyntheticTiles, *, steps: int = 3, batch: int | None = None,
    voxels: int | None = None, device: str | None = None, checkpointing: bool | None = None,
) -> dict[str, Any]:
    """``steps`` training steps of model ``name`` (one of :data:`MODELS`) as configured in
    ``params``; one record of what it took.

    On a single device a CUDA out-of-memory error is the record's answer (``status``) and the
    memory is freed for the next model. Under ``torchrun`` it is raised: the other ranks wait in
    that step's collectives, so only ending the job (torchrun does) stops them cleanly."""
    from earthcrafter.training import distributed as dist

    if name not in BUILDERS:
        raise ValueError(f"unknown model {name!r}; models: {', '.join(MODELS)}")
    if SECTIONS[name] not in params:
        raise ValueError(f"the configuration has no {SECTIONS[name]} section")
    task, train, trainer_cfg, cfg_device, budget = BUILDERS[name](params, tiles, voxels)
    accum = trainer_cfg.accum_steps
    env = dist.setup(device or cfg_device)
    run_cfg = _trainer_config(trainer_cfg, steps, batch, env.world_size, accum, checkpointing)
    per_rank = run_cfg.batch_size // (env.world_size * accum)
    gc.collect()  # the models before may linger in reference cycles: not in this one's peak
    if env.device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(env.device)
    head = {"model": name, "device": str(env.device), "world_size": env.world_size, "batch_per_rank": per_rank}
    with tempfile.TemporaryDirectory(dir=tiles.root) as out:
        trainer = Trainer(task, run_cfg, train, None, out_dir=out, run_name=f"dry-run/{name}", device=device or cfg_device,
                          mlflow=False)  # fmt: skip
        oom = None
        try:
            trainer.fit(stop_after=steps)
        except torch.cuda.OutOfMemoryError as e:  # the answer to "does it fit": say so, free, go on
            if env.distributed:
                raise
            oom = str(e).splitlines()[0]
        if oom is not None:  # outside the handler, whose traceback holds the model and optimizer
            del trainer
            gc.collect()
            torch.cuda.empty_cache()
            return {**head, "status": f"out of memory: {oom}"}
        # the trainer leaves right after the last step's update: its gradients are still there
        no_grad = [k for k, p in trainer.model.named_parameters() if p.requires_grad and p.grad is None]
    rows = trainer.history["train"]
    timed = [r for r in rows if r["step"] > 1] or rows  # the first step builds caches
    # a logging window whose batches were all skipped (a TexVAE crop no view sees) logs no loss
    losses = [r["loss"] for r in rows if "loss" in r]
    finite = bool(losses) and all(np.isfinite(v) for v in losses)
    skipped = int(rows[-1]["skipped_steps"]) if rows else 0
    record = {
        **head, "status": "ok" if finite and not no_grad and not skipped else "failed",
        "params_m": round(sum(p.numel() for p in trainer.model.parameters()) / 1e6, 2), "accum_steps": accum,
        "precision": "bf16" if uses_bf16(run_cfg.precision, env.device) else "fp32",
        "activation_checkpointing": run_cfg.activation_checkpointing,
        "voxels_per_sample": round(statistics.mean(r["voxels_per_s"] / r["samples_per_s"] for r in timed)),
        "voxel_budget": budget,
        # throughput is summed over ranks: a step moves the global batch
        "step_s": round(statistics.median(run_cfg.batch_size / r["samples_per_s"] for r in timed), 3),
        "data_s": round(statistics.median(r["data_s"] for r in timed), 3),  # of step_s: loading (no workers)
        "samples_per_s": round(statistics.median(r["samples_per_s"] for r in timed), 3),
        "voxels_per_s": round(statistics.median(r["voxels_per_s"] for r in timed)),
        "peak_mem_gb": round(max(r["peak_mem_gb"] for r in rows), 2),
        "peak_reserved_gb": round(torch.cuda.max_memory_reserved(env.device) / 2**30, 2) if env.device.type == "cuda" else None,
        "losses": [round(v, 5) for v in losses],
        "finite": finite,
        "skipped_steps": skipped,
        "no_grad": no_grad,
    }
    del trainer
    return record


def dry_run(
    params: dict, models: Iterable[str] = MODELS, *, steps: int = 3, batch: int | None = None,
    voxels: int | None = None, device: str | None = None, checkpointing: bool | None = None, tiles: int = 2,
    workdir: str | Path | None = None,
) -> list[dict[str, Any]]:
    """:func:`dry_run_model` for each of ``models``, which ``params`` must configure."""
    models = list(models)
    unknown = [m for m in models if m not in BUILDERS]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; models: {', '.join(MODELS)}")
    missing = sorted({SECTIONS[m] for m in models} - params.keys())
    if missing:
        raise ValueError(f"the configuration has no {', '.join(missing)} section(s)")
    if min(steps, tiles, batch or 1, voxels or 1) < 1:
        raise ValueError(f"steps, tiles, batch and voxels must be at least 1 (got {steps}, {tiles}, {batch}, {voxels})")
    records = []
    with tempfile.TemporaryDirectory(dir=workdir, prefix="earthcrafter-dry-run-") as root:
        synth = SyntheticTiles(Path(root), tiles)
        for name in models:
            log.info("dry run: %s", name)
            records.append(dry_run_model(name, params, synth, steps=steps, batch=batch, voxels=voxels, device=device,
                                         checkpointing=checkpointing))
    return records


def records_table(records: list[dict[str, Any]]) -> str:
    """A markdown table of dry-run records."""
    head = ("model", "params (M)", "device × ranks", "batch/rank", "voxels/sample (budget)", "s/step (loading)",
            "voxels/s",
            "peak mem (GB)", "losses", "weights without gradient")  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in records:
        if "losses" not in r:
            lines.append(f"| {r['model']} | {r['status']} |" + " |" * (len(head) - 2))
            continue
        lines.append("| " + " | ".join(str(x) for x in (
            r["model"], r["params_m"],
            f"{r['device']} × {r['world_size']} ({r['precision']}{', ckpt' if r['activation_checkpointing'] else ''})",
            r["batch_per_rank"],
            f"{r['voxels_per_sample']:,}" + (f" ({r['voxel_budget']:,})" if r["voxel_budget"] else ""),
            f"{r['step_s']} ({r['data_s']})", f"{r['voxels_per_s']:,}",
            r["peak_mem_gb"] if r["peak_reserved_gb"] is None else f"{r['peak_mem_gb']} ({r['peak_reserved_gb']} reserved)",
            " → ".join(f"{x:.3g}" for x in r["losses"]) + (f" ({r['skipped_steps']} skipped)" if r["skipped_steps"] else ""),
            len(r["no_grad"]) or "none")) + " |")  # fmt: skip
    return "\n".join(lines)


def write_records(records: list[dict[str, Any]], path: str | Path) -> Path:
    from earthcrafter.io.atomic import atomic_write_text

    return atomic_write_text(Path(path), json.dumps(records, indent=2))


__all__ = ["MODELS", "SyntheticTiles", "dry_run", "dry_run_model", "load_parameters", "records_table",
           "write_records"]
