"""Voxel tile dataset: manifest checks, budget crops, flips, seeded determinism."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "struct_vae"))
from synthetic import memory_tiles, scene_coords  # noqa: E402

from earthcrafter.training import Draw  # noqa: E402
from earthcrafter.training.voxel_data import (  # noqa: E402
    VoxelDataConfig,
    VoxelTileDataset,
    check_manifest,
    crop_to_budget,
    random_window,
)


def _set(c) -> set:
    return {tuple(r) for r in np.asarray(c).tolist()}


def test_manifest_errors_name_the_problem(tmp_path):
    man, _ = memory_tiles(tmp_path, 16, 2, 1)
    with pytest.raises(ValueError, match="lacks column"):
        check_manifest(man.drop(columns=["path"]), "train")
    with pytest.raises(ValueError, match=r"no tiles in split 'test'.*'train': 2"):
        check_manifest(man, "test")
    gone = man.copy()
    Path(gone.at[1, "path"]).unlink()
    with pytest.raises(FileNotFoundError, match="1 tile file\\(s\\) missing: .*t001.parquet"):
        check_manifest(gone, "train")
    rel = man.assign(path=[Path(p).name for p in man["path"]])
    assert check_manifest(rel, "val", root=tmp_path)["path"].iloc[0] == str(tmp_path / "t002.parquet")


def test_tile_resolution_mismatch_is_reported(tmp_path):
    man, read = memory_tiles(tmp_path, 16, 1, 1)
    ds = VoxelTileDataset(man, read, split="train", L=32)
    with pytest.raises(ValueError, match=r"t000.parquet: meta L=16 but the model is configured for L=32"):
        ds[0]


def test_crop_to_budget_keeps_whole_columns_within_budget():
    c = scene_coords(32, 0).astype(np.int64)
    rng = np.random.default_rng(0)
    for budget in (50, 300, 1000):
        m = crop_to_budget(c, budget, rng)
        assert 0 < m.sum() <= budget
        kept_cols = {tuple(r) for r in c[m, :2].tolist()}
        assert all(tuple(r[:2]) not in kept_cols for r in c[~m].tolist())  # columns are never split
    assert crop_to_budget(c, len(c), rng).all()


def test_random_window_is_aligned_and_nonempty():
    c = scene_coords(32, 1).astype(np.int64)
    rng = np.random.default_rng(1)
    for _ in range(20):
        m = random_window(c, 16, 32, rng)
        assert m.any()
        lo = c[m, :2].min(0)
        assert (c[m, :2].max(0) - (lo // 8) * 8 < 16).all()


def test_draws_are_deterministic_and_augment(tmp_path):
    man, read = memory_tiles(tmp_path, 32, 1, 1)
    cfg = VoxelDataConfig(max_voxels=400, flip=True)
    ds = VoxelTileDataset(man, read, split="train", L=32, config=cfg, augment=True)
    a, b = ds[Draw(0, (0, 7))], ds[Draw(0, (0, 7))]
    assert np.array_equal(a.coords, b.coords) and a.seed == b.seed
    outs = {tuple(map(tuple, ds[Draw(0, (0, k))].coords.tolist())) for k in range(12)}
    assert len(outs) > 1 and all(len(o) <= 400 for o in outs)
    full = _set(read(man.at[0, "path"]).coords)
    flips = [{(x, y, z) for x, y, z in full}, {(31 - x, y, z) for x, y, z in full},
             {(x, 31 - y, z) for x, y, z in full}, {(31 - x, 31 - y, z) for x, y, z in full}]
    for k in range(8):
        s = _set(ds[Draw(0, (0, k))].coords)
        assert any(s <= f for f in flips)  # a crop of one of the four flipped tiles
    val = VoxelTileDataset(man, read, split="val", L=32, config=VoxelDataConfig(flip=True))
    v = val[0]
    assert _set(v.coords) == _set(read(man.at[1, "path"]).coords)  # validation: untouched
    coords = v.coords.numpy()
    assert (np.lexsort(coords.T[::-1]) == np.arange(len(coords))).all()  # sorted by (x, y, z)
