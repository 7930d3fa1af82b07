"""Per-face quantities of triangle meshes, in one place (numpy only, no open3d)."""

from __future__ import annotations

import numpy as np


def face_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unnormalised face normals [F, 3] (length = 2 x area), right-hand rule on the winding."""
    tri = vertices[faces]
    return np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])


def face_areas(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Face areas [F], in the square of the vertices' unit."""
    return 0.5 * np.linalg.norm(face_normals(vertices, faces), axis=1)
