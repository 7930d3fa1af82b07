"""Image terms of the TexVAE loss: a per-pixel SSIM map and the VGG + AlexNet LPIPS pair.

Images are [V, H, W, 3] float in [0, 1] (the rasteriser's layout). The SSIM *map* (rather
than :func:`earthcrafter.render.metrics.ssim`'s per-image value) is what lets validation
average SSIM over the pixels that show the tile; LPIPS comes from
:func:`earthcrafter.render.metrics.load_lpips` (local weights only).
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from earthcrafter.render.metrics import LPIPS_BACKBONE_FILES, gaussian_window, load_lpips

log = logging.getLogger(__name__)


def ssim_map(pred: Tensor, target: Tensor, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Per-pixel SSIM [V, H, W] (mean over channels) of images [V, H, W, 3] in [0, 1].

    Gaussian window (11, sigma 1.5) as in Wang et al. 2004, constants (0.01, 0.03)^2, borders
    zero-padded with the statistics renormalised by the window mass inside the image, so the
    map is defined (and comparable) at every pixel of small images.

    Computed and returned in float32 (float64 inputs stay float64) with autocast off: the variances
    ``blur(x^2) - mu^2`` cancel catastrophically in bf16/fp16 (values > 1, near-random gradients).
    """
    if pred.shape != target.shape or pred.dim() != 4 or pred.shape[-1] != 3:
        raise ValueError(f"ssim_map: expected two [V, H, W, 3] images, got {tuple(pred.shape)} and {tuple(target.shape)}")
    dtype = torch.promote_types(torch.promote_types(pred.dtype, target.dtype), torch.float32)
    with torch.autocast(device_type=pred.device.type, enabled=False):
        return _ssim_map(pred.to(dtype), target.to(dtype), window, sigma)


def _ssim_map(pred: Tensor, target: Tensor, window: int, sigma: float) -> Tensor:
    x, y = pred.permute(0, 3, 1, 2), target.permute(0, 3, 1, 2)
    c = x.shape[1]
    g = gaussian_window(window, sigma, x.dtype).to(x.device)
    pad = window // 2

    def blur(t: Tensor) -> Tensor:  # separable Gaussian, zero padding
        t = F.conv2d(F.pad(t, (pad, pad, 0, 0)), g.view(1, 1, 1, -1).expand(c, 1, 1, window), groups=c)
        return F.conv2d(F.pad(t, (0, 0, pad, pad)), g.view(1, 1, -1, 1).expand(c, 1, window, 1), groups=c)

    mass = blur(torch.ones_like(x[:1]))
    mu_x, mu_y = blur(x) / mass, blur(y) / mass
    var_x = blur(x * x) / mass - mu_x**2
    var_y = blur(y * y) / mass - mu_y**2
    cov = blur(x * y) / mass - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.mean(1)


@dataclass
class LpipsPair:
    """LPIPS with VGG and AlexNet backbones (the paper sums both); either may be missing.

    ``reason`` says why a backbone is unavailable (recorded in the MLflow run).
    """

    vgg: nn.Module | None = None
    alex: nn.Module | None = None
    reason: str = ""

    @classmethod
    def disabled(cls, reason: str) -> LpipsPair:
        return cls(None, None, reason)

    @classmethod
    def load(cls, want_vgg: bool = True, want_alex: bool = True, weights_dir: str | None = None) -> LpipsPair:
        """Load the requested backbones from local files only (never downloads)."""
        if not (want_vgg or want_alex):
            return cls.disabled("weights 0 in the loss configuration")
        if importlib.util.find_spec("lpips") is None:
            return cls.disabled("the 'lpips' package is not installed")
        nets, reasons = {}, []
        for name, wanted in (("vgg", want_vgg), ("alex", want_alex)):
            if not wanted:
                continue
            try:
                net = load_lpips(name, weights_dir)
            except Exception as e:  # a broken local cache must not stop training
                net, why = None, f"{type(e).__name__}: {e}"
            else:
                why = f"backbone {LPIPS_BACKBONE_FILES[name]} not found locally"
            if net is None:
                reasons.append(f"{name}: {why}")
            else:
                nets[name] = net.eval().requires_grad_(False)
        return cls(nets.get("vgg"), nets.get("alex"), "; ".join(reasons))

    @property
    def available(self) -> bool:
        return self.vgg is not None or self.alex is not None

    @property
    def status(self) -> str:
        """``enabled: vgg+alex`` or ``disabled: <reason>`` (MLflow tag ``lpips``)."""
        on = [n for n in ("vgg", "alex") if getattr(self, n) is not None]
        if not on:
            return f"disabled: {self.reason or 'unavailable'}"
        return "enabled: " + "+".join(on) + (f" ({self.reason})" if self.reason else "")

    def losses(
        self, pred: Tensor, target: Tensor, vgg: bool = True, alex: bool = True, per_view: bool = False
    ) -> dict[str, Tensor]:
        """``{"lpips_vgg": ..., "lpips_alex": ...}`` for the loaded backbones (mean, or [V] when ``per_view``)."""
        out = {}
        for name, use in (("vgg", vgg), ("alex", alex)):
            net = getattr(self, name)
            if net is None or not use:
                continue
            net.to(pred.device)
            if per_view:
                out[f"lpips_{name}"] = torch.stack([net(p, t) for p, t in zip(pred, target)])
            else:
                out[f"lpips_{name}"] = net(pred, target)
        return out
