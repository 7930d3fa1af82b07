"""voxelization nodes: select tiles, split by scene, write the model-input tile set and manifest."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from earthcrafter import config, tracking
from earthcrafter.io.atomic import atomic_path
from earthcrafter.io.tiles import build_manifest, manifest_row, read_tile, read_views, skipped_table, tile_views_path

log = logging.getLogger(__name__)


def assemble_tiles(featured_scenes: dict, params: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Copy the accepted tiles into ``output_dir`` (atomically, as one folder) and return the
    manifest (split by scene or by block, ``split.by``) and the table of everything skipped, with reasons."""
    cfg = config.validate("voxelization", params)
    out = Path(cfg.output_dir)
    rows, skipped = [], []
    with atomic_path(out) as tmp:
        tmp.mkdir()
        for sid, folder in sorted(featured_scenes.items()):
            report = json.loads((folder / "report.json").read_text())
            skipped += report.get("skipped", [])
            for tile_path in sorted(folder.glob("*.parquet")):
                tile = read_tile(tile_path)
                clipped = float(tile.meta.get("counts", {}).get("clipped_fraction", 0.0))
                reason = None
                if len(tile) < cfg.min_voxels:
                    reason = f"{len(tile)} voxels < min_voxels {cfg.min_voxels}"
                elif clipped > cfg.max_clipped_fraction:
                    reason = f"clipped fraction {clipped:.2f} > {cfg.max_clipped_fraction}"
                if reason:
                    log.warning("voxelization: skipping tile %s: %s", tile.tile_id, reason)
                    skipped.append({"scene_id": sid, "scope": "tile", "item": tile.tile_id, "reason": reason})
                    continue
                views_src = tile_views_path(tile_path, tile.tile_id)
                shutil.copy2(tile_path, tmp / tile_path.name)
                shutil.copy2(views_src, tmp / views_src.name)
                rows.append(manifest_row(tile, out / tile_path.name, out / views_src.name, len(read_views(views_src))))
    if not rows:
        raise ValueError(f"voxelization: no tile passed the filters ({len(skipped)} skipped); see the log for reasons")
    manifest = build_manifest(rows, cfg.split)
    skipped_df = skipped_table(skipped)
    _log(manifest, skipped_df, cfg.split.by)
    return manifest, skipped_df


def _log(manifest: pd.DataFrame, skipped: pd.DataFrame, split_by: str = "scene") -> None:
    counts = manifest["split"].value_counts().to_dict()
    tracking.log_metrics(
        {
            "voxelization/tiles": len(manifest),
            "voxelization/train_tiles": counts.get("train", 0),
            "voxelization/val_tiles": counts.get("val", 0),
            "voxelization/buffer_tiles": counts.get("buffer", 0),
            "voxelization/skipped": len(skipped),
            "voxelization/voxels_mean": float(manifest["num_voxels"].mean()),
        }
    )
    log.info("voxelization: %d tiles (%s), %d skipped", len(manifest), counts, len(skipped))
    if counts.get("buffer"):
        log.info("voxelization: %d training tile(s) overlap validation tiles: split 'buffer', used by neither",
                 counts["buffer"])  # fmt: skip
    for split in ("train", "val"):
        if not counts.get(split):
            hint = ("a split by scene cannot divide one scene: set voxelization.split.by: block" if split_by == "scene"
                    else "fewer blocks than the split needs: a smaller split.block_size_m, another val_fraction or seed")
            log.warning("voxelization: no %s tiles (%d scene(s)): training needs both; %s", split,
                        manifest["scene_id"].nunique(), hint)  # fmt: skip
    if not tracking.active():
        return
    from earthcrafter.features.preview import splat_voxels, tile_colors

    first = manifest.iloc[int(np.argmax(manifest["num_voxels"].to_numpy()))]
    tile = read_tile(first["path"])
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    views = read_views(first["views_path"])
    if not len(views):
        plt.close(fig)
        return
    h, w = views.rgb.shape[1:3]
    axes[0].imshow(views.rgb[0])
    axes[0].set_title("source frame")
    for ax, mode in zip(axes[1:], ("class", "rgb")):
        img = splat_voxels(tile.coords, tile_colors(tile, mode), views.K[0], views.world_to_camera[0],
                           tile.meta["voxel_size_m"], h, w)
        ax.imshow(img)
        ax.set_title(f"{tile.tile_id}: voxels by {mode}")
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    tracking.log_figure(fig, "voxelization/tile_preview.png")
    plt.close(fig)
