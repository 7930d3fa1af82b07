"""Neighbour ("kernel") maps for sparse convolution, built from sorted coordinate keys.

A kernel map lists, for each kernel offset k (flattened in the order of the
``[k, k, k]`` weight dims, i.e. offset index ``(i * k + j) * k + l``), the pairs
(input row, output row) such that the input voxel sits at offset k from the output
voxel's receptive-field origin. Maps depend only on coordinates, so they are cached
on the :class:`SparseTensor` and reused by every layer at the same resolution.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import keys as K
from .tensor import SparseTensor


@dataclass
class KernelMap:
    """Per-offset gather/scatter pairs.

    pairs[k] is ``(in_idx, out_idx)`` (int64, equal length) or ``None`` for the identity
    (the centre of a submanifold kernel, where in_idx = out_idx = arange(N)).
    """

    pairs: list
    num_in: int
    num_out: int
    _tables: dict = field(default_factory=dict, repr=False)

    @property
    def volume(self) -> int:
        return len(self.pairs)

    @property
    def num_pairs(self) -> int:
        return sum(self.num_in if p is None else p[0].numel() for p in self.pairs)

    def table(self, by_output: bool, device: torch.device) -> torch.Tensor:
        """Dense neighbour table, int32, cached.

        by_output: [num_out, K], entry (o, k) = input row paired with o at offset k, or
        num_in when there is none. Otherwise [num_in, K], entry (i, k) = output row, or
        num_out. The sentinel indexes a zero row appended to the gathered tensor."""
        if by_output not in self._tables:
            rows, fill = (self.num_out, self.num_in) if by_output else (self.num_in, self.num_out)
            t = torch.full((self.volume, rows), fill, dtype=torch.int32, device=device)
            for k, pair in enumerate(self.pairs):
                if pair is None:
                    t[k] = torch.arange(rows, dtype=torch.int32, device=device)
                else:
                    src, dst = (pair[0], pair[1]) if by_output else (pair[1], pair[0])
                    t[k, dst] = src.int()
            self._tables[by_output] = t.T.contiguous()
        return self._tables[by_output]


@dataclass
class StridedMap:
    """Output layout of a strided conv / pooling and its kernel map."""

    coords: torch.Tensor  # int32 [M, 4], sorted by (batch, x, y, z)
    inverse: torch.Tensor  # int64 [N]: output row of each input row's parent (coords // stride)
    kernel: KernelMap | None


def kernel_offsets(kernel_size: int, device: torch.device) -> torch.Tensor:
    """int64 [k³, 3] offsets (i, j, l) in weight order, i slowest."""
    r = torch.arange(kernel_size, device=device)
    return torch.stack(torch.meshgrid(r, r, r, indexing="ij"), dim=-1).reshape(-1, 3)


def _split_found(found: torch.Tensor, values: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """found bool [K, N], values int64 [K, N] -> per-k (values[k][found], nonzero cols); one sync."""
    kk, rows = found.nonzero(as_tuple=True)
    counts = torch.bincount(kk, minlength=found.shape[0]).tolist()
    in_idx = values[kk, rows].split(counts)
    out_idx = rows.split(counts)
    return list(zip(in_idx, out_idx))


def subm_kernel_map(x: SparseTensor, kernel_size: int) -> KernelMap:
    """Kernel map of a submanifold conv (output coords = input coords), cached on ``x``.

    Only the first half of the offsets is searched; offset -o pairs are offset o's pairs
    swapped (if q is p's neighbour at +o, p is q's neighbour at -o).
    """
    if kernel_size % 2 != 1:
        raise ValueError(f"submanifold conv needs an odd kernel size, got {kernel_size}")

    def build() -> KernelMap:
        n = len(x)
        vol = kernel_size**3
        centre = vol // 2
        if n == 0 or vol == 1:
            empty = x.coords.new_zeros(0, dtype=torch.long)
            pairs = [(empty, empty)] * vol
            pairs[centre] = None
            return KernelMap(pairs, n, n)
        table = K.SortedKeys(K.pack_coords(x.coords))
        offs = kernel_offsets(kernel_size, x.device)[:centre] - kernel_size // 2  # [H, 3]
        xyz = x.coords[:, 1:].long()
        query = xyz[None] + offs[:, None]  # [H, N, 3]
        valid = K.in_range(query)
        qkeys = K.pack(x.coords[:, 0].long().expand(centre, n), query.clamp(0, K.MAX_COORD))
        nbr = table.lookup(qkeys, valid)  # [H, N] input row at p + o, or -1
        half = _split_found(nbr >= 0, nbr)
        pairs: list = [None] * vol
        for k, (in_idx, out_idx) in enumerate(half):
            pairs[k] = (in_idx, out_idx)
            pairs[vol - 1 - k] = (out_idx, in_idx)
        return KernelMap(pairs, n, n)

    return x.cached(("subm", kernel_size), build)


def strided_map(x: SparseTensor, stride: int, kernel_size: int | None = None) -> StridedMap:
    """Output coords ``unique(coords // stride)`` (sorted) and, if ``kernel_size`` is given,
    the kernel map of ``F.conv3d(..., stride=stride)`` (no padding) read at those coords.
    Cached on ``x``."""

    def build_layout() -> StridedMap:
        parent = torch.cat([x.coords[:, :1], x.coords[:, 1:] // stride], dim=1)
        ukeys, inverse = torch.unique(K.pack_coords(parent), sorted=True, return_inverse=True)
        return StridedMap(K.unpack(ukeys), inverse, None)

    layout: StridedMap = x.cached(("strided", stride), build_layout)
    if kernel_size is None:
        return layout

    def build_kernel() -> KernelMap:
        n, m = len(x), layout.coords.shape[0]
        vol = kernel_size**3
        if kernel_size == stride:
            # every input voxel feeds exactly one output through offset (c mod s)
            child = x.coords[:, 1:].long() % stride
            kidx = (child[:, 0] * stride + child[:, 1]) * stride + child[:, 2]
            order = torch.argsort(kidx, stable=True)
            counts = torch.bincount(kidx, minlength=vol).tolist()
            in_idx = order.split(counts)
            return KernelMap([(i, layout.inverse[i]) for i in in_idx], n, m)
        table = K.SortedKeys(K.pack_coords(x.coords))
        offs = kernel_offsets(kernel_size, x.device)
        query = layout.coords[None, :, 1:].long() * stride + offs[:, None]  # [K, M, 3]
        valid = K.in_range(query)
        qkeys = K.pack(layout.coords[:, 0].long().expand(vol, m), query.clamp(0, K.MAX_COORD))
        nbr = table.lookup(qkeys, valid)
        return KernelMap(_split_found(nbr >= 0, nbr), n, m)

    kmap = x.cached(("strided_conv", stride, kernel_size), build_kernel)
    return StridedMap(layout.coords, layout.inverse, kmap)
