"""Scene crops: the central crop of a scene and the sliding grid of training tiles inside it.

Paper: a 500 m central crop of each 600 m scene, cut into 3 x 3 tiles of 200 m with stride 150 m
((3 - 1) * 150 + 200 = 500). Tiles are half-open xy boxes ``[x0, x0 + size) x [y0, y0 + size)``;
z is chosen per tile at voxelization (see :mod:`earthcrafter.geometry.voxelize`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from earthcrafter.io.scene import Mesh

log = logging.getLogger(__name__)


class CropConfig(BaseModel):
    """Central crop (``central_size_m`` or ``central_fraction`` of the scene's shorter side) and tiles."""

    model_config = ConfigDict(extra="forbid")
    central_size_m: float | None = Field(500.0, gt=0)
    central_fraction: float | None = Field(None, gt=0, le=1)
    tile_size_m: float = Field(200.0, gt=0)
    tile_stride_m: float = Field(150.0, gt=0)
    # Real surveys are rarely square: a rectangular crop tiles each axis on its own, and an axis
    # shorter than a tile still gets one centred tile when it covers this fraction of it.
    rectangular: bool = False
    min_cover_fraction: float = Field(1.0, gt=0, le=1)

    @model_validator(mode="after")
    def _one_central_rule(self) -> "CropConfig":
        if (self.central_size_m is None) == (self.central_fraction is None):
            raise ValueError("crop: set exactly one of central_size_m and central_fraction")
        return self


@dataclass(frozen=True)
class TileSpec:
    tile_id: str
    row: int  # along y
    col: int  # along x
    xy_min: tuple[float, float]
    size_m: float

    @property
    def xy_max(self) -> tuple[float, float]:
        return (self.xy_min[0] + self.size_m, self.xy_min[1] + self.size_m)

    def contains_xy(self, xy: np.ndarray) -> np.ndarray:
        """Half-open box test for points [N, >=2]."""
        x, y = xy[:, 0], xy[:, 1]
        (x0, y0), (x1, y1) = self.xy_min, self.xy_max
        return (x >= x0) & (x < x1) & (y >= y0) & (y < y1)


def bounds_xy(mesh: Mesh) -> tuple[np.ndarray, np.ndarray]:
    if len(mesh.vertices) == 0:
        raise ValueError("cannot crop an empty mesh (0 vertices)")
    return mesh.vertices[:, :2].min(axis=0), mesh.vertices[:, :2].max(axis=0)


def central_crop(xy_min: np.ndarray, xy_max: np.ndarray, cfg: CropConfig) -> tuple[np.ndarray, float]:
    """The square central crop of the box ``[xy_min, xy_max]``: returns (its xy_min, its side).

    A requested size larger than the scene's shorter side is reduced to that side (logged).
    With ``cfg.rectangular`` the crop is a rectangle instead: each axis keeps
    min(requested, extent), and the side is returned per axis ([2] array).
    """
    extent = np.asarray(xy_max, float) - np.asarray(xy_min, float)
    if cfg.rectangular and cfg.central_size_m is not None:
        size = np.minimum(cfg.central_size_m, extent)
        centre = (np.asarray(xy_min, float) + np.asarray(xy_max, float)) / 2
        return centre - size / 2, size
    side = float(extent.min())
    size = cfg.central_size_m if cfg.central_size_m is not None else cfg.central_fraction * side
    if size > side + 1e-9:
        log.warning("central crop %.1f m exceeds the scene's shorter side %.1f m; using %.1f m", size, side, side)
        size = side
    centre = (np.asarray(xy_min, float) + np.asarray(xy_max, float)) / 2
    return centre - size / 2, float(size)


def plan_tiles(scene_id: str, crop_min: np.ndarray, crop_size: float, cfg: CropConfig) -> list[TileSpec]:
    """Sliding tiles over the square crop; the tile grid is centred when the stride does not fit
    exactly. ``crop_size`` is one side or one per axis (x, y). An axis shorter than a tile gets
    one centred tile if it covers ``cfg.min_cover_fraction`` of it, else there are no tiles.
    Ids: ``<scene_id>_r<row>c<col>``."""
    tile, stride = cfg.tile_size_m, cfg.tile_stride_m
    sizes = np.broadcast_to(np.asarray(crop_size, float), (2,))
    if (sizes + 1e-9 < tile * cfg.min_cover_fraction).any():
        return []
    counts = [int(math.floor((max(sz, tile) - tile) / stride + 1e-9)) + 1 for sz in sizes]
    span = np.array([(n - 1) * stride + tile for n in counts])
    start = np.asarray(crop_min, float) + (sizes - span) / 2
    tiles = []
    for r in range(counts[1]):
        for c in range(counts[0]):
            xy = (float(start[0] + c * stride), float(start[1] + r * stride))
            tiles.append(TileSpec(f"{scene_id}_r{r}c{c}", r, c, xy, float(tile)))
    return tiles


def faces_in_box_xy(mesh: Mesh, xy_min, xy_max) -> np.ndarray:
    """Indices of faces whose xy bounding box overlaps the box (conservative: no face is missed)."""
    tri = mesh.vertices[mesh.faces][:, :, :2]  # [F, 3, 2]
    lo, hi = tri.min(axis=1), tri.max(axis=1)
    overlap = (hi >= np.asarray(xy_min)) & (lo <= np.asarray(xy_max))
    return np.flatnonzero(overlap.all(axis=1))


def crop_mesh(mesh: Mesh, xy_min, xy_max) -> Mesh:
    """The faces overlapping the xy box, with their vertices re-indexed (faces are not cut)."""
    faces = faces_in_box_xy(mesh, xy_min, xy_max)
    used, inverse = np.unique(mesh.faces[faces], return_inverse=True)
    colors = None if mesh.vertex_colors is None else mesh.vertex_colors[used]
    sem = None if mesh.face_semantic is None else mesh.face_semantic[faces]
    return Mesh(mesh.vertices[used], inverse.reshape(-1, 3), colors, sem)
