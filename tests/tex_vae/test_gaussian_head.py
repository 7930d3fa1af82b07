"""Gaussian head: rotation maps against independent formulas, activation bounds, the 16-value layout."""

from __future__ import annotations

import math

import pytest
import torch

from earthcrafter.models.gaussian_head import (
    GaussianHead,
    GaussianLayout,
    hammersley_offsets,
    matrix_to_quaternion,
    rotation_6d_to_matrix,
)
from earthcrafter.render.gaussians import quat_to_rotmat


def _random_rotations(n: int, seed: int = 0) -> torch.Tensor:
    q = torch.randn(n, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return quat_to_rotmat(q)


def test_paper_layout_is_16_values_per_voxel():
    assert GaussianLayout().per_voxel == 16  # offset 3 + scale 3 + opacity 1 + 6-D rotation 6 + RGB 3
    assert GaussianLayout(scale_dims=2, rotation="quat", sh_degree=1, gaussians_per_voxel=4).per_voxel == 4 * (3 + 2 + 1 + 4 + 12)


def test_6d_rotation_is_orthonormal_and_proper():
    R = rotation_6d_to_matrix(torch.randn(500, 6, dtype=torch.float64))
    eye = torch.eye(3, dtype=torch.float64).expand(500, 3, 3)
    torch.testing.assert_close(R.transpose(1, 2) @ R, eye, atol=1e-10, rtol=0)
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(500, dtype=torch.float64))
    # Gram-Schmidt keeps the first vector's direction
    a = torch.tensor([[2.0, 0, 0, 1.0, 1.0, 0]], dtype=torch.float64)
    torch.testing.assert_close(rotation_6d_to_matrix(a)[0], torch.eye(3, dtype=torch.float64))


@pytest.mark.parametrize("case", ["random", "half_turns"])
def test_matrix_to_quaternion_inverts_quat_to_rotmat(case):
    if case == "random":
        R = _random_rotations(1000)
    else:  # w = 0 exactly: the formula dividing by w would fail here
        R = torch.stack([torch.diag(torch.tensor(d, dtype=torch.float64)) for d in ([1, -1, -1], [-1, 1, -1], [-1, -1, 1])])
    q = matrix_to_quaternion(R)
    torch.testing.assert_close(q.norm(dim=-1), torch.ones(len(R), dtype=torch.float64))
    assert (q[:, 0] >= 0).all()
    torch.testing.assert_close(quat_to_rotmat(q), R, atol=1e-9, rtol=0)


def test_quaternion_gradient_is_finite_near_half_turns():
    d6 = torch.tensor([[1.0, 0, 0, 0, -1.0, 1e-7]], requires_grad=True)  # ~180 deg about x
    matrix_to_quaternion(rotation_6d_to_matrix(d6)).sum().backward()
    assert torch.isfinite(d6.grad).all()


def test_hammersley_offsets_spread_inside_half_a_voxel():
    assert torch.equal(hammersley_offsets(1), torch.zeros(1, 3))
    p = hammersley_offsets(32)
    assert p.shape == (32, 3) and (p.abs() < 0.5).all()
    assert len({tuple(r) for r in p.tolist()}) == 32


def _head(k: int = 1, **kw) -> GaussianHead:
    return GaussianHead(8, GaussianLayout(gaussians_per_voxel=k), **kw)


def test_initial_surfels_match_the_biases():
    head = _head(init_scale=0.5, init_opacity=0.3)
    coords = torch.tensor([[0, 0, 0], [3, 1, 2]])
    g = head(torch.randn(2, 8), coords, torch.tensor([2.0, 2.0]))  # zero-initialised projection
    torch.testing.assert_close(g.means, (coords.float() + 0.5) * 2.0)
    torch.testing.assert_close(g.scales, torch.full((2, 3), (0.5 + 0.01) * 2.0))
    torch.testing.assert_close(g.opacities, torch.full((2,), 1e-4 + (1 - 2e-4) * 0.3))
    torch.testing.assert_close(g.quats, torch.tensor([[1.0, 0, 0, 0]]).expand(2, 4))  # horizontal, normal +z
    torch.testing.assert_close(g.sh, torch.zeros(2, 1, 3))  # DC 0: grey 0.5


@pytest.mark.parametrize("k", [1, 4])
def test_extreme_raw_values_stay_bounded(k):
    head = _head(k, offset_range=0.75)
    n = 64
    layout = head.layout
    raw = torch.randn(n, k, layout.per_gaussian) * 1e4
    coords = torch.randint(0, 50, (n, 3))
    vs = 0.5
    g = head.activate(raw, coords, torch.tensor(vs))
    g.check_values()  # finite, positive scales, opacities strictly inside (0, 1)
    centres = ((coords.float() + 0.5) * vs).repeat_interleave(k, dim=0)
    assert ((g.means - centres).abs() <= 0.75 * vs + 1e-6).all()
    assert ((g.opacities > 0) & (g.opacities < 1)).all()
    assert (g.tangent_scales >= 0.01 * vs - 1e-7).all()
    assert g.means.shape == (n * k, 3) and g.sh.shape == (n * k, 1, 3)


def test_surfel_order_is_voxel_major():
    head = _head(4)
    with torch.no_grad():
        head.proj.weight.normal_()
    feats, coords = torch.randn(3, 8), torch.tensor([[0, 0, 0], [10, 0, 0], [20, 0, 0]])
    g = head(feats, coords, torch.tensor(1.0))
    voxel_of = torch.round(g.means[:, 0] / 10).long()  # surfels stay within 0.75 of their voxel
    assert torch.equal(voxel_of, torch.arange(3).repeat_interleave(4))


def test_bad_head_settings_are_named():
    with pytest.raises(ValueError, match="init_opacity"):
        _head(init_opacity=1.0)
    with pytest.raises(ValueError, match="offset_range"):
        _head(offset_range=0.4)
    with pytest.raises(ValueError, match="sh_degree"):
        GaussianLayout(sh_degree=4)


def test_softplus_bias_inverts():
    head = _head(init_scale=0.25)
    assert math.isclose(math.log1p(math.exp(head.scale_bias)), 0.25, rel_tol=1e-12)


@pytest.mark.parametrize("layout", [GaussianLayout(), GaussianLayout(gaussians_per_voxel=3, scale_dims=2,
                                                                     rotation="quat", sh_degree=2)])  # fmt: skip
def test_zero_voxels_give_zero_surfels(layout):
    head = GaussianHead(8, layout)
    for vs in (torch.tensor(0.5), torch.zeros(0)):
        g = head(torch.zeros(0, 8), torch.zeros(0, 3, dtype=torch.int32), vs)
        assert len(g) == 0 and g.means.shape == (0, 3) and g.quats.shape == (0, 4)
        assert g.scales.shape == (0, layout.scale_dims) and g.sh.shape == (0, (layout.sh_degree + 1) ** 2, 3)


def test_positions_stay_float32_under_bf16_autocast():
    """Autocast cannot reach the position arithmetic: a voxel centre at index ~350 is exact to float32."""
    head = _head()
    coords = torch.tensor([[357, 5, 3], [300, 301, 302]])
    vs = torch.full((2,), 200.0 / 360)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        g = head.activate(torch.zeros(2, 1, head.layout.per_gaussian, dtype=torch.bfloat16), coords, vs)
    assert g.means.dtype == torch.float32
    torch.testing.assert_close(g.means, (coords.float() + 0.5) * vs[:, None])
