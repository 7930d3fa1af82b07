"""Synthetic occupancy for tests and benchmarks: a voxelized 2.5-D terrain plus box buildings.

Not training data (the voxelization stage makes that): a cheap, seeded stand-in with the
same structure (thin closed surfaces, vertical walls, flat roofs) at any resolution L.
"""

from __future__ import annotations

import numpy as np


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
