"""Benchmark: what a StructFM / TexFM training sample costs its loader worker.

With ``data.cache_tiles: false`` (conf/paper) every draw loads its tile again. Two measurements,
each against its baseline side by side on the same files:

1. reading a voxel tile with and without its 66 feature channels (``read_tile(path,
   features=False)``; the conditions need the voxels and their classes only);
2. a whole ``LatentTileDataset`` sample (the structure latents plus the condition raster), from the
   rasters ``cache_latents`` stored (``cond_path``) against computing them from the tile and its
   views, for the semantic and the rgbd condition.

The tile is a surface two voxels thick over the whole footprint, with random features, random
structure latents on its L/8 cells and ``--views`` random views (the paper's 16 of 512 px).

    python benchmarks/bench_flow_data.py
    python benchmarks/bench_flow_data.py --L 64 360 --repeats 9
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def surface_tile(L: int, seed: int = 0):
    """A rolling surface two voxels thick over the whole L x L footprint (about 2 L^2 voxels)."""
    from earthcrafter.features.layout import FEATURE_LAYOUT, NUM_FEATURES, layout_to_json
    from earthcrafter.io.tiles import VoxelTile

    rng = np.random.default_rng(seed)
    i, j = np.meshgrid(np.arange(L), np.arange(L), indexing="ij")
    z = (L / 4 + L / 8 * np.sin(i / L * 6.0) * np.cos(j / L * 4.0)).astype(np.int64)
    coords = np.concatenate([np.stack([i.ravel(), j.ravel(), z.ravel() + dz], 1) for dz in (0, 1)]).astype(np.int32)
    n = len(coords)
    meta = {"scene_id": "bench", "biome": "synthetic", "L": L, "voxel_size_m": 200.0 / L, "origin_m": [0.0, 0.0, 0.0],
            "feature_layout": layout_to_json(FEATURE_LAYOUT), "counts": {}, "extra": {}}  # fmt: skip
    feats = rng.uniform(-1, 1, (n, NUM_FEATURES)).astype(np.float16)
    return VoxelTile(f"bench_L{L}", coords, feats, rng.integers(0, 8, n).astype(np.uint8), np.ones(n, np.float16), meta)


def random_views(n: int, px: int, size_m: float, seed: int = 0):
    """``n`` views over a tile of side ``size_m``: the first nadir, the others tilted; random colours,
    every pixel on the tile at a random depth."""
    from earthcrafter.geometry.cameras import intrinsics_from_fov, look_at
    from earthcrafter.io.tiles import TileViews

    rng = np.random.default_rng(seed)
    centre = np.array([size_m / 2, size_m / 2, 0.0])
    eyes = [centre + [0.01, 0, 1.5 * size_m]] + [centre + [size_m * np.cos(a), size_m * np.sin(a), size_m]
                                                   for a in np.linspace(0, 2 * np.pi, max(n - 1, 1), endpoint=False)]
    K = intrinsics_from_fov(px, px, 55)
    return TileViews(rng.integers(0, 256, (n, px, px, 3), dtype=np.uint8), np.ones((n, px, px), bool),
                     rng.uniform(size_m, 2 * size_m, (n, px, px)).astype(np.float32), np.stack([K] * n),
                     np.stack([look_at(e, centre) for e in eyes[:n]]), [f"v{i}" for i in range(n)])  # fmt: skip


def sample_costs(tile, tile_path: Path, views: int, px: int, repeats: int) -> list[str]:
    """Markdown rows: a dataset sample from the cached rasters vs from the tile and its views."""
    import pandas as pd

    from earthcrafter.io.latents import LatentTile, conditions_path, write_conditions, write_latent_tile
    from earthcrafter.io.tiles import tile_views_path, write_views
    from earthcrafter.training.conditions import RASTERS_VERSION, tile_rasters
    from earthcrafter.training.structfm import LatentTileDataset

    root, grid = tile_path.parent, tile.L // 8
    cells = np.unique(tile.coords // 8, axis=0).astype(np.int32)
    rng = np.random.default_rng(0)
    latents = LatentTile(tile.tile_id, "struct", cells, rng.normal(size=(len(cells), 32)).astype(np.float32),
                         np.zeros((len(cells), 32), np.float32),
                         {"scene_id": "bench", "L": tile.L, "stride": 8, "voxel_size_m": tile.voxel_size,
                          "origin_m": [0.0, 0.0, 0.0], "model": {}, "source": {}})  # fmt: skip
    struct_path = write_latent_tile(root / "struct" / f"{tile.tile_id}.parquet", latents)
    tv = random_views(views, px, tile.L * tile.voxel_size)
    write_views(tile_views_path(tile_path, tile.tile_id), tv)
    cond_path = write_conditions(conditions_path(root, tile.tile_id), grid, RASTERS_VERSION, tile_rasters(tile, tv, grid))
    row = {"tile_id": tile.tile_id, "split": "train", "tile_path": str(tile_path), "struct_path": str(struct_path)}
    stats = {"mean": [0.0] * 32, "std": [1.0] * 32}
    rows = []
    for condition in ("semantic", "rgbd"):
        sets = {cached: LatentTileDataset(pd.DataFrame([{**row, **({"cond_path": str(cond_path)} if cached else {})}]),
                                          stats, "train", grid, condition=condition) for cached in (True, False)}  # fmt: skip
        times: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(repeats):
            for cached, data in sets.items():
                t0 = time.perf_counter()
                data[0]
                times[cached].append(time.perf_counter() - t0)
        fresh, cached = statistics.median(times[False]), statistics.median(times[True])
        rows.append(f"| {tile.L} | {condition} | {fresh * 1e3:.1f} ms | {cached * 1e3:.1f} ms | {fresh / cached:.1f}x |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--L", type=int, nargs="+", default=[64, 360])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--views", type=int, default=16, help="views per tile (paper: 16)")
    ap.add_argument("--px", type=int, default=512, help="view side in pixels (paper: 512)")
    args = ap.parse_args()

    from earthcrafter.io.tiles import read_tile, write_tile

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print("| L | voxels | file | read_tile (all columns) | features=False | speed-up |")
    print("|--:|--:|--:|--:|--:|--:|")
    samples = []
    with tempfile.TemporaryDirectory() as tmp:
        for L in args.L:
            tile = surface_tile(L)
            path = write_tile(Path(tmp) / f"{tile.tile_id}.parquet", tile)
            samples += sample_costs(tile, path, args.views, args.px, args.repeats)
            times: dict[bool, list[float]] = {True: [], False: []}
            for _ in range(args.repeats):
                for features in (True, False):  # alternate, so drift in the machine's load hits both
                    t0 = time.perf_counter()
                    read_tile(path, features=features)
                    times[features].append(time.perf_counter() - t0)
            full, light = statistics.median(times[True]), statistics.median(times[False])
            print(f"| {L} | {len(tile):,} | {path.stat().st_size / 2**20:.1f} MiB | {full * 1e3:.1f} ms "
                  f"| {light * 1e3:.1f} ms | {full / light:.1f}x |")
    print(f"\nLatentTileDataset sample ({args.views} views of {args.px} px)")
    print("| L | condition | rasters from the tile and views | cached rasters | speed-up |")
    print("|--:|---|--:|--:|--:|")
    print("\n".join(samples))


if __name__ == "__main__":
    main()
