"""Seeded, vectorised 2-D noise: gradient (Perlin-style) and value noise, fBm, ridged
multifractal and domain warping.

Lattice values come from an integer hash of (ix, iy, seed), so the noise is unbounded
(no period) and every seed gives an independent field. All functions take coordinate
arrays of any (matching) shape, in lattice units: divide metres by the feature size
before calling.
"""

from __future__ import annotations

import numpy as np

_M1, _M2, _M3, _M4 = (np.uint32(c) for c in (0x8DA6B343, 0xD8163841, 0xCB1AB31F, 0x5BD1E995))


def hash2(ix: np.ndarray, iy: np.ndarray, seed: int) -> np.ndarray:
    """uint32 hash of integer lattice coordinates (any shape); avalanche-mixed."""
    s = np.uint32(seed & 0xFFFFFFFF)
    with np.errstate(over="ignore"):
        h = ix.astype(np.int64).astype(np.uint32) * _M1
        h ^= iy.astype(np.int64).astype(np.uint32) * _M2
        h ^= s * _M3
        h ^= h >> np.uint32(13)
        h *= _M4
        h ^= h >> np.uint32(15)
        h *= _M1
        h ^= h >> np.uint32(16)
    return h


def _fade(t: np.ndarray) -> np.ndarray:
    """Quintic smoothstep 6t^5 - 15t^4 + 10t^3 (C2-continuous blending)."""
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


def _lattice(x: np.ndarray, y: np.ndarray):
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    x0, y0 = np.floor(x), np.floor(y)
    return x0.astype(np.int64), y0.astype(np.int64), x - x0, y - y0


# 256 unit gradient directions; the top byte of a lattice hash picks one.
_GRAD_X = np.cos(np.arange(256) * (2 * np.pi / 256))
_GRAD_Y = np.sin(np.arange(256) * (2 * np.pi / 256))


def gradient_noise(x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """Perlin-style gradient noise in about [-1, 1]; exactly 0 on integer lattice points."""
    ix, iy, fx, fy = _lattice(x, y)

    def corner(dx: int, dy: int) -> np.ndarray:
        g = hash2(ix + dx, iy + dy, seed) >> np.uint32(24)
        return _GRAD_X[g] * (fx - dx) + _GRAD_Y[g] * (fy - dy)

    u, v = _fade(fx), _fade(fy)
    a = corner(0, 0) + u * (corner(1, 0) - corner(0, 0))
    b = corner(0, 1) + u * (corner(1, 1) - corner(0, 1))
    # 2-D gradient noise peaks at sqrt(1/2); scale to use the [-1, 1] range.
    return np.sqrt(2.0) * (a + v * (b - a))


def value_noise(x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """Smoothly interpolated random lattice values in [-1, 1]."""
    ix, iy, fx, fy = _lattice(x, y)

    def corner(dx: int, dy: int) -> np.ndarray:
        return hash2(ix + dx, iy + dy, seed).astype(np.float64) * (2.0 / 2**32) - 1.0

    u, v = _fade(fx), _fade(fy)
    a = corner(0, 0) + u * (corner(1, 0) - corner(0, 0))
    b = corner(0, 1) + u * (corner(1, 1) - corner(0, 1))
    return a + v * (b - a)


def fbm(
    x: np.ndarray,
    y: np.ndarray,
    seed: int,
    octaves: int = 5,
    lacunarity: float = 2.0,
    gain: float = 0.5,
    basis=gradient_noise,
) -> np.ndarray:
    """Fractional Brownian motion: sum of ``octaves`` noise layers, normalised to about [-1, 1].

    Each octave uses its own seed and a fixed rotation so lattice artefacts do not line up.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    total = np.zeros(np.broadcast(x, y).shape)
    amp, freq, norm = 1.0, 1.0, 0.0
    c, s = np.cos(0.5), np.sin(0.5)
    xr, yr = x, y
    for k in range(octaves):
        total += amp * basis(xr * freq, yr * freq, seed + 7919 * k)
        norm += amp
        amp *= gain
        freq *= lacunarity
        xr, yr = c * xr - s * yr + 17.31, s * xr + c * yr - 9.17
    return total / norm


def ridged(
    x: np.ndarray,
    y: np.ndarray,
    seed: int,
    octaves: int = 6,
    lacunarity: float = 2.0,
    gain: float = 0.5,
    sharpness: float = 2.0,
) -> np.ndarray:
    """Ridged multifractal in [0, 1]: sharp crests where the basis noise crosses zero.

    Finer octaves are weighted by the coarser signal, so ridges carry detail and valleys
    stay smooth (the look of eroded mountain ranges).
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    total = np.zeros(np.broadcast(x, y).shape)
    weight = np.ones_like(total)
    amp, freq, norm = 1.0, 1.0, 0.0
    c, s = np.cos(0.7), np.sin(0.7)
    xr, yr = x, y
    for k in range(octaves):
        signal = (1.0 - np.abs(gradient_noise(xr * freq, yr * freq, seed + 104729 * k))) ** sharpness
        signal *= weight
        weight = np.clip(signal * 1.5, 0.0, 1.0)
        total += amp * signal
        norm += amp
        amp *= gain
        freq *= lacunarity
        xr, yr = c * xr - s * yr + 5.7, s * xr + c * yr + 31.1
    return total / norm


def warp(x: np.ndarray, y: np.ndarray, seed: int, strength: float, octaves: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Domain warp: displace (x, y) by ``strength`` lattice units of fBm (breaks up regularity)."""
    dx = fbm(x, y, seed, octaves)
    dy = fbm(x + 5.2, y + 1.3, seed + 1, octaves)
    return x + strength * dx, y + strength * dy


def noise1d(t: np.ndarray, seed: int, octaves: int = 3) -> np.ndarray:
    """1-D fBm along a parameter (a row of the 2-D field), about [-1, 1]."""
    t = np.asarray(t, dtype=np.float64)
    return fbm(t, np.full_like(t, 0.5 + (seed % 97)), seed, octaves)


class NoiseField:
    """Noise functions bound to one seed, with coordinates in metres and a feature size.

    ``field.fbm(x, y, scale=200)`` is fBm whose largest features are about 200 m across.
    """

    def __init__(self, seed: int):
        self.seed = int(seed) & 0x7FFFFFFF

    def fbm(self, x, y, scale: float, octaves: int = 5, gain: float = 0.5, offset: int = 0) -> np.ndarray:
        return fbm(np.asarray(x) / scale, np.asarray(y) / scale, self.seed + offset, octaves, gain=gain)

    def ridged(self, x, y, scale: float, octaves: int = 6, gain: float = 0.5, offset: int = 0) -> np.ndarray:
        return ridged(np.asarray(x) / scale, np.asarray(y) / scale, self.seed + offset, octaves, gain=gain)

    def value(self, x, y, scale: float, offset: int = 0) -> np.ndarray:
        return value_noise(np.asarray(x) / scale, np.asarray(y) / scale, self.seed + offset)

    def warp(self, x, y, scale: float, strength_m: float, offset: int = 0):
        wx, wy = warp(np.asarray(x) / scale, np.asarray(y) / scale, self.seed + offset, strength_m / scale)
        return wx * scale, wy * scale
