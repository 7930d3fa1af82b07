"""Pure-torch 2DGS rasteriser (CPU and CUDA), differentiable through plain torch ops.

Per camera: :func:`~earthcrafter.render.project.project_surfels` culls the surfels and packs
their screen-space parameters (ray-splat intersection in homogeneous-plane form, opacity-aware
footprint boxes); :func:`~earthcrafter.render.composite.choose_tile_size` picks the tile edge;
:func:`~earthcrafter.render.composite.bin_tiles` and
:func:`~earthcrafter.render.composite.composite_tiles` sort and composite front to back.

Outputs per pixel: ``rgb = sum w_i c_i + T bg``, ``alpha = 1 - T``, ``normals = sum w_i n_i``
(world space, each surfel normal flipped to face the camera, not renormalised) and
``depth = sum w_i z_i / max(alpha, 1e-10)`` (0 where nothing is hit). With
``splat_depth="intersection"`` (default, as in the 2DGS paper) ``z_i`` is the camera depth
of the ray-surfel hit, clamped to the depth range of the surfel's support disk
``u^2 + v^2 <= 2 ln 255`` (which only matters where the screen filter term wins far from the
surfel, e.g. for edge-on or sub-pixel surfels) and the centre depth where the ray misses the
plane in front of the camera. With ``splat_depth="center"`` it is the surfel centre depth,
which is what gsplat's "RGB+ED" mode composites.

Memory: when the autograd graph of a camera would exceed ``saved_bytes_budget``, every block
is recomputed in backward instead of kept (activation checkpointing), bounding memory by one
block; otherwise the graph is kept, which makes backward about 25% faster.
"""

from __future__ import annotations

import torch
from torch import Tensor

from earthcrafter.render.composite import BYTES_PER_ELEMENT, bin_tiles, choose_tile_size, composite_tiles, untile
from earthcrafter.render.gaussians import Gaussians2D
from earthcrafter.render.project import project_surfels


def rasterize_torch(
    g: Gaussians2D,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    *,
    near: float = 0.01,
    far: float = 1e10,
    backgrounds: Tensor | None = None,
    tile_size: int | None = None,
    splat_depth: str = "intersection",
    max_block: int = 1 << 21,
    seg_len: int = 64,
    checkpoint_blocks: bool | None = None,
    saved_bytes_budget: int = 1 << 30,
) -> dict[str, Tensor]:
    """Render C cameras with the torch reference; see the module docstring for the model.

    Returns a dict of [C, H, W, F] tensors: rgb (3), alpha (1), depth (1), normals (3), and
    ``n_visible`` [C] (surfels that survived culling). With autograd on, blocks are
    recomputed in backward (``checkpoint_blocks``) when the graph of a camera would hold more
    than ``saved_bytes_budget`` bytes (estimated at ``BYTES_PER_ELEMENT`` per pixel-surfel pair).
    """
    if splat_depth not in ("intersection", "center"):
        raise ValueError(f"splat_depth must be 'intersection' or 'center', got {splat_depth!r}")
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in g.tensors())
    outs: dict[str, list[Tensor]] = {"rgb": [], "alpha": [], "depth": [], "normals": [], "n_visible": []}
    for c in range(viewmats.shape[0]):
        proj = project_surfels(g, viewmats[c], Ks[c], width, height, near, far)
        ts = tile_size or choose_tile_size(proj.pixel_box)
        bins = bin_tiles(proj.pixel_box, ts, width, height)
        recompute = checkpoint_blocks
        if recompute is None:  # keep the graph when it fits the budget: ~25% faster backward
            graph_bytes = int(bins.counts.sum()) * ts * ts * BYTES_PER_ELEMENT * g.means.element_size() // 4
            recompute = needs_grad and graph_bytes > saved_bytes_budget
        sums, log_t = composite_tiles(proj, bins, ts, near, splat_depth == "center", max_block, seg_len, recompute)
        sums = untile(sums, bins, ts, width, height)
        trans = torch.exp(untile(log_t[..., None], bins, ts, width, height))
        alpha = 1.0 - trans
        rgb = sums[..., :3] if backgrounds is None else sums[..., :3] + trans * backgrounds[c].to(sums.dtype)
        outs["rgb"].append(rgb)
        outs["normals"].append(sums[..., 3:6])
        outs["depth"].append(sums[..., 6:7] / alpha.clamp_min(1e-10))
        outs["alpha"].append(alpha)
        outs["n_visible"].append(torch.tensor(len(proj.ids)))
    return {k: torch.stack(v) for k, v in outs.items()}
