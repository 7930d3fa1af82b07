"""Tile pixels hidden behind off-tile geometry: a constructed occlusion, and the fast splat
against the voxel-by-voxel loop on real tiles and crops."""

import numpy as np

from earthcrafter.geometry.augment import crop_views, random_voxel_crop
from earthcrafter.geometry.visibility import hidden_tile_pixels, hidden_tile_pixels_reference
from earthcrafter.io.tiles import TileViews

SIZE, F, HEIGHT = 64, 25.0, 50.0  # image px, focal px, camera height over a 16 x 16 m ground tile


def _nadir_views(depth: np.ndarray, mask: np.ndarray) -> TileViews:
    """One camera looking straight down from (8, 8, 50) in the tile-local frame."""
    R = np.diag([1.0, -1.0, -1.0])
    E = np.eye(4)
    E[:3, :3], E[:3, 3] = R, -R @ np.array([8.0, 8.0, HEIGHT])
    K = np.array([[F, 0, SIZE / 2], [0, F, SIZE / 2], [0, 0, 1]])
    rgb = np.zeros((1, SIZE, SIZE, 3), np.uint8)
    return TileViews(rgb, mask[None], depth[None].astype(np.float32), K[None], E[None], ["nadir"])


def test_an_occluder_outside_the_tile_hides_exactly_the_ground_behind_it():
    coords = np.stack(np.meshgrid(np.arange(16), np.arange(16), [0], indexing="ij"), -1).reshape(-1, 3)
    z_ground = HEIGHT - 0.5  # the ground runs through the voxel centres
    centre = np.arange(SIZE) + 0.5 - SIZE / 2
    x = 8.0 + centre[None, :] / F * z_ground  # ground point under each pixel (rows: -y)
    y = 8.0 - centre[:, None] / F * z_ground
    inside = (x >= 0) & (x < 16) & (y >= 0) & (y < 16)
    band = np.zeros((SIZE, SIZE), bool)
    band[28:36] = True  # something tall outside the tile, seen in front of it in these rows
    depth = np.where(band, 20.0, z_ground)
    views = _nadir_views(depth, inside & ~band)

    hidden = hidden_tile_pixels(views, coords, 1.0)[0]
    interior = (x > 0.5) & (x < 15.5) & (y > 0.5) & (y < 15.5)
    assert hidden[band & interior].all()  # the ground behind the occluder: unknown
    assert not hidden[~band].any()  # tile pixels, and background beside the tile, are known
    assert not hidden[band & ~((x > -1) & (x < 17) & (y > -1) & (y < 17))].any()  # nothing behind
    # no occluder: where the mask is off but the depth is the tile's own ground, nothing is hidden
    assert not hidden_tile_pixels(_nadir_views(np.full((SIZE, SIZE), z_ground), inside & ~band), coords, 1.0).any()
    np.testing.assert_array_equal(hidden, hidden_tile_pixels_reference(views, coords, 1.0)[0])


def test_fast_splat_matches_the_voxel_loop_on_tiles_and_crops(vox_result):
    checked = 0
    for tile, views in zip(vox_result.tiles[:3], vox_result.views[:3]):
        coords = tile.coords
        keep, offset = random_voxel_crop(coords, len(coords) // 3, np.random.default_rng(0))
        sub = coords[keep] - offset
        cropped = crop_views(views, offset, sub.max(0) + 1, tile.voxel_size)
        for c, v in ((coords, views), (sub, cropped)):
            fast = hidden_tile_pixels(v, c, tile.voxel_size)
            np.testing.assert_array_equal(fast, hidden_tile_pixels_reference(v, c, tile.voxel_size))
            assert not (fast & v.mask).any()
            checked += int(fast.sum())
    assert checked > 0  # the crops hide some of their voxels behind the rest of the tile
