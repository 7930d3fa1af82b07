"""Benchmark: reading a voxel tile for the flows' conditions, with and without its feature column.

StructFM and TexFM need a tile's voxels and classes (the semantic layout, the RGBD raster's frame),
not its 66 feature channels, which are most of the file. With ``data.cache_tiles: false`` (conf/paper)
every draw reads its tile again, so this read is on the training path. A heightfield-like tile
(ground two voxels thick, random features in the 66-channel layout) is written at L = 64 and L = 360;
``read_tile(path)`` and ``read_tile(path, features=False)`` then alternate on it.

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--L", type=int, nargs="+", default=[64, 360])
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()

    from earthcrafter.io.tiles import read_tile, write_tile

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print("| L | voxels | file | read_tile (all columns) | features=False | speed-up |")
    print("|--:|--:|--:|--:|--:|--:|")
    with tempfile.TemporaryDirectory() as tmp:
        for L in args.L:
            tile = surface_tile(L)
            path = write_tile(Path(tmp) / f"{tile.tile_id}.parquet", tile)
            times: dict[bool, list[float]] = {True: [], False: []}
            for _ in range(args.repeats):
                for features in (True, False):  # alternate, so drift in the machine's load hits both
                    t0 = time.perf_counter()
                    read_tile(path, features=features)
                    times[features].append(time.perf_counter() - t0)
            full, light = statistics.median(times[True]), statistics.median(times[False])
            print(f"| {L} | {len(tile):,} | {path.stat().st_size / 2**20:.1f} MiB | {full * 1e3:.1f} ms "
                  f"| {light * 1e3:.1f} ms | {full / light:.1f}x |")


if __name__ == "__main__":
    main()
