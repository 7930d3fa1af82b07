"""Polylines: meandering paths, resampling, tangents and clipping to the site."""

from __future__ import annotations

import numpy as np


def resample(line: np.ndarray, spacing: float, keep_vertices: bool = False) -> np.ndarray:
    """Points every ``spacing`` metres along a polyline ``[P, D]`` (ends kept; with
    ``keep_vertices`` the original vertices too, so the samples trace the line exactly)."""
    line = np.asarray(line, dtype=np.float64)
    seg = np.linalg.norm(np.diff(line[:, :2], axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    if s[-1] <= 0:
        return line[:1].copy()
    t = np.linspace(0.0, s[-1], max(2, int(np.ceil(s[-1] / spacing)) + 1))
    if keep_vertices:
        t = np.unique(np.concatenate([t, s]))
    return np.column_stack([np.interp(t, s, line[:, d]) for d in range(line.shape[1])])


def length(line: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(line[:, :2], axis=0), axis=1).sum())


def tangents(line: np.ndarray) -> np.ndarray:
    """Unit 2-D tangents ``[P, 2]``."""
    t = np.gradient(np.asarray(line, dtype=np.float64)[:, :2], axis=0)
    return t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)


def meander(
    rng: np.random.Generator,
    start: np.ndarray,
    end: np.ndarray,
    amplitude: float,
    wavelength: float,
    spacing: float = 2.0,
) -> np.ndarray:
    """A smooth path from ``start`` to ``end`` swinging sideways by up to ``amplitude`` metres.

    The offset is a sum of three sines with random phases (wavelengths ``wavelength``,
    ``/1.7``, ``/2.9``), tapered to zero at the ends so the path meets its endpoints.
    """
    start, end = np.asarray(start, float), np.asarray(end, float)
    L = float(np.linalg.norm(end - start))
    s = np.linspace(0.0, L, max(2, int(L / spacing) + 1))
    d = (end - start) / max(L, 1e-9)
    nrm = np.array([-d[1], d[0]])
    off = np.zeros_like(s)
    for k, (div, w) in enumerate(((1.0, 1.0), (1.7, 0.45), (2.9, 0.2))):
        off += w * np.sin(2 * np.pi * s / (wavelength / div) + rng.uniform(0, 2 * np.pi))
    off *= amplitude / 1.65
    taper = np.clip(np.minimum(s, L - s) / max(0.15 * L, 1e-9), 0.0, 1.0)
    return start + s[:, None] * d + (off * taper)[:, None] * nrm


def edge_to_edge(rng: np.random.Generator, size: float, margin: float = 40.0, direction: float | None = None):
    """Endpoints of a line crossing the square ``[0, size]^2``, extended ``margin`` beyond it.

    The line passes through a point of the central half of the site at angle ``direction``
    (random if None), so it always crosses the site interior.
    """
    angle = rng.uniform(0, np.pi) if direction is None else direction
    centre = rng.uniform(0.3 * size, 0.7 * size, 2)
    d = np.array([np.cos(angle), np.sin(angle)])
    half = 0.75 * size + margin
    return centre - half * d, centre + half * d


def clip_to_box(line: np.ndarray, size: float, margin: float = 0.0, min_points: int = 2) -> list[np.ndarray]:
    """Pieces of a (densely sampled) polyline that lie inside ``[-margin, size + margin]^2``."""
    x, y = line[:, 0], line[:, 1]
    inside = (x >= -margin) & (y >= -margin) & (x <= size + margin) & (y <= size + margin)
    pieces, run = [], []
    for k, flag in enumerate(inside):
        if flag:
            run.append(k)
        elif run:
            pieces.append(run)
            run = []
    if run:
        pieces.append(run)
    return [line[r] for r in pieces if len(r) >= min_points]
