"""Tiny tile sets with features, and randomly initialised StructVAE / TexVAE exports of the real
architectures, for the latent cache tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

L = 16
STRUCT = dict(L=L, widths=(16, 16, 32, 32), head_dim=16, enc_depths=(1, 1, 1), dec_depths=(1, 1, 1),
              bottleneck_depth=1, cblock_every=1, pe_channels=24)  # fmt: skip
TEX = dict(width=16, num_heads=2, enc_depth=1, dec_depth=1, window=4)


def write_tiles(
    root: Path, splits: list[str], seed: int = 0, empty: tuple[int, ...] = (), size: int = L
) -> pd.DataFrame:
    """Tiles ``t000 ...`` (one scene each) with terrain + box occupancy and random 66-d features."""
    from earthcrafter.features.layout import FEATURE_LAYOUT, NUM_FEATURES, layout_to_json
    from earthcrafter.io.tiles import VoxelTile, write_tile
    from earthcrafter.training.synthetic import scene_coords

    rows = []
    for i, split in enumerate(splits):
        rng = np.random.default_rng(seed + i)
        c = np.zeros((0, 3), np.int32) if i in empty else scene_coords(size, seed + i)
        meta = {"scene_id": f"s{i}", "biome": "test", "L": size, "voxel_size_m": 2.0, "origin_m": [10.0 * i, 0.0, 5.0],
                "feature_layout": layout_to_json(FEATURE_LAYOUT), "counts": {}, "extra": {}}  # fmt: skip
        feats = rng.normal(0, 1, (len(c), NUM_FEATURES)).astype(np.float16)
        tile = VoxelTile(f"t{i:03d}", c, feats, np.zeros(len(c), np.uint8), np.ones(len(c), np.float16), meta)
        path = write_tile(root / f"t{i:03d}.parquet", tile)
        rows.append({"tile_id": tile.tile_id, "scene_id": f"s{i}", "num_voxels": len(c), "split": split,
                     "path": str(path)})  # fmt: skip
    return pd.DataFrame(rows)


def save_models(root: Path, seed: int = 0) -> tuple[Path, Path]:
    from earthcrafter.models.struct_vae import StructVAE, StructVAEConfig
    from earthcrafter.models.tex_vae import TexVAE, TexVAEConfig
    from earthcrafter.training.structvae import save_structvae

    torch.manual_seed(seed)
    struct = save_structvae(StructVAE(StructVAEConfig(**STRUCT)), root / "structvae.pt")
    tex = TexVAE(TexVAEConfig(**TEX), in_channels=66)
    with torch.no_grad():  # a non-trivial posterior: random weights of the output projection
        for p in tex.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return struct, tex.save(root / "texvae.pt")
