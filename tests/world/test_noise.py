"""Noise: the vectorised fields against a scalar reference written from the definition."""

import math

import numpy as np
import pytest

from earthcrafter.world.noise import fbm, gradient_noise, hash2, ridged, value_noise

MASK = 0xFFFFFFFF


def _hash_ref(ix: int, iy: int, seed: int) -> int:
    """The lattice hash in plain Python integers (mod 2^32 arithmetic spelled out)."""
    h = ((ix & MASK) * 0x8DA6B343) & MASK
    h ^= ((iy & MASK) * 0xD8163841) & MASK
    h ^= ((seed & MASK) * 0xCB1AB31F) & MASK
    h ^= h >> 13
    h = (h * 0x5BD1E995) & MASK
    h ^= h >> 15
    h = (h * 0x8DA6B343) & MASK
    h ^= h >> 16
    return h


def _gradient_ref(x: float, y: float, seed: int) -> float:
    ix, iy = math.floor(x), math.floor(y)
    fx, fy = x - ix, y - iy

    def fade(t):
        return t * t * t * (t * (t * 6 - 15) + 10)

    def dot(dx, dy):
        k = _hash_ref(ix + dx, iy + dy, seed) >> 24
        a = k * 2 * math.pi / 256
        return math.cos(a) * (fx - dx) + math.sin(a) * (fy - dy)

    u, v = fade(fx), fade(fy)
    a = dot(0, 0) + u * (dot(1, 0) - dot(0, 0))
    b = dot(0, 1) + u * (dot(1, 1) - dot(0, 1))
    return math.sqrt(2) * (a + v * (b - a))


def test_hash_matches_scalar_reference():
    rng = np.random.default_rng(0)
    ix = rng.integers(-10**6, 10**6, 300)
    iy = rng.integers(-10**6, 10**6, 300)
    got = hash2(ix, iy, 12345)
    want = np.array([_hash_ref(int(a), int(b), 12345) for a, b in zip(ix, iy)], dtype=np.uint64)
    np.testing.assert_array_equal(got.astype(np.uint64), want)


def test_gradient_noise_matches_scalar_reference():
    rng = np.random.default_rng(1)
    x = rng.uniform(-500, 500, 400)
    y = rng.uniform(-500, 500, 400)
    got = gradient_noise(x, y, 7)
    want = np.array([_gradient_ref(a, b, 7) for a, b in zip(x, y)])
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_gradient_noise_is_zero_on_lattice_and_bounded():
    ix, iy = np.meshgrid(np.arange(-20, 20), np.arange(-20, 20))
    np.testing.assert_allclose(gradient_noise(ix.astype(float), iy.astype(float), 3), 0.0, atol=1e-12)
    rng = np.random.default_rng(2)
    v = gradient_noise(rng.uniform(-1e4, 1e4, 200_000), rng.uniform(-1e4, 1e4, 200_000), 3)
    assert np.abs(v).max() <= 1.0 + 1e-9
    assert 0.15 < v.std() < 0.6  # not degenerate


def test_seeds_are_deterministic_and_independent():
    rng = np.random.default_rng(3)
    x, y = rng.uniform(0, 50, 5000), rng.uniform(0, 50, 5000)
    a, b = fbm(x, y, 11), fbm(x, y, 11)
    np.testing.assert_array_equal(a, b)
    c = fbm(x, y, 12)
    assert abs(np.corrcoef(a, c)[0, 1]) < 0.1


def test_fbm_is_continuous_and_ridged_in_unit_range():
    # The quintic fade gives a bounded gradient: tiny steps give tiny changes.
    rng = np.random.default_rng(4)
    x, y = rng.uniform(0, 100, 20_000), rng.uniform(0, 100, 20_000)
    eps = 1e-4
    for f in (lambda a, b: fbm(a, b, 5, 6), lambda a, b: value_noise(a, b, 5), lambda a, b: ridged(a, b, 5, 5)):
        step = np.abs(f(x + eps, y) - f(x, y))
        assert step.max() < 40 * eps, step.max()
    r = ridged(x, y, 9)
    assert r.min() >= 0.0 and r.max() <= 1.0


@pytest.mark.parametrize("basis", [gradient_noise, value_noise])
def test_noise_accepts_any_shape(basis):
    x = np.linspace(0, 10, 24).reshape(2, 3, 4)
    assert basis(x, x.T.copy().reshape(2, 3, 4), 1).shape == (2, 3, 4)
