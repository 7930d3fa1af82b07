"""Image losses and metrics for rendered views: L1, SSIM, PSNR and (optional, local-only) LPIPS.

Images are channels-last, ``[B, H, W, C]`` or ``[H, W, C]``, as :class:`RenderOutput` gives
them, with values in ``[0, data_range]``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

log = logging.getLogger(__name__)


def _batched(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.dim() == 3:
        a, b = a[None], b[None]
    if a.dim() != 4:
        raise ValueError(f"expected [B, H, W, C] or [H, W, C] images, got {tuple(a.shape)}")
    return a, b


def l1(a: Tensor, b: Tensor) -> Tensor:
    """Mean absolute difference (scalar)."""
    a, b = _batched(a, b)
    return (a - b).abs().mean()


def psnr(a: Tensor, b: Tensor, data_range: float = 1.0) -> Tensor:
    """Mean over the batch of per-image PSNR in dB, ``10 log10(range^2 / MSE)`` (inf for identical images)."""
    a, b = _batched(a, b)
    mse = ((a - b) ** 2).flatten(1).mean(1)
    return (10 * torch.log10(data_range**2 / mse)).mean()


def gaussian_window(size: int = 11, sigma: float = 1.5, dtype: torch.dtype = torch.float32) -> Tensor:
    """1-D normalised Gaussian window [size]."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    w = torch.exp(-(x**2) / (2 * sigma**2))
    return (w / w.sum()).to(dtype)


def ssim(
    a: Tensor,
    b: Tensor,
    data_range: float = 1.0,
    window: int = 11,
    sigma: float = 1.5,
    padding: Literal["valid", "same"] = "valid",
    reduction: Literal["mean", "none"] = "mean",
) -> Tensor:
    """Structural similarity (Wang et al. 2004) with a Gaussian window, per channel, averaged.

    Local statistics use an ``window`` x ``window`` Gaussian (sigma 1.5) and the usual constants
    ``C1 = (0.01 L)^2``, ``C2 = (0.03 L)^2``. ``padding="valid"`` averages the SSIM map over
    positions where the window fits inside the image (the reference definition);
    ``"same"`` zero-pads (the 3DGS training-loss variant). ``reduction="none"`` gives [B].
    """
    a, b = _batched(a, b)
    B, H, W, C = a.shape
    if padding == "valid" and (H < window or W < window):
        raise ValueError(f"images {H}x{W} are smaller than the {window}x{window} SSIM window")
    x = a.permute(0, 3, 1, 2).reshape(B * C, 1, H, W)
    y = b.permute(0, 3, 1, 2).reshape(B * C, 1, H, W)
    w1 = gaussian_window(window, sigma, a.dtype).to(a.device)
    pad = 0 if padding == "valid" else window // 2

    def blur(t: Tensor) -> Tensor:
        t = F.conv2d(t, w1.view(1, 1, -1, 1), padding=(pad, 0))
        return F.conv2d(t, w1.view(1, 1, 1, -1), padding=(0, pad))

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    smap = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    per_image = smap.reshape(B, C, -1).mean(dim=(1, 2))
    return per_image if reduction == "none" else per_image.mean()


# torchvision checkpoint names of the LPIPS backbones; they must already be on disk.
LPIPS_BACKBONE_FILES = {"vgg": "vgg16-397923af.pth", "alex": "alexnet-owt-7be5be79.pth"}


class LPIPSMetric(torch.nn.Module):
    """Wraps an ``lpips.LPIPS`` model to take channels-last images in [0, 1]; returns the batch mean."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        a, b = _batched(a, b)
        to_nchw = lambda t: t.permute(0, 3, 1, 2) * 2 - 1  # noqa: E731 - lpips wants [-1, 1]
        return self.model(to_nchw(a), to_nchw(b)).mean()


def _find_backbone(net: str, weights_dir: str | os.PathLike | None) -> Path | None:
    name = LPIPS_BACKBONE_FILES[net]
    dirs = []
    if weights_dir is not None:
        dirs += [Path(weights_dir), Path(weights_dir) / "checkpoints"]
    dirs.append(Path(torch.hub.get_dir()) / "checkpoints")
    return next((d / name for d in dirs if (d / name).is_file()), None)


def load_lpips(net: Literal["vgg", "alex"] = "vgg", weights_dir: str | os.PathLike | None = None) -> LPIPSMetric | None:
    """LPIPS from local files only, or None (with the reason logged). Never downloads.

    Needs the ``lpips`` package (its linear heads ship inside it) and the torchvision backbone
    checkpoint ``LPIPS_BACKBONE_FILES[net]`` in ``weights_dir``, ``weights_dir/checkpoints`` or
    the torch hub cache. The backbone is built without weights and loaded from that file.
    """
    if net not in LPIPS_BACKBONE_FILES:
        raise ValueError(f"net must be one of {sorted(LPIPS_BACKBONE_FILES)}, got {net!r}")
    try:
        import lpips
    except ImportError:
        log.info("LPIPS(%s) disabled: the 'lpips' package is not installed", net)
        return None
    ckpt = _find_backbone(net, weights_dir)
    if ckpt is None:
        log.info(
            "LPIPS(%s) disabled: backbone weights %s not found under %s or the torch hub cache",
            net, LPIPS_BACKBONE_FILES[net], weights_dir,
        )  # fmt: skip
        return None
    model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    # lpips keeps torchvision's layer indices inside slices: "slice2.5.weight" <- "features.5.weight".
    mapped = {}
    for key in model.net.state_dict():
        src = "features." + key.split(".", 1)[1]
        if src not in state:
            log.warning("LPIPS(%s) disabled: %s lacks %s (not a torchvision %s checkpoint?)", net, ckpt, src, net)
            return None
        mapped[key] = state[src]
    model.net.load_state_dict(mapped)
    log.info("LPIPS(%s) loaded from %s", net, ckpt)
    return LPIPSMetric(model)
