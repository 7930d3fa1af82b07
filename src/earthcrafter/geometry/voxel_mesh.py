"""Voxels as a triangle mesh of their exposed cube faces, for viewers (MeshLab, Blender)."""

from __future__ import annotations

import numpy as np

from earthcrafter.io.scene import Mesh

# per axis direction: the 4 corners (unit cube offsets) of the face on that side, counter-clockwise
# seen from outside, so face normals point out of the voxel
_FACES = {
    (1, 0, 0): ((1, 0, 0), (1, 1, 0), (1, 1, 1), (1, 0, 1)),
    (-1, 0, 0): ((0, 0, 0), (0, 0, 1), (0, 1, 1), (0, 1, 0)),
    (0, 1, 0): ((0, 1, 0), (0, 1, 1), (1, 1, 1), (1, 1, 0)),
    (0, -1, 0): ((0, 0, 0), (1, 0, 0), (1, 0, 1), (0, 0, 1)),
    (0, 0, 1): ((0, 0, 1), (1, 0, 1), (1, 1, 1), (0, 1, 1)),
    (0, 0, -1): ((0, 0, 0), (0, 1, 0), (1, 1, 0), (1, 0, 0)),
}


def _keys(c: np.ndarray) -> np.ndarray:
    c = c.astype(np.int64) + 1  # neighbours of index 0 sit at -1
    return (c[:, 0] << 42) | (c[:, 1] << 21) | c[:, 2]


def voxel_mesh(
    coords: np.ndarray, voxel_size: float = 1.0, origin=(0.0, 0.0, 0.0), colors: np.ndarray | None = None
) -> Mesh:
    """The faces between occupied and empty cells of ``coords`` [N, 3] (unique ints), two
    triangles each, in metres (``origin + ijk * voxel_size``); ``colors`` [N, 3] uint8 per voxel.
    The faces are oriented outwards and bound the union of the cubes (signed volume N·voxel_size³);
    vertices are not shared between faces, so viewers shade every face flat."""
    coords = np.asarray(coords, dtype=np.int64).reshape(-1, 3)
    if len(coords) and (coords.min() < 0 or coords.max() >= (1 << 20)):
        raise ValueError("voxel_mesh: coords must lie in [0, 2^20)")
    occupied = _keys(coords)
    verts, faces, cols = [], [], []
    n = 0
    for direction, corners in _FACES.items():
        exposed = ~np.isin(_keys(coords + np.asarray(direction)), occupied)
        c = coords[exposed]
        quad = c[:, None, :] + np.asarray(corners)[None]  # [F, 4, 3]
        verts.append(quad.reshape(-1, 3))
        base = n + 4 * np.arange(len(c))[:, None]
        faces.append(np.concatenate([base + [0, 1, 2], base + [0, 2, 3]]))
        if colors is not None:
            cols.append(np.repeat(np.asarray(colors, dtype=np.uint8)[exposed], 4, axis=0))
        n += 4 * len(c)
    vertices = np.asarray(origin, dtype=np.float64) + np.concatenate(verts).astype(np.float64) * voxel_size
    return Mesh(vertices, np.concatenate(faces), np.concatenate(cols) if colors is not None else None)
