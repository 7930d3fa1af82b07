"""Synthetic tiles for tests, benchmarks and the dry run (earthcrafter.training.dry_run).

Not training data (the voxelization stage makes that): cheap, seeded stand-ins with the structure
of real tiles at any resolution L.

- :func:`scene_coords`: occupancy of a voxelized 2.5-D terrain plus box buildings (thin closed
  surfaces, vertical walls, flat roofs).
- :func:`textured_tile`: a hilly coloured heightfield with a flat-roofed block, voxelized at L³
  with features in the 66-channel layout, and views ray cast from its mesh (open3d) —
  independent of the models and of the 2DGS rasteriser. f0/f1/f2 are fixed random projections
  of the voxel's colour at three blur levels (a stand-in image encoder), f_rgb the colour five
  times, f_n the upward-facing surface normal.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from earthcrafter.features.layout import FEATURE_LAYOUT, NUM_FEATURES, layout_to_json
from earthcrafter.geometry.cameras import Camera, intrinsics_from_fov, look_at
from earthcrafter.io.scene import Mesh
from earthcrafter.io.tiles import TileViews, VoxelTile, write_tile, write_views


def scene_coords(L: int, seed: int, boxes: int | None = None) -> np.ndarray:
    """Unique int32 voxel coords [N, 3] in [0, L): a closed terrain surface (each column
    filled down to its lowest neighbour, as surface voxelization does) and box buildings
    (walls + roof shells)."""
    rng = np.random.default_rng(seed)
    boxes = max(2, L * L // 8000) if boxes is None else boxes  # about 16 buildings at L=360
    x, y = np.meshgrid(np.arange(L), np.arange(L), indexing="ij")
    # frequencies in cycles per tile, so a scene looks alike at every L
    fx, fy = rng.uniform(1.0, 3.0, size=2) / L
    ph = rng.uniform(0, 6.3, 2)
    h = L / 4 + (L / 40) * np.sin(2 * np.pi * fx * x + ph[0]) + (L / 56) * np.cos(2 * np.pi * fy * y + ph[1])
    h = np.clip(np.round(h), 1, L - 1).astype(np.int64)
    pad = np.pad(h, 1, mode="edge")
    low = np.minimum.reduce([pad[1:-1, :-2], pad[1:-1, 2:], pad[:-2, 1:-1], pad[2:, 1:-1], h])
    cells = [np.stack([x.ravel(), y.ravel(), h.ravel()], 1)]
    for dz in range(1, int((h - low).max()) + 1):
        m = (h - dz) >= low
        cells.append(np.stack([x[m], y[m], (h - dz)[m]], 1))
    for _ in range(boxes):
        w, d = rng.integers(max(L // 16, 2), max(L // 5, 3), size=2)
        x0, y0 = rng.integers(0, L - w), rng.integers(0, L - d)
        base = int(h[x0 : x0 + w, y0 : y0 + d].min())
        top = min(base + int(rng.integers(max(L // 24, 2), max(L // 6, 3))), L - 1)
        bx, by = np.meshgrid(np.arange(x0, x0 + w), np.arange(y0, y0 + d), indexing="ij")
        cells.append(np.stack([bx.ravel(), by.ravel(), np.full(bx.size, top)], 1))  # roof
        rim = (bx == x0) | (bx == x0 + w - 1) | (by == y0) | (by == y0 + d - 1)
        for z in range(base, top):
            cells.append(np.stack([bx[rim], by[rim], np.full(rim.sum(), z)], 1))  # walls
    c = np.unique(np.concatenate(cells), axis=0)
    return c[(c >= 0).all(1) & (c < L).all(1)].astype(np.int32)


def heightfield_mesh(size_m: float, n: int = 41, seed: int = 0, hills: int = 1) -> Mesh:
    """Grid mesh over [0, size]^2: gentle hills (``hills`` periods across the tile: more make a
    steeper surface, more voxels per column), a block in one quadrant, smooth colours."""
    rng = np.random.default_rng(seed)
    phase = rng.uniform(0, 2 * np.pi, 3)
    t = np.linspace(0.0, size_m, n)
    x, y = np.meshgrid(t, t, indexing="ij")
    s = size_m
    z = 0.25 * s + 0.06 * s * np.sin(2 * np.pi * hills * x / s + phase[0]) * np.cos(2 * np.pi * hills * y / s)
    block = (x > 0.55 * s) & (x < 0.8 * s) & (y > 0.2 * s) & (y < 0.45 * s)
    z = np.where(block, z + 0.18 * s, z)
    rgb = np.stack(
        [
            0.5 + 0.35 * np.sin(2 * np.pi * x / (0.7 * s) + phase[1]),
            0.5 + 0.35 * np.cos(2 * np.pi * y / (0.6 * s) + phase[2]),
            0.45 + 0.3 * np.sin(2 * np.pi * (x + y) / (0.9 * s)),
        ],
        axis=-1,
    )
    rgb[block] = [0.85, 0.3, 0.2]
    verts = np.stack([x, y, z], -1).reshape(-1, 3)
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1], idx[1:, :-1], idx[1:, 1:], idx[:-1, 1:]
    faces = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    return Mesh(verts, faces, (np.clip(rgb, 0, 1) * 255).astype(np.uint8).reshape(-1, 3))


def sample_mesh(mesh: Mesh, per_m2: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Surface samples: xyz [P, 3], colour [P, 3] in [0, 1], upward unit normals [P, 3]."""
    rng = np.random.default_rng(seed)
    v = mesh.vertices[mesh.faces]
    n = np.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0])
    area = 0.5 * np.linalg.norm(n, axis=1)
    n = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    n[n[:, 2] < 0] *= -1
    counts = rng.poisson(area * per_m2) + 1
    face = np.repeat(np.arange(len(mesh.faces)), counts)
    r1, r2 = rng.random(len(face)), rng.random(len(face))
    s1 = np.sqrt(r1)
    w = np.stack([1 - s1, s1 * (1 - r2), s1 * r2], -1)
    xyz = (w[..., None] * v[face]).sum(1)
    col = (w[..., None] * mesh.vertex_colors[mesh.faces[face]].astype(np.float64) / 255).sum(1)
    return xyz, col, n[face]


def make_cameras(size_m: float, count: int, px: int, seed: int = 0) -> list[Camera]:
    """Oblique aerial cameras around the tile centre plus one nadir view."""
    rng = np.random.default_rng(seed)
    centre = np.array([size_m / 2, size_m / 2, 0.3 * size_m])
    cams = [Camera(intrinsics_from_fov(px, px, 55), look_at(centre + [0.01, 0, 1.4 * size_m], centre), px, px)]
    for i in range(count - 1):
        az = 2 * np.pi * i / max(count - 1, 1) + rng.uniform(-0.2, 0.2)
        eye = centre + 1.3 * size_m * np.array([np.cos(az) * 0.6, np.sin(az) * 0.6, 0.8])
        cams.append(Camera(intrinsics_from_fov(px, px, 55), look_at(eye, centre), px, px))
    return cams


def textured_tile(
    L: int = 16, voxel_size: float = 1.0, views: int = 6, px: int = 48, seed: int = 0, tile_id: str = "synth_0000",
    hills: int = 1,
) -> tuple[VoxelTile, TileViews]:
    """An L³ tile of :func:`heightfield_mesh` (features in the 66-channel layout) and ``views``
    views ray cast from the mesh, one nadir and the others oblique around it, ``px`` pixels wide."""
    from earthcrafter.geometry.raycast import MeshRaycaster, Shading  # open3d: only here

    size = L * voxel_size
    mesh = heightfield_mesh(size, n=max(41, 20 * hills + 1), seed=seed, hills=hills)
    xyz, col, nrm = sample_mesh(mesh, per_m2=40.0 / voxel_size**2, seed=seed)
    ijk = np.clip(np.floor(xyz / voxel_size).astype(np.int64), 0, L - 1)
    keys = (ijk[:, 0] * L + ijk[:, 1]) * L + ijk[:, 2]
    uniq, inv = np.unique(keys, return_inverse=True)
    cnt = np.bincount(inv)[:, None]
    colour = np.stack([np.bincount(inv, col[:, c]) for c in range(3)], 1) / cnt
    normal = np.stack([np.bincount(inv, nrm[:, c]) for c in range(3)], 1)
    normal /= np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-12)
    coords = np.stack([uniq // (L * L), (uniq // L) % L, uniq % L], 1).astype(np.int32)

    proj = np.random.default_rng(1234).normal(0, 1, (3, 3, 16))
    feats = np.zeros((len(coords), NUM_FEATURES), np.float32)
    for level, name in enumerate(("f0", "f1", "f2")):
        feats[:, FEATURE_LAYOUT[name]] = np.tanh((colour - 0.5) @ proj[level] * (1.0 / (1 + level)))
    feats[:, FEATURE_LAYOUT["f_rgb"]] = np.tile(colour, 5)
    feats[:, FEATURE_LAYOUT["f_n"]] = normal
    meta = {
        "scene_id": f"synth_scene_{seed}", "biome": "synthetic", "L": L, "voxel_size_m": voxel_size,
        "origin_m": [0.0, 0.0, 0.0], "feature_layout": layout_to_json(FEATURE_LAYOUT), "counts": {}, "extra": {},
    }  # fmt: skip
    n = len(coords)
    tile = VoxelTile(tile_id, coords, feats, np.zeros(n, np.uint8), np.ones(n, np.float16), meta)

    caster = MeshRaycaster(mesh)
    cams = make_cameras(size, views, px, seed)
    rgb, mask, depth = [], [], []
    for cam in cams:
        fr = caster.render(cam, shading=Shading(ambient=1.0, shadows=False))
        pts = cam.unproject_depth(fr.depth)
        with np.errstate(invalid="ignore"):
            inside = np.isfinite(fr.depth) & (pts[..., :2] >= 0).all(-1) & (pts[..., :2] < size).all(-1)
        rgb.append(fr.rgb), mask.append(inside), depth.append(fr.depth.astype(np.float32))
    tv = TileViews(np.stack(rgb), np.stack(mask), np.stack(depth), np.stack([c.K for c in cams]),
                   np.stack([c.world_to_camera for c in cams]), [f"v{i}" for i in range(len(cams))])  # fmt: skip
    return tile, tv


def write_textured_tiles(root: Path, tiles: list[tuple[VoxelTile, TileViews, str]]) -> pd.DataFrame:
    """Write tiles + views under ``root``; return the manifest (absolute paths, given splits)."""
    rows = []
    root.mkdir(parents=True, exist_ok=True)
    for tile, views, split in tiles:
        tp = write_tile(root / f"{tile.tile_id}.parquet", tile)
        vp = write_views(root / f"{tile.tile_id}.views.npz", views)
        rows.append({"tile_id": tile.tile_id, "scene_id": tile.meta["scene_id"], "num_voxels": len(tile),
                     "split": split, "path": str(tp), "views_path": str(vp)})  # fmt: skip
    return pd.DataFrame(rows)
