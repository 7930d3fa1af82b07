"""Generate scenes: semantic layout -> StructFM -> StructVAE -> voxels -> TexFM -> TexVAE -> surfels.

For each chosen layout (the semantic layout of a tile of ``layouts_split``, or of the named
``tile_ids``; with ``condition: none`` the flows run unconditionally, on the dropped condition they
were trained with, and the tile gives only L and the voxel size), writes ``<out_dir>/<scene_id>/``:

- ``voxels.ply``: the generated structure as cubes, coloured by height;
- ``structure.parquet``: its voxel coordinates (earthcrafter.io.structure), what ``evaluation`` scores;
- ``gaussians.ply``: its generated texture as 2DGS surfels (3DGS / 2DGS viewers);
- ``orbit/``: a turntable of the surfels (PNG, GIF, MP4 when ffmpeg exists);
- ``preview.png``: the layout, the voxels and the surfels from one oblique camera;
- ``struct_latents.parquet``, ``tex_latents.parquet``: the generated latents (earthcrafter.io.latents;
  log-variance -30: a point, not a posterior);
- ``summary.json``: seed, layout tile, sizes, and the structure's IoU against the layout's own tile
  (a layout does not fix heights: a plausibility figure, not a reconstruction score).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from earthcrafter import tracking
from earthcrafter.evaluation import voxel_metrics as vm
from earthcrafter.flow.latent_stats import denormalize
from earthcrafter.geometry.voxel_mesh import voxel_mesh
from earthcrafter.io.atomic import atomic_path, atomic_write_text
from earthcrafter.io.latents import LatentTile, write_latent_tile
from earthcrafter.io.scene import write_mesh_ply
from earthcrafter.io.structure import write_structure
from earthcrafter.io.tiles import read_tile
from earthcrafter.latents.export import aerial_orbit, render_mesh
from earthcrafter.models.tex_fm import generate_texture
from earthcrafter.models.tex_vae import TexVAE
from earthcrafter.render import render_orbit, save_frames, save_ply
from earthcrafter.semantics import PALETTE
from earthcrafter.sparse.tensor import batched_coords
from earthcrafter.training.distributed import local_device
from earthcrafter.training.structfm import load_structfm, semantic_layout
from earthcrafter.training.structfm_preview import height_colors
from earthcrafter.training.structvae import load_structvae
from earthcrafter.training.texfm import load_texfm
from earthcrafter.training.tracking import training_run
from earthcrafter.training.voxel_data import evenly_spaced

log = logging.getLogger(__name__)


class GenerationConfig(BaseModel):
    """``generation`` parameters."""

    model_config = ConfigDict(extra="forbid")
    structfm_dir: str = "data/06_models/struct_fm"
    texfm_dir: str = "data/06_models/tex_fm"
    structvae_path: str = "data/06_models/structvae/model.pt"
    texvae_path: str = "data/06_models/tex_vae/model.pt"
    out_dir: str = "data/07_model_output/generated"
    layouts_split: str = Field("val", description="tiles whose semantic layouts condition the scenes")
    num_scenes: int = Field(4, ge=1, description="scenes from layouts evenly spread over layouts_split")
    tile_ids: list[str] | None = Field(None, description="these tiles' layouts (any split), one scene each; "
                                       "overrides layouts_split and num_scenes")
    condition: Literal["layout", "none"] = Field("layout", description="none: unconditional, the dropped "
                                                 "condition the flows were trained with (the tile gives only L and voxel size)")
    seed: int = 0
    steps: int = Field(25, ge=1, description="Euler steps of both flows (paper: 25)")
    cfg_strength: float = Field(3.0, ge=0, description="classifier-free guidance (paper: 3)")
    frames: int = Field(24, ge=0, description="orbit frames per scene (0: none)")
    size: int = Field(256, ge=16, description="orbit / preview edge in pixels")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    mlflow: bool = True


def _layout_image(layout: torch.Tensor, size: int) -> np.ndarray:
    """The dominant class per layout column, as an image oriented like the renders' top view."""
    img = PALETTE[layout.argmax(-1).numpy()] * (layout.sum(-1, keepdim=True).numpy() > 0)
    img = img.astype(np.uint8).transpose(1, 0, 2)[::-1]
    return np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize((size, size), Image.NEAREST))


@torch.no_grad()
def generate_scenes(latents_manifest: pd.DataFrame, stats: dict, config: GenerationConfig | dict) -> tuple[pd.DataFrame, dict]:
    """Generate ``num_scenes`` scenes; returns (one row per scene, summary metrics)."""
    cfg = config if isinstance(config, GenerationConfig) else GenerationConfig.model_validate(config)
    device = local_device(cfg.device)
    structfm, texfm = load_structfm(cfg.structfm_dir).to(device), load_texfm(cfg.texfm_dir).to(device)
    structvae, texvae = load_structvae(cfg.structvae_path).to(device), TexVAE.load(cfg.texvae_path).to(device)
    if cfg.tile_ids:
        unknown = sorted(set(cfg.tile_ids) - set(latents_manifest["tile_id"]))
        if unknown:
            raise ValueError(f"generation.tile_ids: {unknown[:5]} not in the latent manifest "
                             f"({len(latents_manifest)} tiles, e.g. {latents_manifest['tile_id'].iloc[:3].tolist()})")  # fmt: skip
        rows = latents_manifest.set_index("tile_id").loc[cfg.tile_ids].reset_index()
        chosen = range(len(rows))
    else:
        rows = latents_manifest[latents_manifest["split"] == cfg.layouts_split].reset_index(drop=True)
        if rows.empty:
            raise ValueError(f"generation.layouts_split = {cfg.layouts_split!r}: no tiles in the latent manifest "
                             f"(splits present: {latents_manifest['split'].value_counts().to_dict()})")  # fmt: skip
        chosen = evenly_spaced(len(rows), cfg.num_scenes)
    grid, L = structfm.config.grid, structvae.config.L
    if grid * 8 != L:
        raise ValueError(f"StructFM grid {grid} does not fit the StructVAE's L = {L} (L/8 = {L // 8})")
    out_root, records, counts, sheets = Path(cfg.out_dir), [], {}, []
    with training_run("generation", {"stage": "generation"}, enabled=cfg.mlflow and tracking.is_main_process()) as run_id:
        for n, i in enumerate(tqdm(chosen, desc="generate")):
            r = rows.iloc[int(i)]
            tile = read_tile(r["tile_path"])
            layout = torch.from_numpy(semantic_layout(tile.coords, tile.semantic, L, grid))
            if cfg.condition == "none":
                layout = torch.zeros_like(layout)
            g = torch.Generator(device=device).manual_seed(cfg.seed + n)
            cond = layout[None].to(device)
            _, z_s = structfm.generate(cond if structfm.config.condition == "semantic" else None, 1, cfg.steps,
                                       cfg.cfg_strength, generator=g, device=device)  # fmt: skip
            z_s = z_s.replace(denormalize(z_s.feats, stats["struct"]))
            voxels = structvae.decode(z_s, threshold=0.0)
            structure = voxels.replace(torch.zeros(len(voxels), 1, device=device))
            z_t = generate_texture(texfm, structure, cond if texfm.layout is not None else None, cfg.steps,
                                   cfg.cfg_strength, generator=g)  # fmt: skip
            z_t = z_t.replace(denormalize(z_t.feats, stats["tex"]))
            gaussians = texvae.decode(z_t, voxel_size=tile.voxel_size)

            scene_id = f"gen_{n:03d}_{r['tile_id']}" if cfg.condition == "layout" else f"gen_{n:03d}_uncond"
            out = out_root / scene_id
            xyz = voxels.coords[:, 1:].cpu().numpy()
            top = int(xyz[:, 2].max()) + 1 if len(xyz) else 1
            mesh = voxel_mesh(xyz, tile.voxel_size, colors=height_colors(xyz, top))
            write_mesh_ply(out / "voxels.ply", mesh)
            write_structure(out / "structure.parquet", xyz, {"scene_id": scene_id, "L": L, "voxel_size_m": tile.voxel_size,
                            "source": {"layout_tile": r["tile_id"], "condition": cfg.condition, "seed": cfg.seed + n,
                                       "structfm": cfg.structfm_dir}})  # fmt: skip
            save_ply(out / "gaussians.ply", gaussians)
            meta = {"scene_id": scene_id, "L": L, "voxel_size_m": tile.voxel_size, "origin_m": [0.0, 0.0, 0.0],
                    "model": {"path": cfg.structfm_dir}, "source": {"path": r["tile_path"], "layout": True}}  # fmt: skip
            for kind, z in (("struct", z_s), ("tex", z_t)):
                write_latent_tile(out / f"{kind}_latents.parquet", LatentTile(
                    scene_id, kind, z.coords[:, 1:].cpu().numpy(), z.feats.cpu().numpy(),
                    np.full(z.feats.shape, -30.0, np.float32), {**meta, "stride": z.stride}))  # fmt: skip
            orbit = aerial_orbit(xyz, tile.voxel_size, L, cfg.size)
            views = render_orbit(gaussians, n_frames=max(cfg.frames, 1), **orbit)
            if cfg.frames:
                save_frames(views, out / "orbit")
            panel = np.concatenate([_layout_image(layout, cfg.size), render_mesh(mesh, orbit), views[0]], axis=1)
            with atomic_path(out / "preview.png") as tmp:
                Image.fromarray(panel).save(tmp)
            sheets.append(panel)
            iou = float("nan")
            if cfg.condition == "layout":  # an unconditional scene has no tile to be compared with
                confusion = vm.confusion(voxels.coords.cpu(), batched_coords(tile.coords), 1)
                c = {k: float(v.sum()) for k, v in confusion.items()}
                for k, v in c.items():
                    counts[k] = counts.get(k, 0.0) + v
                iou = vm.ratios(c)["iou"]
            summary = {"scene_id": scene_id, "layout_tile": r["tile_id"], "condition": cfg.condition,
                       "seed": cfg.seed + n, "voxels": len(voxels), "cells": len(z_s), "gaussians": len(gaussians),
                       "layout_tile_iou": iou, "path": str(out)}  # fmt: skip
            strict = {k: None if isinstance(v, float) and np.isnan(v) else v for k, v in summary.items()}  # JSON has no NaN
            atomic_write_text(out / "summary.json", json.dumps(strict, indent=2) + "\n")
            records.append(summary)
        metrics: dict[str, Any] = {"scenes": len(records), **{f"layout_tile_{k}": v for k, v in vm.ratios(counts).items()},
                                   "mean_voxels": float(np.mean([r["voxels"] for r in records]))}  # fmt: skip
        sheet = np.concatenate(sheets, axis=0)
        with atomic_path(out_root / "contact_sheet.png") as tmp:
            Image.fromarray(sheet).save(tmp)
        if run_id:
            tracking.log_metrics(metrics)
            tracking.log_params(cfg.model_dump(mode="json"))
            tracking.log_image(sheet, "generated/contact_sheet.png")
        metrics["run_id"] = run_id or ""
    log.info("generated %d scenes in %s (mean %.0f voxels)", len(records), out_root, metrics["mean_voxels"])
    return pd.DataFrame(records), metrics
