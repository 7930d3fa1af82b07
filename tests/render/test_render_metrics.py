"""L1 / PSNR / SSIM against direct computations, and LPIPS's local-only loading."""

import logging
import sys
import types

import numpy as np
import pytest
import torch
from scipy.signal import convolve2d

from earthcrafter.render import l1, load_lpips, psnr, ssim


def _ssim_direct(x: np.ndarray, y: np.ndarray, mode: str, L: float = 1.0) -> float:
    """SSIM of two [H, W, C] images with a full 2-D 11x11 Gaussian window (sigma 1.5), per channel."""
    ax = np.arange(11) - 5.0
    w = np.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2 * 1.5**2))
    w /= w.sum()
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    vals = []
    for c in range(x.shape[2]):
        a, b = x[..., c], y[..., c]
        f = lambda t: convolve2d(t, w, mode=mode)  # noqa: E731  (symmetric window: convolution = correlation)
        ma, mb = f(a), f(b)
        va, vb, cov = f(a * a) - ma**2, f(b * b) - mb**2, f(a * b) - ma * mb
        vals.append(((2 * ma * mb + c1) * (2 * cov + c2) / ((ma**2 + mb**2 + c1) * (va + vb + c2))).mean())
    return float(np.mean(vals))


@pytest.mark.parametrize("padding,mode", [("valid", "valid"), ("same", "same")])
def test_ssim_matches_direct_computation(padding, mode):
    rng = np.random.default_rng(0)
    x = rng.random((2, 24, 19, 3))
    y = np.clip(x + 0.1 * rng.standard_normal(x.shape), 0, 1)
    got = ssim(torch.from_numpy(x), torch.from_numpy(y), padding=padding, reduction="none")
    expect = [_ssim_direct(x[i], y[i], mode) for i in range(2)]
    np.testing.assert_allclose(got.numpy(), expect, rtol=1e-10)


def test_ssim_known_values_and_gradient():
    x = torch.rand(16, 16, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert ssim(x, x).item() == pytest.approx(1.0, abs=1e-12)
    # a constant image against a constant image: only the luminance term is left
    a, b = torch.full((16, 16, 1), 0.2, dtype=torch.float64), torch.full((16, 16, 1), 0.6, dtype=torch.float64)
    c1 = 0.01**2
    assert ssim(a, b).item() == pytest.approx((2 * 0.2 * 0.6 + c1) / (0.04 + 0.36 + c1), rel=1e-9)
    y = x.clone().requires_grad_(True)
    (1 - ssim(x * 0.9, y)).backward()
    assert torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


def test_ssim_rejects_small_images_in_valid_mode():
    with pytest.raises(ValueError, match="smaller than"):
        ssim(torch.rand(8, 8, 3), torch.rand(8, 8, 3))


def test_psnr_and_l1():
    x = torch.zeros(2, 4, 4, 3)
    y = torch.full_like(x, 0.1)
    assert psnr(x, y).item() == pytest.approx(20.0, abs=1e-4)
    assert psnr(x, y, data_range=255.0).item() == pytest.approx(20 * np.log10(2550), abs=1e-3)
    assert l1(x, y).item() == pytest.approx(0.1)
    assert psnr(x, x).item() == float("inf")
    with pytest.raises(ValueError, match="shapes differ"):
        l1(x, y[0])


def test_lpips_without_package_returns_none(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "lpips", None)  # import lpips -> ImportError
    with caplog.at_level(logging.INFO):
        assert load_lpips("vgg") is None
    assert "not installed" in caplog.text


class _FakeLPIPS(torch.nn.Module):
    """Mimics lpips.LPIPS's layout: torchvision layer indices kept inside slices."""

    def __init__(self, net, pretrained, pnet_rand, verbose):
        super().__init__()
        assert pnet_rand, "the backbone must be built without downloading weights"
        self.net = torch.nn.Module()
        self.net.slice1 = torch.nn.Sequential()
        self.net.slice1.add_module("0", torch.nn.Conv2d(3, 4, 3))
        self.net.slice2 = torch.nn.Sequential()
        self.net.slice2.add_module("2", torch.nn.Conv2d(4, 4, 3))

    def forward(self, a, b):
        return ((self.net.slice1(a) - self.net.slice1(b)) ** 2).mean(dim=(1, 2, 3))


def test_lpips_loads_backbone_from_local_file_only(monkeypatch, tmp_path, caplog):
    monkeypatch.setitem(sys.modules, "lpips", types.SimpleNamespace(LPIPS=_FakeLPIPS))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with caplog.at_level(logging.INFO):
        assert load_lpips("alex", weights_dir=tmp_path) is None
    assert "alexnet-owt-7be5be79.pth" in caplog.text

    src = _FakeLPIPS("alex", True, True, False)
    state = {f"features.{k.split('.', 1)[1]}": v.clone() + 1 for k, v in src.net.state_dict().items()}
    torch.save(state, tmp_path / "alexnet-owt-7be5be79.pth")
    metric = load_lpips("alex", weights_dir=tmp_path)
    assert metric is not None
    torch.testing.assert_close(metric.model.net.slice2[0].weight, state["features.2.weight"])
    x = torch.rand(1, 8, 8, 3)
    assert metric(x, x).item() == 0.0 and metric(x, 1 - x).item() > 0
