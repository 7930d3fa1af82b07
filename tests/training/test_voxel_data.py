"""Voxel tile dataset: manifest checks, budget crops, flips, quarter turns, sub-cell shifts,
seeded determinism."""

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
    missing_files,
    random_window,
    rows_fingerprint,
    split_rows,
    subcell_shift,
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


def test_train_fraction_keeps_evenly_spaced_training_tiles_only(tmp_path):
    """Table 3's "ablation" dataset: a fraction of the training tiles spread over the whole split
    (first and last kept), validation untouched; the subset is part of the training set's identity."""
    man, read = memory_tiles(tmp_path, 16, 12, 3)
    quarter = VoxelDataConfig(train_fraction=0.25)
    assert split_rows(man, "train", quarter)["tile_id"].tolist() == ["t000", "t006", "t011"]
    assert len(split_rows(man, "val", quarter)) == 3
    assert len(split_rows(man, "train", VoxelDataConfig(train_fraction=0.01))) == 1  # never empty
    assert len(split_rows(man, "train", VoxelDataConfig())) == 12
    both = VoxelDataConfig(train_fraction=0.5, max_val_tiles=2)
    assert len(split_rows(man, "train", both)) == 6 and split_rows(man, "val", both)["tile_id"].tolist() == ["t012", "t014"]
    full = VoxelTileDataset(man, read, split="train", L=16, config=VoxelDataConfig())
    part = VoxelTileDataset(man, read, split="train", L=16, config=quarter)
    assert len(part) == 3 and part.fingerprint() != full.fingerprint()
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="train_fraction"):
            VoxelDataConfig(train_fraction=bad)


def test_missing_files_and_fingerprint_match_a_stat_per_file(tmp_path):
    """The listing-based existence check and the fingerprint agree with the one-stat-per-file
    reference: absent files, folders and non-files are missing; sizes are hashed in tile order."""
    import hashlib

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "dir.parquet").mkdir()
    for i, size in enumerate((3, 5, 7)):
        (tmp_path / "a" / f"t{i}.parquet").write_bytes(b"x" * size)
    paths = [tmp_path / "a" / f"t{i}.parquet" for i in range(4)] + [tmp_path / "a" / "dir.parquet",
                                                                    tmp_path / "gone" / "t9.parquet"]  # fmt: skip
    assert missing_files(paths) == [str(p) for p in paths if not p.is_file()]
    rows = pd.DataFrame({"tile_id": ["t2", "t0", "t1"], "path": [str(tmp_path / "a" / f"t{i}.parquet") for i in (2, 0, 1)],
                         "extra": ["", str(tmp_path / "a" / "t0.parquet"), str(tmp_path / "a" / "t2.parquet")]})  # fmt: skip
    h = hashlib.sha256()
    for _, r in rows.sort_values("tile_id").iterrows():
        sizes = [str(Path(r[c]).stat().st_size) if r[c] else "-" for c in ("path", "extra")]
        h.update(f"{r['tile_id']}|{'|'.join(sizes)}\n".encode())
    assert rows_fingerprint(rows, ("path", "extra")) == h.hexdigest()
    rel = pd.DataFrame({"tile_id": ["t0"], "split": ["train"], "path": ["a/t0.parquet"], "cond_path": ["a/none.npz"]})
    out = check_manifest(rel, "train", root=tmp_path, optional_path_columns=("cond_path", "not_there"))
    assert out["cond_path"].iloc[0] == str(tmp_path / "a" / "none.npz")  # resolved, may be absent
    blank = pd.concat([rel] * 3, ignore_index=True).assign(cond_path=["", None, float("nan")])
    assert check_manifest(blank, "train", root=tmp_path, optional_path_columns=("cond_path",))["cond_path"].tolist() == [""] * 3


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


def test_subcell_shift_stays_inside_and_moves_only_where_there_is_room():
    rng = np.random.default_rng(0)
    c = np.array([[0, 3, 20], [63, 10, 30]], dtype=np.int64)  # x spans the tile: no room
    seen = set()
    for _ in range(200):
        out = subcell_shift(c, 64, rng)
        t = out[0] - c[0]
        assert (out - c == t).all()  # one rigid offset
        assert t[0] == 0 and -3 <= t[1] <= 7 and -7 <= t[2] <= 7
        assert out.min() >= 0 and out.max() < 64
        seen.add(tuple(t))
    ys, zs = {t[1] for t in seen}, {t[2] for t in seen}
    assert ys == set(range(-3, 8)) and zs == set(range(-7, 8))  # every room-limited offset occurs


def _dihedral_grids(coords: np.ndarray, L: int) -> list[np.ndarray]:
    """The 8 images of a tile under quarter turns and flips of x / y, as dense grids (np.rot90 /
    slicing: a reference independent of GridTransform)."""
    g = np.zeros((L, L, L), bool)
    g[tuple(coords.T)] = True
    out = []
    for k in range(4):
        r = np.rot90(g, k, axes=(0, 1))
        for img in (r, r[::-1], r[:, ::-1], r[::-1, ::-1]):
            if not any(np.array_equal(img, o) for o in out):
                out.append(np.ascontiguousarray(img))
    return out


def test_turns_give_crops_of_the_eight_symmetric_tiles_and_shifts_move_them_rigidly(tmp_path):
    L = 32
    man, read = memory_tiles(tmp_path, L, 1, 1)
    full = np.asarray(read(man.at[0, "path"]).coords, np.int64)
    images = _dihedral_grids(full, L)
    assert len(images) == 8
    turned_cfg = VoxelDataConfig(crop_size=16, flip=True, rotate=True)
    turned = VoxelTileDataset(man, read, split="train", L=L, config=turned_cfg, augment=True)
    shifted_cfg = turned_cfg.model_copy(update={"subcell_shift": True})
    shifted = VoxelTileDataset(man, read, split="train", L=L, config=shifted_cfg, augment=True)
    used_images, offsets = set(), []
    for k in range(32):
        a = turned[Draw(0, (0, k))].coords.numpy().astype(np.int64)
        hits = [i for i, img in enumerate(images) if img[tuple(a.T)].all()]
        assert hits, f"draw {k} is no crop of a symmetric image of the tile"
        used_images.update(hits)
        # the shift is drawn last: the same draw with it is the same crop, moved by one offset
        b = shifted[Draw(0, (0, k))].coords.numpy().astype(np.int64)
        assert b.shape == a.shape and b.min() >= 0 and b.max() < L  # no voxel lost, none outside
        t = b - a  # both sorted by (x, y, z), which a rigid shift keeps
        assert (t == t[0]).all() and (np.abs(t[0]) <= 7).all()
        offsets.append(t[0])
    assert len(used_images) >= 6  # turns reach images that flips alone cannot
    offsets = np.array(offsets)
    for axis in range(3):
        assert len(set(offsets[:, axis] % 8)) >= 5, f"axis {axis} offsets {sorted(set(offsets[:, axis]))}"


def test_flips_without_turns_or_shifts_draw_as_before(tmp_path):
    # Runs configured before `rotate` / `subcell_shift` existed keep their exact samples.
    L = 32
    man, read = memory_tiles(tmp_path, L, 1, 1)
    cfg = VoxelDataConfig(crop_size=16, flip=True)
    ds = VoxelTileDataset(man, read, split="train", L=L, config=cfg, augment=True)
    full = np.asarray(read(man.at[0, "path"]).coords, np.int64)
    for k in range(6):
        rng = np.random.default_rng([0, k])
        c = full[random_window(full, 16, L, rng)]
        c = c[crop_to_budget(c, cfg.max_voxels, rng)]
        for axis in (0, 1):
            if rng.random() < 0.5:
                c[:, axis] = L - 1 - c[:, axis]
        assert _set(ds[Draw(0, (0, k))].coords) == _set(c)
