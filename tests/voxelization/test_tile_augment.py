import itertools

import numpy as np
import pytest

from earthcrafter.geometry.augment import GridTransform, crop_views, random_voxel_crop


def _project(centres, E, K):
    cam = centres @ E[:3, :3].T + E[:3, 3]
    return cam[:, 0] / cam[:, 2] * K[0, 0] + K[0, 1] * cam[:, 1] / cam[:, 2] + K[0, 2], cam[:, 1] / cam[:, 2] * K[1, 1] + K[1, 2], cam[:, 2]


def test_random_crop_keeps_a_full_column_box_under_the_cap():
    rng = np.random.default_rng(0)
    coords = np.unique(rng.integers(0, 64, (20000, 3)), axis=0)
    for seed in range(5):
        keep, offset = random_voxel_crop(coords, 3000, np.random.default_rng(seed))
        assert 1500 < len(keep) <= 3000
        kept = coords[keep]
        np.testing.assert_array_equal(offset, kept.min(0))
        lo, hi = kept[:, :2].min(0), kept[:, :2].max(0)
        in_box = ((coords[:, :2] >= lo) & (coords[:, :2] <= hi)).all(1)
        np.testing.assert_array_equal(np.sort(np.flatnonzero(in_box)), np.sort(keep))  # every voxel of the box, all z
    keep, offset = random_voxel_crop(coords[:100], 3000, rng)
    assert len(keep) == 100 and not offset.any()
    column = np.stack([np.zeros(50), np.zeros(50), np.arange(50)], 1).astype(int)
    keep, _ = random_voxel_crop(column, 20, rng)
    np.testing.assert_array_equal(np.sort(column[keep, 2]), np.arange(20))
    with pytest.raises(ValueError):
        random_voxel_crop(coords, 0, rng)


def test_crop_views_shift_cameras_and_narrow_masks(vox_result):
    tile, views = vox_result.tiles[3], vox_result.views[3]
    keep, offset = random_voxel_crop(tile.coords, len(tile) // 4, np.random.default_rng(1))
    size = tile.coords[keep].max(0) - offset + 1
    cropped = crop_views(views, offset, size, tile.voxel_size)
    before = tile.centers_local()[keep]
    after = (tile.coords[keep] - offset + 0.5) * tile.voxel_size
    for v in range(len(views)):
        for a, b in zip(_project(before, views.world_to_camera[v], views.K[v]), _project(after, cropped.world_to_camera[v], cropped.K[v])):
            np.testing.assert_allclose(a, b, atol=1e-6)
    assert (cropped.mask <= views.mask).all() and cropped.mask.sum() < 0.8 * views.mask.sum()
    assert cropped.mask.sum() > 0


@pytest.mark.parametrize("flip_x,flip_y,rot", list(itertools.product([False, True], [False, True], range(4))))
def test_grid_transforms_keep_every_voxel_on_its_pixel(vox_result, flip_x, flip_y, rot):
    tile, views = vox_result.tiles[0], vox_result.views[0]
    T = GridTransform.make(flip_x, flip_y, rot)
    L, s = tile.L, tile.voxel_size
    new = T.coords(tile.coords, L)
    assert new.min() >= 0 and new.max() < L and len(np.unique(new, axis=0)) == len(new)
    M = T.matrix(L, s)
    np.testing.assert_allclose(tile.centers_local() @ M[:3, :3].T + M[:3, 3], (new + 0.5) * s, atol=1e-9)
    out = T.views(views, L, s)
    w = views.rgb.shape[2]
    for v in range(len(views)):
        R = out.world_to_camera[v, :3, :3]
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-9)
        assert np.linalg.det(R) == pytest.approx(1.0)
        u0, v0, z0 = _project(tile.centers_local(), views.world_to_camera[v], views.K[v])
        u1, v1, z1 = _project((new + 0.5) * s, out.world_to_camera[v], out.K[v])
        np.testing.assert_allclose(z1, z0, atol=1e-6)
        np.testing.assert_allclose(v1, v0, atol=1e-6)
        np.testing.assert_allclose(u1, w - u0 if T.mirrors else u0, atol=1e-6)
        ok = (u0 >= 0) & (u0 < w) & (v0 >= 0) & (v0 < views.rgb.shape[1])
        ok &= (np.abs(u0 - np.round(u0)) > 1e-4) & (np.abs(v0 - np.round(v0)) > 1e-4)  # off pixel edges
        r, c0, c1 = v0[ok].astype(int), u0[ok].astype(int), u1[ok].astype(int)
        np.testing.assert_array_equal(out.rgb[v][r, c1], views.rgb[v][r, c0])  # same image content
        np.testing.assert_array_equal(out.mask[v][r, c1], views.mask[v][r, c0])
    assert T.mirrors == (flip_x != flip_y)


def test_grid_transform_rotates_normals_only(vox_result):
    tile = vox_result.tiles[0]
    T = GridTransform.make(flip_x=True, rot90=1)
    f = T.feats(tile.feats, tile.layout)
    n = tile.feats[:, tile.layout["f_n"]].astype(np.float32)
    np.testing.assert_allclose(f[:, tile.layout["f_n"]].astype(np.float32), n @ T.A.T, atol=1e-3)
    np.testing.assert_array_equal(f[:, :63], tile.feats[:, :63])
    # a flip undoes itself
    F = GridTransform.make(flip_y=True)
    np.testing.assert_array_equal(F.coords(F.coords(tile.coords, 32), 32), tile.coords)
    a = GridTransform.random(np.random.default_rng(5))
    b = GridTransform.random(np.random.default_rng(5))
    np.testing.assert_array_equal(a.A, b.A)
