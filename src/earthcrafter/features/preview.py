"""Quick looks at voxel tiles: splat voxel centres into a tile view's camera.

Each voxel is drawn as a square of its projected size with a z-buffer, so a tile can be set
beside the frame it came from (used for documentation figures and debugging camera transforms).
"""

from __future__ import annotations

import numpy as np

from earthcrafter.semantics import colorize


def splat_voxels(
    coords: np.ndarray,
    colors: np.ndarray,
    K: np.ndarray,
    world_to_camera: np.ndarray,
    voxel_size: float,
    height: int,
    width: int,
    background=(255, 255, 255),
) -> np.ndarray:
    """Render voxels (ijk [N, 3], colours uint8 [N, 3]) seen by a tile-local camera -> uint8 [h, w, 3]."""
    centres = (np.asarray(coords, np.float64) + 0.5) * voxel_size
    cam = np.einsum("ij,kj->ik", centres, world_to_camera[:3, :3]) + world_to_camera[:3, 3]
    z = cam[:, 2]
    front = z > 1e-6
    cam, z, colors = cam[front], z[front], np.asarray(colors)[front]
    u = cam[:, 0] / z * K[0, 0] + K[0, 2]
    v = cam[:, 1] / z * K[1, 1] + K[1, 2]
    # a cube seen at an angle covers up to sqrt(3) times its face; pad so neighbours leave no gaps
    half = 0.5 * np.sqrt(3) * voxel_size * max(K[0, 0], K[1, 1]) / z + 0.5
    r = int(np.ceil(half.max())) if len(half) else 0
    zbuf = np.full(height * width, np.inf)
    best = np.full(height * width, -1, np.int64)
    ids = np.arange(len(z))
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            ok = (np.abs(dx) <= half) & (np.abs(dy) <= half)
            px = np.floor(u + dx).astype(np.int64)
            py = np.floor(v + dy).astype(np.int64)
            ok &= (px >= 0) & (px < width) & (py >= 0) & (py < height)
            pix = py[ok] * width + px[ok]
            np.minimum.at(zbuf, pix, z[ok])
            win = z[ok] <= zbuf[pix]
            best[pix[win]] = ids[ok][win]
    img = np.empty((height * width, 3), np.uint8)
    img[:] = background
    hit = best >= 0
    img[hit] = colors[best[hit]]
    return img.reshape(height, width, 3)


def tile_colors(tile, mode: str) -> np.ndarray:
    """Per-voxel uint8 colours of a :class:`~earthcrafter.io.tiles.VoxelTile`: ``class`` (palette)
    or ``rgb`` (the centre pixel of f_rgb)."""
    if mode == "class":
        return colorize(tile.semantic)
    if mode == "rgb":
        centre = tile.feats[:, tile.layout["f_rgb"]][:, :3].astype(np.float32)
        return (np.clip(centre, 0, 1) * 255).round().astype(np.uint8)
    raise ValueError(f"tile_colors: mode must be 'class' or 'rgb', got {mode!r}")
