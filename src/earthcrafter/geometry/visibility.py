"""Which view pixels a render of one tile alone cannot match: tile surfaces hidden behind
geometry outside the tile.

A tile's ground-truth views are photos of the whole scene. A pixel whose first surface lies in
the tile shows the tile (its mask); a pixel whose first surface lies outside shows something
else — and a render of the tile's voxels alone is right to leave it empty *unless* tile
geometry lies further along the same ray, hidden in the photo by a building or a crown outside
the tile (or outside a training crop). There the photo cannot say what the tile looks like, and
a render of the tile alone must draw the hidden surface: such pixels are unknown, not
background, and a loss that calls them background teaches surfels to vanish from views in
which they are occluded.

:func:`hidden_tile_pixels` finds them by splatting every voxel's depth into the view (the
nearest point of its bounding sphere, over its projected footprint) and comparing it with the
view's depth map; :func:`hidden_tile_pixels_reference` marches the same test voxel by voxel.
"""

from __future__ import annotations

import numpy as np

from earthcrafter.geometry.cameras import Camera
from earthcrafter.io.tiles import TileViews

HALF_DIAGONAL = 0.5 * np.sqrt(3.0)  # bounding-sphere radius of a unit cube


def _project(coords: np.ndarray, voxel_size: float, views: TileViews, i: int) -> tuple[np.ndarray, ...]:
    """Voxel centres -> (u, v, z, footprint radius in pixels) in view ``i``; z is the camera depth."""
    h, w = views.mask.shape[1:]
    camera = Camera(views.K[i], views.world_to_camera[i], w, h)
    uv, z = camera.project((coords.astype(np.float64) + 0.5) * voxel_size)
    with np.errstate(divide="ignore", invalid="ignore"):
        radius = HALF_DIAGONAL * voxel_size * np.abs(np.diag(camera.K)[:2]).max() / z
    return uv[:, 0], uv[:, 1], z, radius


def hidden_tile_pixels(
    views: TileViews, coords: np.ndarray, voxel_size: float, max_radius_px: int = 8
) -> np.ndarray:
    """[V, h, w] bool: pixels outside the mask behind whose first surface (the depth map) tile
    voxels ``coords`` [N, 3] (in the views' tile-local frame) lie.

    A voxel hides behind a pixel when the nearest point of its bounding sphere is deeper than
    the pixel's depth by more than ``voxel_size`` (the depth map and the voxels disagree by up
    to a voxel at surfaces they share). Footprints are capped at ``max_radius_px``.
    """
    V, h, w = views.mask.shape
    out = np.zeros((V, h, w), bool)
    if not len(coords):
        return out
    for i in range(V):
        u, v, z, r = _project(coords, voxel_size, views, i)
        front = np.isfinite(u) & np.isfinite(v) & (z > 0)
        u, v, near, r = u[front], v[front], (z - HALF_DIAGONAL * voxel_size)[front], r[front]
        deepest = np.full(h * w, -np.inf)
        R = int(min(np.ceil(r.max()) if len(r) else 0, max_radius_px))
        for dy in range(-R, R + 1):
            for dx in range(-R, R + 1):
                col = np.floor(u + dx).astype(np.int64)
                row = np.floor(v + dy).astype(np.int64)
                ok = (col >= 0) & (col < w) & (row >= 0) & (row < h) & (np.hypot(dx, dy) <= np.maximum(r, 0.5))
                np.maximum.at(deepest, row[ok] * w + col[ok], near[ok])
        depth = views.depth[i].astype(np.float64).ravel()
        with np.errstate(invalid="ignore"):
            behind = np.isfinite(depth) & (deepest > depth + voxel_size)
        out[i] = behind.reshape(h, w) & ~views.mask[i]
    return out


def hidden_tile_pixels_reference(
    views: TileViews, coords: np.ndarray, voxel_size: float, max_radius_px: int = 8
) -> np.ndarray:
    """Voxel-by-voxel loop of the same test, for checking :func:`hidden_tile_pixels`."""
    V, h, w = views.mask.shape
    out = np.zeros((V, h, w), bool)
    for i in range(V):
        u, v, z, r = _project(coords, voxel_size, views, i)
        R = int(min(np.ceil(np.nanmax(np.where(z > 0, r, 0.0))) if len(r) else 0, max_radius_px))
        for k in range(len(coords)):
            if not (z[k] > 0 and np.isfinite(u[k]) and np.isfinite(v[k])):
                continue
            for dy in range(-R, R + 1):
                for dx in range(-R, R + 1):
                    if np.hypot(dx, dy) > max(r[k], 0.5):
                        continue
                    col, row = int(np.floor(u[k] + dx)), int(np.floor(v[k] + dy))
                    if not (0 <= col < w and 0 <= row < h) or views.mask[i, row, col]:
                        continue
                    d = float(views.depth[i, row, col])
                    if np.isfinite(d) and z[k] - HALF_DIAGONAL * voxel_size > d + voxel_size:
                        out[i, row, col] = True
    return out
