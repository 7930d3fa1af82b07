"""Spherical harmonics: identities any correct real SH basis satisfies, plus the 3DGS ordering."""

import math

import numpy as np
import pytest
import torch

from earthcrafter.render import rgb_to_sh_dc, sh_basis, sh_to_rgb
from earthcrafter.render.sh import C0


def _sphere_quadrature(n_theta=64, n_phi=128):
    """Gauss-Legendre in cos(theta) x uniform in phi: exact for polynomials of degree < 2 n_theta."""
    x, w = np.polynomial.legendre.leggauss(n_theta)
    phi = np.arange(n_phi) * 2 * np.pi / n_phi
    ct, ph = np.meshgrid(x, phi, indexing="ij")
    st = np.sqrt(1 - ct**2)
    dirs = np.stack([st * np.cos(ph), st * np.sin(ph), ct], -1).reshape(-1, 3)
    weights = (w[:, None] * np.full(n_phi, 2 * np.pi / n_phi)).reshape(-1)
    return torch.from_numpy(dirs), torch.from_numpy(weights)


def test_basis_is_orthonormal_on_the_sphere():
    dirs, w = _sphere_quadrature()
    Y = sh_basis(dirs, 3)  # [Q, 16]
    gram = (Y * w[:, None]).T @ Y
    torch.testing.assert_close(gram, torch.eye(16, dtype=gram.dtype), atol=1e-12, rtol=0)


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_addition_theorem(degree):
    """sum_m Y_lm(d)^2 = (2l + 1) / (4 pi) for every direction: independent of sign conventions."""
    d = torch.randn(200, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(degree))
    Y = sh_basis(d, degree)
    for band in range(degree + 1):
        s = (Y[:, band**2 : (band + 1) ** 2] ** 2).sum(-1)
        torch.testing.assert_close(s, torch.full_like(s, (2 * band + 1) / (4 * math.pi)), atol=1e-12, rtol=0)


def test_bands_are_homogeneous_polynomials_of_their_degree():
    """Y_l(-d) = (-1)^l Y_l(d), and the basis ignores the length of d."""
    d = torch.randn(50, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    Y, Yneg, Ylong = sh_basis(d, 3), sh_basis(-d, 3), sh_basis(3.7 * d, 3)
    sign = torch.tensor([(-1) ** int(math.isqrt(k)) for k in range(16)], dtype=torch.float64)
    torch.testing.assert_close(Yneg, Y * sign, atol=1e-14, rtol=0)
    torch.testing.assert_close(Ylong, Y, atol=1e-14, rtol=0)


def test_3dgs_ordering_and_signs_of_degree_one():
    d = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    c1 = math.sqrt(3 / (4 * math.pi))
    expect = torch.tensor([[0, c1, 0], [0, 0, -c1], [-c1, 0, 0]], dtype=torch.float64)
    torch.testing.assert_close(sh_basis(d, 1)[:, 1:], expect, atol=1e-15, rtol=0)


def test_degree_zero_colour_identity():
    rgb = torch.rand(10, 3, dtype=torch.float64)
    dirs = torch.randn(10, 3, dtype=torch.float64)
    sh = rgb_to_sh_dc(rgb)[:, None, :]
    torch.testing.assert_close(sh_to_rgb(sh, dirs, 0), rgb, atol=1e-15, rtol=0)
    assert C0 == pytest.approx(0.5 / math.sqrt(math.pi), abs=1e-16)
    # higher coefficients present but unused at degree 0
    sh16 = torch.cat([sh, torch.randn(10, 15, 3, dtype=torch.float64)], 1)
    torch.testing.assert_close(sh_to_rgb(sh16, dirs, 0), rgb, atol=1e-15, rtol=0)


def test_colour_is_clamped_at_zero_only():
    sh = torch.tensor([[[-10.0, 0.0, 10.0]]])
    out = sh_to_rgb(sh, torch.tensor([[0.0, 0.0, 1.0]]), 0)
    assert out[0, 0] == 0 and out[0, 1] == 0.5 and out[0, 2] > 1


def test_too_few_coefficients_raise():
    with pytest.raises(ValueError, match="coefficients"):
        sh_to_rgb(torch.zeros(2, 4, 3), torch.ones(2, 3), 2)
