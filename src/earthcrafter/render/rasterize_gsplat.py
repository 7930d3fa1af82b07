"""gsplat backend: ``gsplat.rasterization_2dgs`` on CUDA, mapped to earthcrafter's outputs.

gsplat (checked against its 1.x ``rasterization_2dgs``) returns, for ``render_mode="RGB+ED"``:
colours [C, H, W, 3 + 1] whose last channel is the *centre* camera depth of each surfel
composited and divided by ``alpha.clamp_min(1e-10)``; alphas [C, H, W, 1]; and normals
[C, H, W, 3] composited in camera space and rotated to world space (surfel normals flipped
to face the camera). That is the torch backend with ``splat_depth="center"``. Two small
differences remain: gsplat centres the screen filter on the centre of the 1-sigma ellipse's
bounding box rather than on the projected surfel centre (the same point for surfels small
against their depth), and bounds each footprint by a square of radius 3 sigma (plus whole
tiles), where the torch backend keeps every pixel with alpha >= 1/255 (up to 3.33 sigma and
the screen filter's reach).
"""

from __future__ import annotations

import importlib.util

import torch
from torch import Tensor

from earthcrafter.render.gaussians import Gaussians2D


def gsplat_available() -> bool:
    """True when the ``gsplat`` package is importable (it still needs CUDA tensors to run)."""
    return importlib.util.find_spec("gsplat") is not None


def rasterize_gsplat(
    g: Gaussians2D,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    *,
    near: float = 0.01,
    far: float = 1e10,
    backgrounds: Tensor | None = None,
    tile_size: int = 16,
) -> dict[str, Tensor]:
    """Render with gsplat; same outputs as :func:`earthcrafter.render.rasterize_torch.rasterize_torch`."""
    from gsplat import rasterization_2dgs  # CUDA kernels compile on first use

    if g.device.type != "cuda":
        raise ValueError(f"the gsplat backend needs CUDA tensors, got device {g.device}")
    f32 = torch.float32  # the kernels are float32 only
    scales = g.scales.to(f32)
    if scales.shape[1] == 2:  # gsplat wants [N, 3]; the third axis is unused by 2DGS
        scales = torch.cat([scales, torch.ones_like(scales[:, :1])], dim=1)
    colors, alphas, normals, _, _, _, meta = rasterization_2dgs(
        means=g.means.to(f32),
        quats=g.quats.to(f32),
        scales=scales,
        opacities=g.opacities.to(f32),
        colors=g.sh.to(f32),
        viewmats=viewmats.to(f32),
        Ks=Ks.to(f32),
        width=width,
        height=height,
        near_plane=near,
        far_plane=far,
        sh_degree=g.sh_degree,
        tile_size=tile_size,
        backgrounds=None if backgrounds is None else backgrounds.to(f32),
        render_mode="RGB+ED",
        packed=False,
    )
    back = lambda t: t.to(g.dtype)  # noqa: E731
    return {
        "rgb": back(colors[..., :3]),
        "depth": back(colors[..., 3:4]),
        "alpha": back(alphas),
        "normals": back(normals),
        "n_visible": _count_visible(meta.get("radii")),
    }


def _count_visible(radii: Tensor | None) -> Tensor:
    """Surfels with a non-empty footprint per camera, from gsplat's ``radii`` [C, N] or [C, N, 2]."""
    if radii is None:
        return torch.tensor([-1])
    vis = radii > 0
    if vis.dim() == 3:
        vis = vis.all(-1)
    return vis.sum(-1).long().cpu()
