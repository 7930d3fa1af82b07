"""Layout-changing sparse ops: pixel (un)shuffle, subdivision, pooling, pruning.

Child order everywhere: voxel c has children ``f·c + (dx, dy, dz)``, child index
``i = (dx·f + dy)·f + dz`` (the same order as a dense 3-D pixel shuffle whose
channel axis is split as [child, C]). Every op that creates coordinates returns them
sorted by (batch, x, y, z).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import keys as K
from .kernel_map import kernel_offsets, strided_map
from .tensor import SparseTensor


@dataclass
class ChildLayout:
    """Sorted children of every voxel: out row r is child ``child[r]`` of input row ``parent[r]``."""

    coords: torch.Tensor  # int32 [N·f³, 4] sorted
    parent: torch.Tensor  # int64 [N·f³]
    child: torch.Tensor  # int64 [N·f³]
    order: torch.Tensor  # int64 [N·f³]: out row r = flat row order[r] of the [N, f³] child grid


def child_layout(x: SparseTensor, factor: int) -> ChildLayout:
    """Children of every voxel at ``factor``× resolution, sorted; cached on ``x``."""

    def build() -> ChildLayout:
        n, f3 = len(x), factor**3
        offs = kernel_offsets(factor, x.device)  # [f³, 3] in child-index order
        xyz = x.coords[:, None, 1:].long() * factor + offs[None]  # [N, f³, 3]
        if len(x) and int(xyz.max()) > K.MAX_COORD:
            raise ValueError(f"upsampling by {factor} exceeds the coordinate range [0, {K.MAX_COORD}]")
        keys = K.pack(x.coords[:, None, 0].long().expand(n, f3), xyz).reshape(-1)
        order = torch.argsort(keys)
        return ChildLayout(K.unpack(keys[order]), order // f3, order % f3, order)

    return x.cached(("children", factor), build)


def _children_tensor(x: SparseTensor, feats: torch.Tensor, factor: int, layout: ChildLayout) -> SparseTensor:
    child_stride = max(x.stride // factor, 1)
    return SparseTensor(feats, layout.coords, x.batch_size, stride=child_stride, validate=False)


def pixel_shuffle(x: SparseTensor, factor: int = 2) -> SparseTensor:
    """Sparse 3-D pixel shuffle (channel -> space).

    x.feats [N, C·f³] -> [N·f³, C]: child i of voxel c sits at ``f·c + (dx, dy, dz)`` and
    takes channels ``[i·C, (i+1)·C)``. Output sorted by (batch, x, y, z).
    """
    f3 = factor**3
    if x.feats.ndim != 2 or x.feats.shape[1] % f3:
        raise ValueError(f"pixel_shuffle: channels {tuple(x.feats.shape[1:])} not divisible by {factor}³")
    layout = child_layout(x, factor)
    feats = x.feats.reshape(len(x) * f3, -1)[layout.order]
    return _children_tensor(x, feats, factor, layout)


def upsample_nearest(x: SparseTensor, factor: int = 2) -> SparseTensor:
    """Subdivide every voxel into its f³ children, each copying the parent's feats."""
    layout = child_layout(x, factor)
    return _children_tensor(x, x.feats[layout.parent], factor, layout)


subdivide = upsample_nearest


def pixel_unshuffle(x: SparseTensor, factor: int = 2) -> SparseTensor:
    """Inverse of :func:`pixel_shuffle` (space -> channel).

    Parents ``unique(coords // f)`` (sorted) get feats [M, C·f³]; the slot of a child
    that is not active is zero.
    """
    f3 = factor**3
    smap = strided_map(x, factor)
    m, c = smap.coords.shape[0], x.feats.shape[1]
    rem = x.coords[:, 1:].long() % factor
    child = (rem[:, 0] * factor + rem[:, 1]) * factor + rem[:, 2]
    slots = x.feats.new_zeros(m * f3, c).index_copy(0, smap.inverse * f3 + child, x.feats)
    return SparseTensor(
        slots.reshape(m, f3 * c), smap.coords, x.batch_size, stride=x.stride * factor, validate=False
    )


def downsample(x: SparseTensor, factor: int = 2, reduce: str = "mean") -> SparseTensor:
    """Pool children into parents ``unique(coords // f)`` with ``reduce`` in
    {'mean', 'sum', 'amax'}. The map is cached on ``x`` for :func:`upsample_like`."""
    if reduce not in ("mean", "sum", "amax"):
        raise ValueError(f"downsample: reduce must be 'mean', 'sum' or 'amax', got {reduce!r}")
    smap = strided_map(x, factor)
    m = smap.coords.shape[0]
    index = smap.inverse.view(-1, *([1] * (x.feats.ndim - 1))).expand_as(x.feats)
    out = x.feats.new_zeros(m, *x.feats.shape[1:]).scatter_reduce(
        0, index, x.feats, reduce=reduce, include_self=False
    )
    return SparseTensor(out, smap.coords, x.batch_size, stride=x.stride * factor, validate=False)


def upsample_like(coarse: SparseTensor, fine: SparseTensor, factor: int = 2) -> SparseTensor:
    """Nearest unpooling: every voxel of ``fine`` takes its parent's feats from ``coarse``,
    where ``coarse`` has the layout of ``downsample(fine, factor)``."""
    smap = strided_map(fine, factor)
    if coarse.coords.shape != smap.coords.shape:
        raise ValueError(
            f"upsample_like: coarse tensor has {len(coarse)} voxels, "
            f"downsample(fine, {factor}) has {smap.coords.shape[0]}"
        )
    return fine.replace(coarse.feats[smap.inverse])


def downsample_inverse(x: SparseTensor, factor: int = 2) -> torch.Tensor:
    """int64 [N]: row of ``downsample(x, factor)`` holding each voxel's parent."""
    return strided_map(x, factor).inverse


def prune(x: SparseTensor, keep: torch.Tensor) -> SparseTensor:
    """Keep the rows where ``keep`` (bool [N]) is true; batch_size is kept even when a
    sample loses all its voxels."""
    if keep.dtype != torch.bool or keep.shape != (len(x),):
        raise ValueError(f"prune: keep must be bool [{len(x)}], got {keep.dtype} {tuple(keep.shape)}")
    idx = keep.nonzero(as_tuple=True)[0]
    return SparseTensor(
        x.feats[idx], x.coords[idx].contiguous(), x.batch_size, stride=x.stride, validate=False
    )
