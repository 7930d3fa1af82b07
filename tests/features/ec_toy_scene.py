"""A known test scene: gently rolling terrain (grass with a road band, textured vertex colours)
and a closed box building (roof + four facades of distinct colours) on a flat pad, rendered by
CPU ray casting from oblique and nadir cameras."""

from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F

from earthcrafter.features.base import LatentPyramidExtractor
from earthcrafter.geometry.cameras import Camera, intrinsics_from_fov, look_at
from earthcrafter.geometry.raycast import Shading, render_frames
from earthcrafter.io.scene import Mesh, Scene
from earthcrafter.semantics import CLASS_ID

SIZE = 120.0  # scene side, metres
BUILDING = (50.0, 70.0, 52.0, 68.0, 14.0)  # x0, x1, y0, y1, height
ROAD_Y = (20.0, 28.0)
GRASS, ROAD, ROOF, FACADE = (CLASS_ID[k] for k in ("grass_lawn", "road", "building_roof", "building_facade"))


def terrain_height(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # flat pad around the building, gentle waves elsewhere
    dx = np.maximum(np.abs(x - 60) - 16, 0)
    dy = np.maximum(np.abs(y - 60) - 14, 0)
    ramp = np.clip(np.hypot(dx, dy) / 10, 0, 1)
    return 2.0 * np.sin(x / 9.0) * np.sin(y / 13.0) * ramp


def _checker(a: np.ndarray, b: np.ndarray, period: float) -> np.ndarray:
    return ((np.floor(a / period) + np.floor(b / period)) % 2).astype(np.float64)


def _grid(origin, e1, e2, n1, n2):
    """A quad [origin, origin + e1 + e2] split into n1 x n2 cells of two triangles."""
    i, j = np.meshgrid(np.arange(n1 + 1), np.arange(n2 + 1), indexing="ij")
    v = origin + (i / n1).reshape(-1, 1) * e1 + (j / n2).reshape(-1, 1) * e2
    idx = np.arange((n1 + 1) * (n2 + 1)).reshape(n1 + 1, n2 + 1)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel()
    return v, np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])


def make_mesh(spacing: float = 2.0) -> Mesh:
    verts, faces, colors, sem = [], [], [], []

    def add(v, f, col, cls):
        faces.append(f + sum(len(x) for x in verts))
        verts.append(v)
        colors.append(col)
        sem.append(cls)

    n = int(SIZE / spacing)
    v, f = _grid(np.zeros(3), np.array([SIZE, 0, 0]), np.array([0, SIZE, 0]), n, n)
    v[:, 2] = terrain_height(v[:, 0], v[:, 1])
    centroid_y = v[f].mean(axis=1)[:, 1]
    on_road = (centroid_y > ROAD_Y[0]) & (centroid_y < ROAD_Y[1])
    chk = _checker(v[:, 0], v[:, 1], 6.0)
    road_v = (v[:, 1] > ROAD_Y[0]) & (v[:, 1] < ROAD_Y[1])
    col = np.where(road_v[:, None], [[90, 90, 95]], [[70, 150, 60]]) * (0.75 + 0.25 * chk[:, None])
    add(v, f, col, np.where(on_road, ROAD, GRASS))

    x0, x1, y0, y1, h = BUILDING
    rv, rf = _grid(np.array([x0, y0, h]), np.array([x1 - x0, 0, 0]), np.array([0, y1 - y0, 0]), 10, 8)
    add(rv, rf, np.array([[200, 60, 50]]) * (0.8 + 0.2 * _checker(rv[:, 0], rv[:, 1], 4.0)[:, None]), ROOF)
    walls = [
        (np.array([x0, y0, 0]), np.array([x1 - x0, 0, 0]), (230, 200, 120)),  # south
        (np.array([x1, y0, 0]), np.array([0, y1 - y0, 0]), (120, 140, 230)),  # east
        (np.array([x1, y1, 0]), np.array([x0 - x1, 0, 0]), (230, 230, 230)),  # north
        (np.array([x0, y1, 0]), np.array([0, y0 - y1, 0]), (160, 90, 200)),  # west
    ]
    for origin, e1, base in walls:
        wv, wf = _grid(origin, e1, np.array([0, 0, h]), 10, 7)
        add(wv, wf, np.array([base]) * (0.8 + 0.2 * _checker(wv[:, 0] + wv[:, 1], wv[:, 2], 3.0)[:, None]), FACADE)
    sem_faces = np.concatenate([np.broadcast_to(s, len(f)) for s, f in zip(sem, faces)])
    return Mesh(np.concatenate(verts), np.concatenate(faces), np.clip(np.concatenate(colors), 0, 255).astype(np.uint8), sem_faces)


def make_cameras(size: int = 128, distance: float = 120.0, elevation_deg: float = 50.0, n_oblique: int = 8) -> list[Camera]:
    K = intrinsics_from_fov(size, size, 60.0)
    target = np.array([60.0, 60.0, 0.0])
    cams = [Camera(K, look_at(target + [0.0, -1.0, 150.0], target, (0, 1, 0)), size, size)]  # near-nadir
    el = np.deg2rad(elevation_deg)
    for k in range(n_oblique):
        az = 2 * np.pi * k / n_oblique
        eye = target + distance * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        cams.append(Camera(K, look_at(eye, target), size, size))
    return cams


def make_scene(size: int = 128, shadows: bool = False) -> Scene:
    mesh = make_mesh()
    frames = render_frames(mesh, make_cameras(size), Shading(shadows=shadows))
    return Scene("toy", {"biome": "temperate"}, mesh, None, frames)


class PoolExtractor(LatentPyramidExtractor):
    """A deterministic stand-in encoder: 8x8 average pooling of RGB, tiled to 16 channels."""

    name = "pool"

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        p = F.avg_pool2d(x, self.downsample)
        return torch.cat([p * (k + 1) for k in range(5)] + [p[:, :1]], dim=1)


@contextlib.contextmanager
def torch_threads(n: int = 1):
    """Small CPU workloads run fastest on one thread, and far faster so on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
