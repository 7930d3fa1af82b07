"""Benchmark: what a TexVAE training sample costs its loader worker at paper scale.

conf/paper trains the TexVAE with ``data.cache_tiles: false``: every draw reads its tile (66 float16
feature channels per voxel) and its 16 views of 512 px again, crops it to the 250k-voxel budget,
narrows the views' masks to the crop and keeps two views. Each measurement runs against its
baseline side by side on the same data, alternating, median of ``--repeats``:

1. ``read_tile`` of the same tile written with a dictionary on every column (pyarrow's default, the
   earlier writer) and with dictionaries on the integer columns only (``write_table_with_meta``);
2. a whole ``TexVAEDataset`` sample at conf/paper's data settings, against a reference dataset that
   does what the loader did before: the dictionary-encoded tile, every view narrowed to the crop
   before two are chosen (``crop_views``), and the features cast to float32. The pickled size of
   the sample is what a loader worker puts through shared memory.

The tile is a surface two voxels thick over the whole footprint with random features (as in
``bench_flow_data.py``), and random views that all see it.

    python benchmarks/bench_texvae_data.py
    python benchmarks/bench_texvae_data.py --L 128 360 --repeats 9
"""

from __future__ import annotations

import argparse
import os
import pickle
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_flow_data import random_views, surface_tile  # noqa: E402


def reference_dataset_class():
    """TexVAEDataset as the loader was before: all views narrowed first, float32 features."""
    from earthcrafter.geometry.augment import crop_views
    from earthcrafter.models.tex_vae_data import TexVAEDataset

    class Reference(TexVAEDataset):
        def _load(self, index):
            t = super()._load(index)
            t.feats = t.feats.astype(np.float32)
            return t

        def _choose_views(self, views, box, voxel_size, rng):
            if box is not None:  # only the narrowed masks are kept, as before
                views = crop_views(views, box[0], box[1], voxel_size)
            threshold = max(self.config.min_view_coverage, 1e-12)
            usable = np.flatnonzero(views.mask.reshape(len(views), -1).mean(axis=1) >= threshold)
            k = self.config.views_per_sample or len(usable)
            chosen = np.sort(rng.permutation(usable)[:k])
            return chosen, views.mask[chosen]

    return Reference


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--L", type=int, nargs="+", default=[360])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--views", type=int, default=16, help="views per tile (paper: 16)")
    ap.add_argument("--px", type=int, default=512, help="view side in pixels (paper: 512)")
    args = ap.parse_args()

    from earthcrafter.io.tiles import read_tile, tile_views_path, write_tile, write_views
    from earthcrafter.models.tex_vae_data import TexVAEDataConfig, TexVAEDataset
    from earthcrafter.training.sampler import Draw

    Reference = reference_dataset_class()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    reads, samples = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for L in args.L:
            tile = surface_tile(L)
            plain = write_tile(Path(tmp) / "plain" / f"{tile.tile_id}.parquet", tile)
            dictionary = Path(tmp) / "dictionary" / plain.name
            dictionary.parent.mkdir(exist_ok=True)
            pq.write_table(pq.read_table(plain), dictionary, compression="zstd")  # every column dictionary-encoded
            tv = random_views(args.views, args.px, L * tile.voxel_size)
            for path in (plain, dictionary):
                write_views(tile_views_path(path, tile.tile_id), tv)

            times: dict[Path, list[float]] = {plain: [], dictionary: []}
            for _ in range(args.repeats):
                for path in (dictionary, plain):  # alternate, so drift in the machine's load hits both
                    t0 = time.perf_counter()
                    read_tile(path)
                    times[path].append(time.perf_counter() - t0)
            before, after = statistics.median(times[dictionary]), statistics.median(times[plain])
            reads.append(f"| {L} | {len(tile):,} | {dictionary.stat().st_size / 2**20:.1f} MiB, {before * 1e3:.0f} ms "
                         f"| {plain.stat().st_size / 2**20:.1f} MiB, {after * 1e3:.0f} ms | {before / after:.1f}x |")

            config = TexVAEDataConfig(max_voxels=250_000, crop_size=None, view_width=args.px, views_per_sample=2,
                                      cache_tiles=False)  # conf/paper's train_texvae.data
            sets = {}
            for name, cls, path in (("reference", Reference, dictionary), ("now", TexVAEDataset, plain)):
                manifest = pd.DataFrame([{"tile_id": tile.tile_id, "path": str(path), "split": "train"}])
                sets[name] = cls(manifest, split="train", features="f_feat", config=config, augment=True)
            times = {name: [] for name in sets}
            size = {}
            for r in range(args.repeats):
                for name, data in sets.items():
                    t0 = time.perf_counter()
                    sample = data[Draw(0, (r, 0))]
                    times[name].append(time.perf_counter() - t0)
                    size[name] = len(pickle.dumps(sample, protocol=pickle.HIGHEST_PROTOCOL))
            before, after = statistics.median(times["reference"]), statistics.median(times["now"])
            mib = {name: f"{n / 2**20:.0f} MiB" for name, n in size.items()}
            samples.append(f"| {L} | {len(sample.coords):,} | {before * 1e3:.0f} ms, {mib['reference']} "
                           f"| {after * 1e3:.0f} ms, {mib['now']} | {before / after:.1f}x |")
    print("\nread_tile, the same tile written two ways")
    print("| L | voxels | dictionary on every column | integer columns only | speed-up |")
    print("|--:|--:|--:|--:|--:|")
    print("\n".join(reads))
    print(f"\nTexVAEDataset sample (conf/paper data: 250k-voxel budget, 2 of {args.views} views of {args.px} px)")
    print("| L | voxels | before: time, pickled | now: time, pickled | speed-up |")
    print("|--:|--:|--:|--:|--:|")
    print("\n".join(samples))


if __name__ == "__main__":
    main()
