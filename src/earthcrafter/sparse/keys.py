"""Packing of (batch, x, y, z) integer coordinates into sortable int64 keys.

A key is ``batch << 48 | x << 32 | y << 16 | z``, so sorting keys sorts rows by
(batch, x, y, z). Spatial coordinates must lie in ``[0, MAX_COORD]`` and batch
indices in ``[0, MAX_BATCH]``; callers mask out-of-range queries (e.g. the
neighbour of a voxel at x = 0) before packing.

Neighbour search everywhere in this package is "sorted keys + searchsorted":
no hash table, no custom kernel, identical on CPU and GPU.
"""

from __future__ import annotations

import torch

BITS = 16
MAX_COORD = (1 << BITS) - 1
MAX_BATCH = (1 << 15) - 1
_MASK = MAX_COORD


def pack(batch: torch.Tensor, xyz: torch.Tensor) -> torch.Tensor:
    """Pack batch [...] and xyz [..., 3] (any integer dtype, in range) into int64 keys [...]."""
    b = batch.long()
    xyz = xyz.long()
    return (b << 48) | (xyz[..., 0] << 32) | (xyz[..., 1] << 16) | xyz[..., 2]


def pack_coords(coords: torch.Tensor) -> torch.Tensor:
    """Keys [N] of coords [N, 4] = (batch, x, y, z)."""
    return pack(coords[:, 0], coords[:, 1:])


def unpack(keys: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_coords`: int64 keys [N] -> int32 coords [N, 4]."""
    out = torch.stack(
        [keys >> 48, (keys >> 32) & _MASK, (keys >> 16) & _MASK, keys & _MASK], dim=1
    )
    return out.int()


def in_range(xyz: torch.Tensor) -> torch.Tensor:
    """Bool [...] — whether every axis of xyz [..., 3] lies in [0, MAX_COORD]."""
    return ((xyz >= 0) & (xyz <= MAX_COORD)).all(dim=-1)


class SortedKeys:
    """Sorted int64 keys of a coordinate set, for O(log N) membership lookups.

    ``lookup(query_keys, valid)`` returns, for every query, the row index of the
    matching coordinate in the original (unsorted) set, or -1.
    """

    def __init__(self, keys: torch.Tensor):
        self.sorted, self.order = torch.sort(keys)

    def lookup(self, query: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        n = self.sorted.numel()
        if n == 0:
            return torch.full_like(query, -1)
        pos = torch.searchsorted(self.sorted, query).clamp_(max=n - 1)
        found = self.sorted[pos] == query
        if valid is not None:
            found &= valid
        return torch.where(found, self.order[pos], torch.full_like(pos, -1))
