"""Training augmentations of voxel tiles, with their views transformed consistently.

- :func:`random_voxel_crop`: keep a box of voxel columns around a random voxel, the largest such
  box (Chebyshev radius in x, y; all z) holding at most ``max_voxels`` (paper: 250k).
- :class:`GridTransform`: flips of x / y and 90-degree rotations about z of the L^3 grid.

Cameras are ``world_to_camera`` in the tile-local metric frame (voxel ijk centre at
``(ijk + 0.5) * voxel_size``). A grid map ``p' = A p + t`` moves the cameras by ``E' = E M^-1``
(M = [A t; 0 1]), which keeps every projection. A rotation is a proper rigid map, so that is all.
A flip has ``det A = -1``: ``E M^-1`` would be a mirror, not a camera. We mirror the camera's x
axis too (``E' = diag(-1, 1, 1, 1) E M^-1``, a proper rotation again) and flip the images
left-right with ``cx' = w - cx``: a voxel seen at pixel (u, v) before is seen at (w - u, v) after,
on the flipped image, i.e. at the same image content. Features: ``f_n`` is rotated with the
grid; f0-f2 and f_rgb describe source-image appearance and are left as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from earthcrafter.io.tiles import TileViews


def random_voxel_crop(coords: np.ndarray, max_voxels: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices of kept voxels and the integer offset [3] of the crop's corner.

    When ``len(coords) <= max_voxels`` everything is kept and the offset is 0. Otherwise a random
    voxel is the centre and the box is the largest Chebyshev (x, y) radius with at most
    ``max_voxels`` voxels; ``coords[keep] - offset`` are the cropped coords (all >= 0).
    """
    coords = np.asarray(coords, dtype=np.int64)
    n = len(coords)
    if max_voxels < 1:
        raise ValueError(f"random_voxel_crop: max_voxels must be >= 1, got {max_voxels}")
    if n <= max_voxels:
        return np.arange(n), np.zeros(3, np.int64)
    centre = coords[rng.integers(n), :2]
    d = np.abs(coords[:, :2] - centre).max(axis=1)
    limit = np.partition(d, max_voxels)[max_voxels]  # keeping d < limit keeps at most max_voxels
    keep = np.flatnonzero(d < limit)
    if not len(keep):  # a single column above the cap: keep the centre column's lowest voxels
        col = np.flatnonzero(d == 0)
        keep = col[np.argsort(coords[col, 2], kind="stable")[:max_voxels]]
    offset = coords[keep].min(axis=0)
    return keep, offset


def crop_views(views: TileViews, offset: np.ndarray, size_voxels: np.ndarray, voxel_size: float) -> TileViews:
    """Views for a crop whose corner is voxel ``offset`` and whose extent is ``size_voxels``:
    cameras shifted into the crop's local frame, masks narrowed to the crop's box by the depth."""
    E = views.world_to_camera @ _shift(offset, voxel_size)
    mask = views.mask.copy()
    for i in range(len(views)):
        mask[i] = crop_mask(views, i, offset, size_voxels, voxel_size)
    return TileViews(views.rgb, mask, views.depth, views.K, E, list(views.names))


def crop_mask(views: TileViews, i: int, offset: np.ndarray, size_voxels: np.ndarray, voxel_size: float) -> np.ndarray:
    """View ``i``'s mask narrowed to the crop's box by its depth, as :func:`crop_views` narrows
    every view (one view at a time, for callers that need only a few of them)."""
    local = _unproject(views.depth[i], views.K[i], views.world_to_camera[i] @ _shift(offset, voxel_size))
    extent = np.asarray(size_voxels, np.float64) * voxel_size
    with np.errstate(invalid="ignore"):
        return views.mask[i] & ((local >= 0) & (local < extent)).all(axis=-1)


def _shift(offset: np.ndarray, voxel_size: float) -> np.ndarray:
    """4x4 map of the crop's local frame (corner at voxel ``offset``) into the tile's frame."""
    T = np.eye(4)
    T[:3, 3] = np.asarray(offset, np.float64) * voxel_size
    return T


def _unproject(depth: np.ndarray, K: np.ndarray, E: np.ndarray) -> np.ndarray:
    h, w = depth.shape
    v, u = np.mgrid[0:h, 0:w].astype(np.float64) + 0.5
    z = np.where(np.isfinite(depth), depth, np.nan)
    cam = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], axis=-1)
    return np.einsum("...j,jk->...k", cam - E[:3, 3], E[:3, :3])


@dataclass(frozen=True)
class GridTransform:
    """Voxel index map ``ijk' = A ijk + (L - 1) * flip`` of an L^3 grid; A is a signed
    permutation of x, y (z fixed), ``flip[r] = 1`` where row r of A has a -1."""

    A: np.ndarray  # [3, 3] int

    @classmethod
    def make(cls, flip_x: bool = False, flip_y: bool = False, rot90: int = 0) -> "GridTransform":
        """Rotate by ``rot90`` quarter turns about +z (counter-clockwise seen from above), then flip."""
        R = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]])
        A = np.linalg.matrix_power(R, rot90 % 4)
        F = np.diag([-1 if flip_x else 1, -1 if flip_y else 1, 1])
        return cls((F @ A).astype(np.int64))

    @classmethod
    def random(cls, rng: np.random.Generator, flip: bool = True, rotate: bool = True) -> "GridTransform":
        fx, fy = (bool(rng.integers(2)), bool(rng.integers(2))) if flip else (False, False)
        return cls.make(fx, fy, int(rng.integers(4)) if rotate else 0)

    @property
    def mirrors(self) -> bool:
        return round(np.linalg.det(self.A)) < 0

    @property
    def _neg_rows(self) -> np.ndarray:
        return (self.A < 0).any(axis=1).astype(np.int64)

    def coords(self, coords: np.ndarray, L: int) -> np.ndarray:
        """Voxel indices [N, 3] -> transformed indices (same dtype)."""
        out = np.asarray(coords, np.int64) @ self.A.T + (L - 1) * self._neg_rows
        return out.astype(np.asarray(coords).dtype)

    def matrix(self, L: int, voxel_size: float) -> np.ndarray:
        """4x4 map of the tile-local metric frame (the grid box [0, L*s]^2 maps onto itself)."""
        M = np.eye(4)
        M[:3, :3] = self.A
        M[:3, 3] = L * voxel_size * self._neg_rows
        return M

    def vectors(self, v: np.ndarray) -> np.ndarray:
        """Direction vectors [N, 3] (e.g. normals)."""
        return np.einsum("ij,kj->ik", v, self.A.astype(v.dtype))

    def feats(self, feats: np.ndarray, layout: dict[str, slice]) -> np.ndarray:
        out = feats.copy()
        if "f_n" in layout:
            out[:, layout["f_n"]] = self.vectors(feats[:, layout["f_n"]].astype(np.float32)).astype(feats.dtype)
        return out

    def views(self, views: TileViews, L: int, voxel_size: float) -> TileViews:
        Minv = np.linalg.inv(self.matrix(L, voxel_size))
        E = views.world_to_camera @ Minv
        if not self.mirrors:
            return TileViews(views.rgb, views.mask, views.depth, views.K, E, list(views.names))
        D = np.diag([-1.0, 1.0, 1.0, 1.0])
        E = D @ E
        w = views.rgb.shape[2]
        K = views.K.copy()
        K[:, 0, 2] = w - K[:, 0, 2]
        K[:, 0, 1] = -K[:, 0, 1]  # skew changes sign with the x axis
        flip = lambda a: np.ascontiguousarray(a[:, :, ::-1])  # noqa: E731
        return TileViews(flip(views.rgb), flip(views.mask), flip(views.depth), K, E, list(views.names))
