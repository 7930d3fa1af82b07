"""Synthetic tiles for tests: manifests over earthcrafter.training.synthetic scenes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from earthcrafter.training.synthetic import scene_coords

__all__ = ["memory_tiles", "scene_coords", "write_real_tiles"]


class Tile:
    def __init__(self, tile_id: str, coords: np.ndarray, L: int):
        self.tile_id, self.coords, self.meta = tile_id, coords, {"L": L}


def memory_tiles(tmp: Path, L: int, n_train: int, n_val: int, seed: int = 0) -> tuple[pd.DataFrame, callable]:
    """A manifest (with touched placeholder files) and an in-memory ``read_tile``."""
    tiles, rows = {}, []
    for i in range(n_train + n_val):
        path = tmp / f"t{i:03d}.parquet"
        path.touch()
        tiles[str(path)] = Tile(f"t{i:03d}", scene_coords(L, seed + i), L)
        rows.append({"tile_id": f"t{i:03d}", "scene_id": f"s{i}", "num_voxels": len(tiles[str(path)].coords),
                     "split": "train" if i < n_train else "val", "path": str(path)})
    return pd.DataFrame(rows), lambda p: tiles[str(p)]


def write_real_tiles(root: Path, L: int, n_train: int, n_val: int, seed: int = 0) -> pd.DataFrame:
    """The same scenes as real Parquet tiles (earthcrafter.io.tiles) and their manifest."""
    from earthcrafter.features.layout import feature_layout, layout_channels
    from earthcrafter.io.tiles import VoxelTile, write_tile

    layout = feature_layout()
    C = layout_channels(layout)
    rows = []
    for i in range(n_train + n_val):
        c = scene_coords(L, seed + i)
        meta = {"scene_id": f"s{i}", "biome": "test", "L": L, "voxel_size_m": 1.0, "origin_m": [0.0, 0.0, 0.0],
                "feature_layout": {k: [v.start, v.stop] for k, v in layout.items()}, "counts": {}, "extra": {}}
        tile = VoxelTile(f"t{i:03d}", c, np.zeros((len(c), C), np.float16), np.zeros(len(c), np.uint8),
                         np.ones(len(c), np.float16), meta)
        path = write_tile(root / f"t{i:03d}.parquet", tile)
        rows.append({"tile_id": tile.tile_id, "scene_id": f"s{i}", "num_voxels": len(c),
                     "split": "train" if i < n_train else "val", "path": str(path)})
    return pd.DataFrame(rows)
