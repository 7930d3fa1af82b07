"""One entry point for 2DGS rendering: :func:`rasterize_2dgs`, with a torch and a gsplat backend.

Cameras follow :mod:`earthcrafter.geometry.cameras`: ``viewmats`` are world-to-camera (OpenCV:
x right, y down, z forward), ``Ks`` are pixel intrinsics, pixel (u, v) has its centre at
(u + 0.5, v + 0.5).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from earthcrafter.geometry.cameras import Camera
from earthcrafter.render.gaussians import Gaussians2D
from earthcrafter.render.rasterize_gsplat import gsplat_available, rasterize_gsplat
from earthcrafter.render.rasterize_torch import rasterize_torch

log = logging.getLogger(__name__)
Backend = Literal["auto", "torch", "gsplat"]
_logged_backends: set[str] = set()


@dataclass
class RenderOutput:
    """Rendered maps for C cameras.

    rgb: [C, H, W, 3] composited colour plus ``(1 - alpha) * background``.
    alpha: [C, H, W, 1] accumulated opacity ``1 - T``.
    depth: [C, H, W, 1] expected camera z, normalised: ``sum w_i z_i / max(alpha, 1e-10)``
        (0 where alpha is 0; mask with ``alpha``).
    normals: [C, H, W, 3] world-space ``sum w_i n_i`` of camera-facing surfel normals, not
        renormalised (length ~ alpha); normalise for a unit normal map.
    n_visible: [C] surfels that survived culling per camera.
    backend: "torch" or "gsplat".
    """

    rgb: Tensor
    alpha: Tensor
    depth: Tensor
    normals: Tensor
    n_visible: Tensor
    backend: str


def stack_cameras(
    cameras: Sequence[Camera], device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor, int, int]:
    """``earthcrafter.geometry.cameras.Camera`` list -> (viewmats [C, 4, 4], Ks [C, 3, 3], width, height).

    All cameras must share one image size.
    """
    if not cameras:
        raise ValueError("stack_cameras: no cameras")
    sizes = {(c.width, c.height) for c in cameras}
    if len(sizes) != 1:
        raise ValueError(f"stack_cameras: cameras differ in image size {sorted(sizes)}")
    V = torch.tensor(np.stack([c.world_to_camera for c in cameras]), device=device, dtype=dtype)
    K = torch.tensor(np.stack([c.K for c in cameras]), device=device, dtype=dtype)
    (w, h), = sizes
    return V, K, w, h


def resolve_backend(backend: Backend, device: torch.device) -> str:
    """'auto' -> 'gsplat' when gsplat is importable and the tensors are on CUDA, else 'torch'."""
    if backend == "auto":
        return "gsplat" if device.type == "cuda" and gsplat_available() else "torch"
    if backend == "gsplat":
        if not gsplat_available():
            raise RuntimeError("backend='gsplat' requested but the gsplat package is not installed")
        if device.type != "cuda":
            raise RuntimeError(f"backend='gsplat' needs CUDA tensors, got device {device}")
        return backend
    if backend == "torch":
        return backend
    raise ValueError(f"backend must be 'auto', 'torch' or 'gsplat', got {backend!r}")


def _check_cameras(viewmats: Tensor, Ks: Tensor, width: int, height: int) -> None:
    if viewmats.dim() != 3 or viewmats.shape[1:] != (4, 4):
        raise ValueError(f"viewmats: expected [C, 4, 4] world-to-camera, got {tuple(viewmats.shape)}")
    if Ks.shape != (viewmats.shape[0], 3, 3):
        raise ValueError(f"Ks: expected [{viewmats.shape[0]}, 3, 3] pixel intrinsics, got {tuple(Ks.shape)}")
    if not (torch.isfinite(viewmats).all() and torch.isfinite(Ks).all()):
        raise ValueError("viewmats / Ks: non-finite values")
    if int(width) <= 0 or int(height) <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")


def _backgrounds(background: Tensor | None, n_cams: int, device: torch.device, dtype: torch.dtype) -> Tensor | None:
    if background is None:
        return None
    bg = torch.as_tensor(background, device=device, dtype=dtype)
    if bg.shape == (3,):
        bg = bg.expand(n_cams, 3)
    if bg.shape != (n_cams, 3):
        raise ValueError(f"background: expected [3] or [{n_cams}, 3], got {tuple(bg.shape)}")
    return bg


def rasterize_2dgs(
    gaussians: Gaussians2D,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    *,
    near: float = 0.01,
    far: float = 1e10,
    background: Tensor | None = None,
    backend: Backend = "auto",
    tile_size: int | None = None,
    splat_depth: Literal["intersection", "center"] = "intersection",
    max_block: int = 1 << 21,
) -> RenderOutput:
    """Render 2D Gaussian surfels into C views.

    Args:
        gaussians: the surfels (activated values, see :class:`Gaussians2D`).
        viewmats: [C, 4, 4] world-to-camera, OpenCV.
        Ks: [C, 3, 3] intrinsics in pixels.
        width, height: image size in pixels.
        near, far: surfels whose centre depth is outside (near, far) are culled.
        background: [3] or [C, 3] colour behind the surfels (default black).
        backend: "torch" (CPU/CUDA reference), "gsplat" (CUDA) or "auto".
        tile_size: the torch backend's tile edge in pixels. None: it picks 2, 4, 8 or 16 per camera
            from the footprint sizes (see ``choose_tile_size``). gsplat always uses 16, the only
            size it tests: its 2DGS backward reduces a tile's pixels in 32-thread warps.
        splat_depth: torch backend only; "intersection" composites the ray-surfel hit depth
            (2DGS), "center" the surfel centre depth (gsplat's choice).
        max_block: torch backend only; largest [tiles x pixels x surfels] block held at once.

    Gradients reach means, quats, scales, opacities and sh through either backend.
    """
    _check_cameras(viewmats, Ks, width, height)
    dev = gaussians.device
    name = resolve_backend(backend, dev)
    if name not in _logged_backends:
        log.info("2DGS rasterisation backend: %s (device %s)", name, dev)
        _logged_backends.add(name)
    viewmats, Ks = viewmats.to(dev), Ks.to(dev)
    bgs = _backgrounds(background, viewmats.shape[0], dev, gaussians.dtype)
    if tile_size is not None and tile_size < 1:
        raise ValueError(f"tile_size must be >= 1 or None, got {tile_size}")
    common = dict(near=near, far=far, backgrounds=bgs)
    if name == "gsplat":
        out = rasterize_gsplat(gaussians, viewmats, Ks, int(width), int(height), tile_size=16, **common)
    else:
        out = rasterize_torch(
            gaussians, viewmats, Ks, int(width), int(height), tile_size=tile_size, splat_depth=splat_depth,
            max_block=max_block, **common,
        )  # fmt: skip
    return RenderOutput(backend=name, **out)
