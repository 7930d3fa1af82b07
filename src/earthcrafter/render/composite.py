"""Tile binning and front-to-back compositing (the second half of the torch backend).

Surfels are binned into square tiles by their pixel boxes and each tile's list keeps the
centre-depth order. Every pixel composites front to back: ``w_i = alpha_i T_i`` with
``T_i = prod_{j<i} (1 - alpha_j)``, evaluated as ``exp(cumsum(log1p(-alpha)))`` over a padded
[tiles, pixels, surfels] block. Tiles are processed in groups, each group walking its lists
``seg_len`` surfels at a time and carrying T between steps, so no block exceeds
``max_block`` elements. A pixel stops at the first surfel that would take T to <= 1e-4 (that
surfel is excluded, as in gsplat); tiles whose pixels have all stopped leave the loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from earthcrafter.render.project import (
    ALPHA_MAX, ALPHA_MIN, FILTER_INV_SQUARE, LOG_T_MIN, Q_EPS, UV_MAX, Col, ProjectedSurfels,
)  # fmt: skip

BYTES_PER_ELEMENT = 96  # autograd memory per (pixel, surfel) pair of a block, measured (float32)
TILE_SIZES = (2, 4, 8, 16)
PAIR_COST = 8.0  # per (tile, surfel) overhead in units of one pixel evaluation (measured on CPU)


@dataclass
class TileBins:
    """Surfel lists per tile: ``flat[offsets[t] : offsets[t] + counts[t]]`` (front to back)."""

    flat: Tensor  # [n_pairs] int64 rows of ProjectedSurfels.params
    offsets: Tensor  # [n_tiles] int64
    counts: Tensor  # [n_tiles] int64
    tiles_x: int
    tiles_y: int


@torch.no_grad()
def choose_tile_size(pixel_box: Tensor, candidates: tuple[int, ...] = TILE_SIZES) -> int:
    """Tile edge minimising the estimated work ``pairs(t) * (t^2 + PAIR_COST)``.

    Small tiles waste fewer pixel evaluations on small footprints; large tiles create fewer
    (tile, surfel) pairs, each with a fixed gather/sort cost, on large footprints.
    """
    if len(pixel_box) == 0:
        return candidates[-1]
    costs = []
    for t in candidates:
        tb = pixel_box // t
        pairs = ((tb[:, 2] - tb[:, 0] + 1) * (tb[:, 3] - tb[:, 1] + 1)).sum().item()
        costs.append(pairs * (t * t + PAIR_COST))
    return candidates[min(range(len(costs)), key=costs.__getitem__)]


def bin_tiles(pixel_box: Tensor, tile_size: int, width: int, height: int) -> TileBins:
    """Assign each surfel to every tile its pixel box touches; keep depth order within tiles."""
    tiles_x, tiles_y = math.ceil(width / tile_size), math.ceil(height / tile_size)
    tb = pixel_box // tile_size  # [M, 4] tile bounds
    nx, ny = tb[:, 2] - tb[:, 0] + 1, tb[:, 3] - tb[:, 1] + 1
    cnt = nx * ny
    dev = pixel_box.device
    g = torch.repeat_interleave(torch.arange(len(cnt), device=dev), cnt)
    local = torch.arange(int(cnt.sum()), device=dev) - torch.repeat_interleave(torch.cumsum(cnt, 0) - cnt, cnt)
    nxg = nx[g]
    tile = (tb[g, 1] + local // nxg) * tiles_x + tb[g, 0] + local % nxg
    # Pairs were generated in depth order; a stable sort by tile keeps that order inside tiles.
    order = torch.sort(tile, stable=True).indices
    counts = torch.bincount(tile, minlength=tiles_x * tiles_y)
    offsets = torch.cumsum(counts, 0) - counts
    return TileBins(g[order], offsets, counts, tiles_x, tiles_y)


def _composite_block(
    params: Tensor,
    log_t: Tensor,
    gidx: Tensor,
    origin: Tensor,
    pix: Tensor,
    log_t_raw: Tensor,
    near: float,
    center_depth: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Composite one block: tiles [B] x pixels [P] x surfels [n] (a slice of each tile's list).

    ``params`` [M + 1, N_COLS]; ``gidx`` [B, n] rows of params (padding row for short lists);
    ``origin`` [B, 2] tile corner (pixels); ``pix`` [P, 3] = (i, j, 1) pixel offsets in a tile;
    ``log_t`` [B, P] log transmittance before this block; ``log_t_raw`` the same without the
    early stop (it decides which pixels have stopped). Returns the block's sums [B, P, 7]
    (weighted rgb, normal, depth) and the updated ``log_t``, ``log_t_raw``.
    """
    p = params[gidx]  # [B, n, C]
    ex = origin[:, :1] + 0.5 - p[..., Col.CX]  # offset of the tile's first pixel centre from c
    ey = origin[:, 1:] + 0.5 - p[..., Col.CY]
    # Halved exponents: (q0, q1) carry 1/sqrt(2) so that u^2 + v^2 and |d|^2 (filter 2|d|^2) are g/2.
    h = math.sqrt(0.5)
    b00, b01, b10, b11 = (p[..., k] * h for k in (Col.B00, Col.B01, Col.B10, Col.B11))
    b20, b21 = p[..., Col.B20], p[..., Col.B21]
    one, zero = torch.ones_like(ex), torch.zeros_like(ex)
    f = math.sqrt(FILTER_INV_SQUARE / 2)
    # (q0, q1, q2, dx, dy) are affine in the in-tile pixel offset (i, j): one matmul gives all five.
    coef = torch.stack(
        [
            torch.stack([b00, b01, b00 * ex + b01 * ey], dim=1),
            torch.stack([b10, b11, b10 * ex + b11 * ey], dim=1),
            torch.stack([b20, b21, p[..., Col.H] + b20 * ex + b21 * ey], dim=1),
            torch.stack([one * f, zero, ex * f], dim=1),
            torch.stack([zero, one * f, ey * f], dim=1),
        ],
        dim=2,
    )  # [B, 3, 5, n]
    n = gidx.shape[1]
    q = (pix @ coef.reshape(len(gidx), 3, 5 * n)).reshape(len(gidx), -1, 5, n)  # [B, P, 5, n]
    q0, q1, q2, dx, dy = q.unbind(2)

    z_c = p[..., Col.Z][:, None, :]
    inv = 1.0 / q2.clamp_min(Q_EPS)
    u = (q0 * inv).clamp(-UV_MAX, UV_MAX)
    v = (q1 * inv).clamp(-UV_MAX, UV_MAX)
    half3 = torch.addcmul(u * u, v, v)  # (u^2 + v^2) / 2
    half2 = torch.addcmul(dx * dx, dy, dy)  # FILTER_INV_SQUARE |d|^2 / 2
    with torch.no_grad():
        hit = (q2 > Q_EPS) & (q2 * near < z_c)  # the ray meets the plane beyond the near plane
        use3 = hit & (half3 <= half2)
    log_o = torch.log(p[..., Col.OPA].clamp_min(1e-30))[:, None, :]
    alpha = torch.exp(log_o - torch.where(use3, half3, half2)).clamp_max(ALPHA_MAX)
    la = torch.log1p(-alpha)
    with torch.no_grad():
        valid = alpha >= ALPHA_MIN
    la = torch.where(valid, la, 0.0)
    cum = torch.cumsum(la, dim=-1)
    with torch.no_grad():  # early stop: drop the surfel that would take T to <= T_MIN, and all after it
        raw = log_t_raw[..., None] + cum
        keep = valid & (raw > LOG_T_MIN)
        log_t_raw = raw[..., -1]
    w = torch.where(keep, alpha * torch.exp(log_t[..., None] + cum - la), 0.0)
    log_t = log_t + torch.where(keep, la, 0.0).sum(-1)
    sums = w @ p[..., Col.FEAT]  # [B, P, 6]
    if center_depth:
        dsum = w @ p[..., Col.Z : Col.Z + 1]
    else:
        dz = p[..., Col.DZ][:, None, :]
        z = torch.where(hit, torch.clamp(z_c * inv, z_c - dz, z_c + dz), z_c)
        dsum = (w * z).sum(-1, keepdim=True)
    return torch.cat([sums, dsum], dim=-1), log_t, log_t_raw


class _RecomputedBlock(torch.autograd.Function):
    """Activation checkpointing for :func:`_composite_block`: forward without a graph, and the
    backward pass recomputes the block with autograd to get its gradients. Keeps memory at
    one block instead of all of them (``torch.utils.checkpoint`` would do the same but pulls
    in torch._dynamo on first use, several seconds of import)."""

    @staticmethod
    def forward(ctx, params, log_t, gidx, origin, pix, log_t_raw, near, center_depth):
        ctx.save_for_backward(params, log_t, gidx, origin, pix, log_t_raw)
        ctx.near, ctx.center_depth = near, center_depth
        with torch.no_grad():
            sums, log_t_out, log_t_raw_out = _composite_block(
                params, log_t, gidx, origin, pix, log_t_raw, near, center_depth
            )
        ctx.mark_non_differentiable(log_t_raw_out)
        return sums, log_t_out, log_t_raw_out

    @staticmethod
    def backward(ctx, d_sums, d_log_t, _):
        params, log_t, gidx, origin, pix, log_t_raw = ctx.saved_tensors
        with torch.enable_grad():
            p = params.detach().requires_grad_(True)
            lt = log_t.detach().requires_grad_(True)
            sums, log_t_out, _ = _composite_block(p, lt, gidx, origin, pix, log_t_raw, ctx.near, ctx.center_depth)
            # A scalar surrogate instead of grad_outputs: same gradients, and it avoids
            # autograd's grad-shape checks, which import sympy on first use.
            surrogate = (sums * d_sums).sum() + (log_t_out * d_log_t).sum()
            dp, dlt = torch.autograd.grad(surrogate, (p, lt))
        return dp, dlt, None, None, None, None, None, None


def _tile_pixels(tile_size: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """[P, 3] (i, j, 1) for the P = tile_size^2 pixels of a tile, row-major (j outer)."""
    j, i = torch.meshgrid(torch.arange(tile_size), torch.arange(tile_size), indexing="ij")
    return torch.stack([i.flatten(), j.flatten(), torch.ones(tile_size**2, dtype=torch.long)], -1).to(device, dtype)


def composite_tiles(
    proj: ProjectedSurfels,
    bins: TileBins,
    tile_size: int,
    near: float,
    center_depth: bool,
    max_block: int,
    seg_len: int,
    use_checkpoint: bool,
) -> tuple[Tensor, Tensor]:
    """Composite every tile. Returns sums [n_tiles, P, 7] and log transmittance [n_tiles, P].

    Tiles, sorted by list length, are taken in groups of ``max_block // (P * seg_len)``; each
    group walks its lists ``seg_len`` surfels at a time, and each step only touches the tiles
    that still have surfels left and pixels still open, so padding stays below one step.
    """
    params = proj.params
    dev, dt = params.device, params.dtype
    P = tile_size * tile_size
    n_tiles = bins.tiles_x * bins.tiles_y
    pix = _tile_pixels(tile_size, dt, dev)
    busy = torch.nonzero(bins.counts > 0).squeeze(1)
    busy = busy[torch.sort(bins.counts[busy], descending=True, stable=True).indices]
    pad_row = params.shape[0] - 1
    seg_len = max(1, min(seg_len, max_block // P))
    group = max(1, max_block // (P * seg_len))
    all_sums = torch.zeros(n_tiles, P, 7, dtype=dt, device=dev)
    all_logt = torch.zeros(n_tiles, P, dtype=dt, device=dev)
    if len(busy) == 0 and params.requires_grad:  # an empty view still joins the graph (zero gradients)
        all_sums = all_sums + 0.0 * params.sum()

    for start in range(0, len(busy), group):
        tid = busy[start : start + group]
        origin = torch.stack([tid % bins.tiles_x, tid // bins.tiles_x], -1).to(dt) * tile_size
        first, count = bins.offsets[tid], bins.counts[tid]
        sums = torch.zeros(len(tid), P, 7, dtype=dt, device=dev)
        log_t = torch.zeros(len(tid), P, dtype=dt, device=dev)
        log_t_raw = torch.zeros(len(tid), P, dtype=dt, device=dev)
        open_ = torch.ones(len(tid), dtype=torch.bool, device=dev)  # some pixel has not stopped
        for s0 in range(0, int(count[0]), seg_len):
            act = torch.nonzero(open_ & (count > s0)).squeeze(1)
            if len(act) == 0:
                break
            k = s0 + torch.arange(seg_len, device=dev)
            pos = first[act, None] + k
            gidx = torch.where(k < count[act, None], bins.flat[pos.clamp_max(len(bins.flat) - 1)], pad_row)
            args = (params, log_t[act], gidx, origin[act], pix, log_t_raw[act], near, center_depth)
            if use_checkpoint:
                block, lt, ltr = _RecomputedBlock.apply(*args)
            else:
                block, lt, ltr = _composite_block(*args)
            sums = sums.index_add(0, act, block)
            log_t = log_t.index_copy(0, act, lt)
            log_t_raw = log_t_raw.index_copy(0, act, ltr)
            open_[act] = (ltr > LOG_T_MIN).any(-1)
        all_sums = all_sums.index_copy(0, tid, sums)
        all_logt = all_logt.index_copy(0, tid, log_t)
    return all_sums, all_logt


def untile(x: Tensor, bins: TileBins, tile_size: int, width: int, height: int) -> Tensor:
    """[n_tiles, P, F] per-tile pixels -> [H, W, F] image."""
    f = x.shape[-1]
    img = x.reshape(bins.tiles_y, bins.tiles_x, tile_size, tile_size, f).permute(0, 2, 1, 3, 4)
    return img.reshape(bins.tiles_y * tile_size, bins.tiles_x * tile_size, f)[:height, :width]
