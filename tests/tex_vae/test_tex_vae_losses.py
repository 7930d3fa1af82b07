"""SSIM map against earthcrafter.render.metrics.ssim; LPIPS availability is reported, never fatal."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from earthcrafter.models.tex_vae_losses import LpipsPair, ssim_map
from earthcrafter.render.metrics import ssim


def test_ssim_map_interior_equals_the_reference_ssim():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(3, 40, 36, 3, generator=g, dtype=torch.float64)
    b = (a + 0.1 * torch.randn(a.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    smap = ssim_map(a, b)
    assert smap.shape == (3, 40, 36)
    interior = smap[:, 5:-5, 5:-5].flatten(1).mean(1)  # where the 11x11 window fits: "valid" SSIM
    torch.testing.assert_close(interior, ssim(a, b, padding="valid", reduction="none"), atol=1e-10, rtol=0)
    torch.testing.assert_close(ssim_map(a, a), torch.ones(3, 40, 36, dtype=torch.float64))
    assert float(ssim_map(a, 1 - a).mean()) < 0.0  # anti-correlated images


def test_ssim_map_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\[V, H, W, 3\]"):
        ssim_map(torch.rand(2, 8, 8), torch.rand(2, 8, 8))


def test_lpips_pair_reports_why_it_is_off():
    off = LpipsPair.load(want_vgg=False, want_alex=False)
    assert not off.available and off.status == "disabled: weights 0 in the loss configuration"
    assert off.losses(torch.rand(1, 8, 8, 3), torch.rand(1, 8, 8, 3)) == {}
    pair = LpipsPair.load()
    if importlib.util.find_spec("lpips") is None:
        assert pair.status == "disabled: the 'lpips' package is not installed"
    elif not pair.available:
        assert pair.status.startswith("disabled: vgg: backbone vgg16")
