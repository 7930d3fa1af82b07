"""Distances between two sets of image descriptors: Fréchet distance (FID's formula) and
kernel distance (KID's unbiased MMD with a cubic polynomial kernel).

The formulas are those of FID (Heusel et al. 2017) and KID (Bińkowski et al. 2018); what makes
them "FID" or "KID" is the Inception-v3 feature space. Here the feature space is whatever
:func:`image_descriptors` gets from an extractor of :mod:`earthcrafter.features.extractors`, and
the metric names say which (``fd_tiny_ae``, ``kd_dinov2``; FD_DINOv2 is Stein et al. 2023's
recommendation). Numbers from different feature spaces are not comparable with each other, nor
with published FID.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def _moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < 2:
        raise ValueError(f"descriptors must be [N >= 2, D], got shape {x.shape}")
    return x.mean(0), np.atleast_2d(np.cov(x, rowvar=False))


def _sym_sqrt(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2) between Gaussians fitted to ``a``, ``b`` [N, D].

    The trace of the matrix square root is taken as the sum of the square roots of the eigenvalues
    of S_a^1/2 S_b S_a^1/2 (symmetric, same spectrum as S_a S_b), which stays real when the
    covariances are rank-deficient (fewer images than dimensions).
    """
    mu_a, s_a = _moments(a)
    mu_b, s_b = _moments(b)
    if mu_a.shape != mu_b.shape:
        raise ValueError(f"descriptor sizes differ: {mu_a.shape[0]} vs {mu_b.shape[0]}")
    root = _sym_sqrt(s_a)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root @ s_b @ root), 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * cross)


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    m, n = len(x), len(y)
    kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())  # fmt: skip


def kernel_distance(
    a: np.ndarray, b: np.ndarray, subsets: int = 50, subset_size: int = 100, seed: int = 0
) -> tuple[float, float]:
    """KID: the unbiased MMD^2 with kernel (x.y / D + 1)^3, averaged over ``subsets`` random subsets
    of ``min(subset_size, len(a), len(b))`` descriptors from each set; returns (mean, std over subsets).

    Unbiased: two samples of one distribution score 0 on average (single subsets can be negative),
    which is why KID, unlike FD, can be compared across small sample sizes.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"descriptors must be [N, D] with one D, got {a.shape} and {b.shape}")
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError(f"kernel_distance needs at least 2 descriptors per set, got {len(a)} and {len(b)}")
    rng = np.random.default_rng(seed)
    values = [_mmd2_unbiased(a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)])
              for _ in range(subsets)]  # fmt: skip
    return float(np.mean(values)), float(np.std(values))


def image_descriptors(images: Iterable[np.ndarray], extractor) -> np.ndarray:
    """One descriptor per uint8 [H, W, 3] image: per-channel mean and standard deviation of the
    extractor's per-pixel feature map (``extractor(rgb) -> [H, W, C]``), so [N, 2C]."""
    out = []
    for rgb in images:
        f = np.asarray(extractor(rgb), dtype=np.float64).reshape(-1, extractor.channels)
        out.append(np.concatenate([f.mean(0), f.std(0)]))
    if not out:
        raise ValueError("image_descriptors: no images")
    return np.stack(out)
