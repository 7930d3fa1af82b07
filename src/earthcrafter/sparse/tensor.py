"""`SparseTensor`: features on the active voxels of a batch of sparse 3-D grids.

Conventions (shared by every model in the package):

- ``coords`` int32 [N, 4] = (batch, x, y, z), x/y/z in [0, 65535] (real data uses
  [0, 1023]); the rows of one batch element are contiguous and batch elements come
  in increasing order. Rows need not be sorted inside a batch element, but every
  operation that creates new coordinates returns them sorted by (batch, x, y, z).
- ``feats`` [N, C] (or [N, ...]), any float dtype.
- ``offsets`` int64 [B + 1] on the device: rows of sample b are offsets[b]:offsets[b+1].
  A sample may be empty; ``batch_size`` is stored, never inferred from the data
  after construction.
- ``stride``: voxel edge in units of the finest grid (1, 2, 4, ...), informative.
- ``cache``: a dict keyed by tuples such as ``("subm", 3)`` or ``("window", 8, 4)``
  holding neighbour maps, window partitions and pooling maps. The maps depend on
  the coordinates only, so :meth:`SparseTensor.replace` shares the cache and layers
  at the same resolution reuse them.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from . import keys as K

_KeyT = tuple


def batched_coords(xyz, b: int = 0) -> torch.Tensor:
    """Voxel coords [n, 3] (tensor or array) of batch element ``b`` -> int32 [n, 4] = (b, x, y, z)."""
    xyz = torch.as_tensor(xyz)
    col = torch.full((xyz.shape[0], 1), b, dtype=torch.int32, device=xyz.device)
    return torch.cat([col, xyz.to(torch.int32)], dim=1)


class SparseTensor:
    """A batch of sparse voxel grids with per-voxel features. See the module docstring."""

    def __init__(
        self,
        feats: torch.Tensor,
        coords: torch.Tensor,
        batch_size: int | None = None,
        *,
        stride: int = 1,
        offsets: torch.Tensor | None = None,
        cache: dict | None = None,
        validate: bool = True,
    ):
        if validate:
            coords, batch_size = _validate(feats, coords, batch_size)
        elif batch_size is None:
            raise ValueError("batch_size is required when validate=False")
        self.feats = feats
        self.coords = coords
        self.batch_size = int(batch_size)
        self.stride = int(stride)
        self._offsets = offsets
        self.cache: dict = {} if cache is None else cache

    # ------------------------------------------------------------------ layout
    @property
    def offsets(self) -> torch.Tensor:
        """int64 [B + 1] row offsets of each batch element (on the device)."""
        if self._offsets is None:
            self._offsets = self.cached(("offsets",), self._compute_offsets)
        return self._offsets

    def _compute_offsets(self) -> torch.Tensor:
        counts = torch.bincount(self.coords[:, 0].long(), minlength=self.batch_size)
        return torch.cat([counts.new_zeros(1), counts.cumsum(0)])

    def offsets_host(self) -> list[int]:
        """Offsets as Python ints (one host sync, cached)."""
        return self.cached(("offsets_host",), lambda: self.offsets.tolist())

    def counts(self) -> torch.Tensor:
        """int64 [B] number of voxels of each batch element."""
        return self.offsets.diff()

    @property
    def batch_idx(self) -> torch.Tensor:
        """int64 [N] batch index of each row."""
        return self.cached(("batch_idx",), lambda: self.coords[:, 0].long())

    @property
    def num_voxels(self) -> int:
        return self.coords.shape[0]

    def __len__(self) -> int:
        return self.coords.shape[0]

    @property
    def shape(self) -> torch.Size:
        return self.feats.shape

    @property
    def device(self) -> torch.device:
        return self.feats.device

    @property
    def dtype(self) -> torch.dtype:
        return self.feats.dtype

    def cached(self, key: _KeyT, build: Callable[[], object]):
        """Return ``cache[key]``, building it with ``build()`` on first use."""
        if key not in self.cache:
            self.cache[key] = build()
        return self.cache[key]

    # ------------------------------------------------------------ construction
    def replace(self, feats: torch.Tensor, stride: int | None = None) -> "SparseTensor":
        """Same coords (and shared cache) with new feats [N, ...]."""
        if feats.shape[0] != self.coords.shape[0]:
            raise ValueError(
                f"replace: feats has {feats.shape[0]} rows, coords has {self.coords.shape[0]}"
            )
        return SparseTensor(
            feats,
            self.coords,
            self.batch_size,
            stride=self.stride if stride is None else stride,
            offsets=self._offsets,
            cache=self.cache,
            validate=False,
        )

    @classmethod
    def from_list(
        cls,
        feats_list: Sequence[torch.Tensor],
        coords_list: Sequence[torch.Tensor],
        stride: int = 1,
    ) -> "SparseTensor":
        """Batch per-sample feats [n_i, C] and coords [n_i, 3] (x, y, z) into one tensor."""
        if len(feats_list) != len(coords_list):
            raise ValueError(
                f"from_list: {len(feats_list)} feats but {len(coords_list)} coords entries"
            )
        if len(feats_list) == 0:
            raise ValueError("from_list: empty batch")
        rows = []
        for b, (f, c) in enumerate(zip(feats_list, coords_list)):
            if c.ndim != 2 or c.shape[1] != 3:
                raise ValueError(f"from_list: coords_list[{b}] must be [n, 3], got {tuple(c.shape)}")
            if f.shape[0] != c.shape[0]:
                raise ValueError(
                    f"from_list: sample {b} has {f.shape[0]} feature rows and {c.shape[0]} coords"
                )
            rows.append(batched_coords(c, b))
        return cls(torch.cat(list(feats_list)), torch.cat(rows), len(feats_list), stride=stride)

    def unbind(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Inverse of :meth:`from_list`: (feats_list [n_i, C], coords_list [n_i, 3])."""
        off = self.offsets_host()
        feats = [self.feats[off[b] : off[b + 1]] for b in range(self.batch_size)]
        coords = [self.coords[off[b] : off[b + 1], 1:] for b in range(self.batch_size)]
        return feats, coords

    def to(self, device=None, dtype: torch.dtype | None = None, non_blocking: bool = False) -> "SparseTensor":
        """Move to a device (drops the cache if the device changes) and/or cast feats."""
        feats = self.feats.to(device=device, dtype=dtype, non_blocking=non_blocking)
        if feats.device == self.feats.device:
            return self.replace(feats)
        return SparseTensor(
            feats, self.coords.to(feats.device, non_blocking=non_blocking), self.batch_size, stride=self.stride,
            validate=False,
        )

    def pin_memory(self) -> "SparseTensor":
        """Page-locked copies of feats and coords (the DataLoader calls this with ``pin_memory=True``),
        so the copy to the GPU can run asynchronously."""
        return SparseTensor(self.feats.pin_memory(), self.coords.pin_memory(), self.batch_size, stride=self.stride,
                            validate=False)  # fmt: skip

    def detach(self) -> "SparseTensor":
        return self.replace(self.feats.detach())

    # ----------------------------------------------------------------- helpers
    def broadcast(self, per_sample: torch.Tensor) -> torch.Tensor:
        """Expand a per-sample tensor [B, ...] to one row per voxel [N, ...] (no host sync)."""
        if per_sample.shape[0] != self.batch_size:
            raise ValueError(
                f"broadcast: expected {self.batch_size} rows (batch size), got {per_sample.shape[0]}"
            )
        return per_sample[self.batch_idx]

    def dense(self, spatial_shape: Sequence[int] | None = None) -> torch.Tensor:
        """Dense [B, C, X, Y, Z] grid with zeros at inactive voxels (for tests and small grids)."""
        if spatial_shape is None:
            spatial_shape = (self.coords[:, 1:].amax(0) + 1).tolist() if len(self) else [1, 1, 1]
        X, Y, Z = (int(s) for s in spatial_shape)
        top = self.coords[:, 1:].amax(0).tolist() if len(self) else [0, 0, 0]
        if any(t >= s for t, s in zip(top, (X, Y, Z))):
            raise ValueError(f"dense: coords up to {top} exceed spatial_shape {(X, Y, Z)}")
        C = self.feats.shape[1]
        out = self.feats.new_zeros(self.batch_size, X, Y, Z, C)
        c = self.coords.long()
        out = out.index_put((c[:, 0], c[:, 1], c[:, 2], c[:, 3]), self.feats)
        return out.permute(0, 4, 1, 2, 3).contiguous()

    def _check_same_layout(self, other: "SparseTensor") -> None:
        if other.coords is self.coords:
            return
        if other.coords.shape != self.coords.shape or other.batch_size != self.batch_size:
            raise ValueError(
                "sparse tensors have different layouts: "
                f"{tuple(self.coords.shape)}/B={self.batch_size} vs "
                f"{tuple(other.coords.shape)}/B={other.batch_size}"
            )

    def _binary(self, other, op) -> "SparseTensor":
        if isinstance(other, SparseTensor):
            self._check_same_layout(other)
            other = other.feats
        return self.replace(op(self.feats, other))

    def __add__(self, other):
        return self._binary(other, torch.add)

    __radd__ = __add__

    def __sub__(self, other):
        return self._binary(other, torch.sub)

    def __mul__(self, other):
        return self._binary(other, torch.mul)

    __rmul__ = __mul__

    def __neg__(self):
        return self.replace(-self.feats)

    def __repr__(self) -> str:
        return (
            f"SparseTensor(N={len(self)}, feats={tuple(self.feats.shape)}, dtype={self.dtype}, "
            f"batch_size={self.batch_size}, stride={self.stride}, device={self.device})"
        )


def _validate(
    feats: torch.Tensor, coords: torch.Tensor, batch_size: int | None
) -> tuple[torch.Tensor, int]:
    """Check shapes, dtypes, ranges and batch ordering; one host sync."""
    if not isinstance(feats, torch.Tensor) or not isinstance(coords, torch.Tensor):
        raise TypeError("SparseTensor: feats and coords must be torch tensors")
    if coords.ndim != 2 or coords.shape[1] != 4:
        raise ValueError(f"SparseTensor: coords must be [N, 4] (batch, x, y, z), got {tuple(coords.shape)}")
    if coords.dtype.is_floating_point or coords.dtype == torch.bool:
        raise TypeError(f"SparseTensor: coords must be an integer tensor, got {coords.dtype}")
    if feats.ndim < 1 or feats.shape[0] != coords.shape[0]:
        raise ValueError(
            f"SparseTensor: feats has {feats.shape[0] if feats.ndim else 0} rows, coords has {coords.shape[0]}"
        )
    if feats.device != coords.device:
        raise ValueError(f"SparseTensor: feats on {feats.device}, coords on {coords.device}")
    n = coords.shape[0]
    if n == 0:
        if batch_size is None:
            raise ValueError("SparseTensor: batch_size is required for an empty tensor")
        return coords.to(torch.int32).contiguous(), batch_size
    c = coords.long()
    b = c[:, 0]
    stats = torch.stack(
        [
            b.min(),
            b.max(),
            c[:, 1:].min(),
            c[:, 1:].max(),
            (b[1:] < b[:-1]).sum() if n > 1 else b.new_zeros(()),
        ]
    ).tolist()
    bmin, bmax, cmin, cmax, n_desc = stats
    if bmin < 0:
        raise ValueError(f"SparseTensor: negative batch index {bmin} in coords[:, 0]")
    if n_desc:
        raise ValueError(
            "SparseTensor: coords[:, 0] (batch) must be non-decreasing: the rows of one batch "
            f"element must be contiguous and in batch order ({n_desc} decreasing steps found)"
        )
    if cmin < 0 or cmax > K.MAX_COORD:
        raise ValueError(
            f"SparseTensor: coords[:, 1:] must lie in [0, {K.MAX_COORD}], got [{cmin}, {cmax}]"
        )
    if batch_size is None:
        batch_size = bmax + 1
    elif bmax >= batch_size:
        raise ValueError(f"SparseTensor: batch index {bmax} >= batch_size {batch_size}")
    if batch_size - 1 > K.MAX_BATCH:
        raise ValueError(f"SparseTensor: batch_size {batch_size} exceeds {K.MAX_BATCH + 1}")
    return coords.to(torch.int32).contiguous(), int(batch_size)


def sparse_to_dense(x: SparseTensor, spatial_shape: Sequence[int] | None = None) -> torch.Tensor:
    """Dense [B, C, X, Y, Z] copy of ``x`` (zeros elsewhere); see :meth:`SparseTensor.dense`."""
    return x.dense(spatial_shape)


def cat(tensors: Sequence[SparseTensor], dim: int = -1) -> SparseTensor:
    """Concatenate the feats of sparse tensors that share one layout."""
    if not tensors:
        raise ValueError("cat: no tensors")
    first = tensors[0]
    for t in tensors[1:]:
        first._check_same_layout(t)
    return first.replace(torch.cat([t.feats for t in tensors], dim=dim))


def broadcast_per_sample(x: SparseTensor, per_sample: torch.Tensor) -> torch.Tensor:
    """[B, ...] -> [N, ...]: each voxel gets its batch element's row (AdaLN modulation)."""
    return x.broadcast(per_sample)


def per_sample_mean(values: torch.Tensor, batch_idx: torch.Tensor, batch_size: int) -> torch.Tensor:
    """[B] mean of ``values`` [M] over the rows of each sample (0 for a sample without rows).

    Losses are means per sample, then over samples: every sample weighs the same whatever its
    voxel count, so averaging W ranks' losses (DDP) gives the loss of the global batch."""
    sums = values.new_zeros(batch_size).index_add(0, batch_idx, values)
    counts = torch.bincount(batch_idx, minlength=batch_size).clamp(min=1).to(values.dtype)
    return sums / counts
