"""FD and KD against independent references: closed forms, scipy's sqrtm, a loop over pairs."""

import numpy as np
import pytest
import scipy.linalg

from earthcrafter.evaluation.distribution import frechet_distance, image_descriptors, kernel_distance


def _fd_scipy(a, b):
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(s_a @ s_b).real
    return ((mu_a - mu_b) ** 2).sum() + np.trace(s_a + s_b - 2 * root)


def test_fd_matches_scipy_sqrtm_and_is_symmetric():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 6)) @ rng.normal(size=(6, 6))
    b = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6)) + 0.5
    assert frechet_distance(a, b) == pytest.approx(_fd_scipy(a, b), rel=1e-6)
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-9)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def test_fd_of_gaussians_converges_to_the_closed_form():
    # diagonal Gaussians: FD = |mu_a - mu_b|^2 + sum (sigma_a - sigma_b)^2
    rng = np.random.default_rng(1)
    mu_a, mu_b, sd_a, sd_b = np.zeros(3), np.array([1.0, -2.0, 0.5]), np.array([1.0, 2.0, 0.5]), np.array([2.0, 1.0, 0.5])
    a = mu_a + sd_a * rng.normal(size=(200_000, 3))
    b = mu_b + sd_b * rng.normal(size=(200_000, 3))
    exact = ((mu_a - mu_b) ** 2).sum() + ((sd_a - sd_b) ** 2).sum()
    assert frechet_distance(a, b) == pytest.approx(exact, rel=0.01)


def test_fd_stays_real_with_fewer_samples_than_dimensions():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(10, 32)), rng.normal(size=(12, 32))
    fd = frechet_distance(a, b)
    assert np.isfinite(fd) and fd > 0


def _kd_loop(x, y):
    k = lambda u, v: (u @ v / len(u) + 1) ** 3  # noqa: E731
    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_kd_is_the_unbiased_mmd_of_a_loop():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(15, 4)), rng.normal(size=(15, 4)) + 0.3
    mean, std = kernel_distance(a, b, subsets=3, subset_size=15)  # subsets of all rows: every draw is the same set
    assert mean == pytest.approx(_kd_loop(a, b), rel=1e-9) and std == pytest.approx(0.0, abs=1e-12)


def test_kd_is_zero_on_average_for_one_distribution_and_grows_with_a_shift():
    rng = np.random.default_rng(4)
    same = [kernel_distance(rng.normal(size=(60, 8)), rng.normal(size=(60, 8)), subsets=5, subset_size=60)[0]
            for _ in range(40)]  # fmt: skip
    assert abs(np.mean(same)) < 3 * np.std(same) / np.sqrt(len(same))
    near = kernel_distance(rng.normal(size=(200, 8)), rng.normal(size=(200, 8)) + 0.3)[0]
    far = kernel_distance(rng.normal(size=(200, 8)), rng.normal(size=(200, 8)) + 1.0)[0]
    assert 0 < near < far


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="at least 2"):
        kernel_distance(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="one D"):
        kernel_distance(np.zeros((4, 3)), np.zeros((5, 2)))
    with pytest.raises(ValueError, match=r"N >= 2"):
        frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))


def test_descriptors_are_channel_mean_and_std():
    class Extractor:
        channels = 2

        def __call__(self, rgb):
            return np.stack([rgb[..., 0], rgb[..., 1] * 2.0], -1).astype(np.float32)

    img = np.random.default_rng(5).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    d = image_descriptors([img, img], Extractor())
    f = img[..., :2].reshape(-1, 2).astype(np.float64) * [1, 2]
    assert d.shape == (2, 4) and np.allclose(d[0], np.concatenate([f.mean(0), f.std(0)]))
