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


def test_ssim_map_is_float32_under_bf16_autocast():
    """In bf16 the variances blur(x^2) - mu^2 cancel (SSIM > 1, near-random gradients): the map is
    computed in float32 whatever the autocast, and so are its gradients."""
    import torch.nn.functional as F

    torch.manual_seed(0)
    base = F.interpolate(torch.rand(4, 3, 8, 8), size=(64, 64), mode="bilinear", align_corners=False)
    target = (0.3 + 0.4 * base).permute(0, 2, 3, 1).contiguous()  # smooth, photo-like
    pred = (target + 0.02 * torch.randn_like(target)).clamp(0, 1)
    p32, p16 = pred.clone().requires_grad_(True), pred.clone().requires_grad_(True)
    ref = ssim_map(p32, target)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = ssim_map(p16, target)
    assert low.dtype == torch.float32 and float(low.detach().max()) <= 1.0 + 1e-6
    torch.testing.assert_close(low, ref, atol=1e-6, rtol=0)
    g32, = torch.autograd.grad(ref.mean(), p32)
    g16, = torch.autograd.grad(low.mean(), p16)
    torch.testing.assert_close(g16, g32, atol=1e-8, rtol=1e-5)
    assert ssim_map(pred.bfloat16(), target.bfloat16()).dtype == torch.float32  # low-precision inputs too
