"""Attention over variable-length token groups: full, windowed (Swin) and cross.

All three reduce to *varlen* attention: tokens are permuted so every group (a batch
element, or a (batch, window) cell) is contiguous, and group g of queries attends to
group g of keys. Backends (see :mod:`.backends`):

- ``flash_attn``: ``flash_attn_varlen_func`` (CUDA, fp16/bf16).
- ``torch_varlen``: ``torch.nn.attention.varlen.varlen_attn`` (CUDA, fp16/bf16, torch ≥ 2.10).
- ``sdpa_padded``: groups sorted by length and padded into [G, L, H, D] chunks of similar
  lengths with a key-padding mask, run through ``F.scaled_dot_product_attention``; a
  chunk holds at most :func:`sdpa_chunk_elements` G·H·Lq·Lk. SDPA's fused kernels (flash
  on CPU, flash / memory-efficient on CUDA) never materialise the scores. CPU and GPU.
- ``reference``: a Python loop over groups with explicit softmax (tests only).

Shapes: q [Nq, H, D], k and v [Nk, H, D]; output [Nq, H, D] in q's dtype. The scale is
1/√D. No N×N mask is ever built.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from . import backends
from . import keys as K
from .rows import put_rows, take_rows

# Budget of attention-score elements (G·H·Lq·Lk) per padded SDPA call: bounds the size of
# one chunk (its padded copies, and the scores should SDPA ever use its math kernel).
# On CUDA the fused SDPA kernels never materialise scores, so chunks can be larger.
SDPA_CHUNK_ELEMENTS = {"cpu": 2**27, "cuda": 2**30}
_CHUNK_ENV = "EARTHCRAFTER_SDPA_CHUNK_ELEMENTS"


def sdpa_chunk_elements(device: torch.device) -> int:
    """Score-element budget per padded SDPA call (env var overrides)."""
    env = os.environ.get(_CHUNK_ENV)
    if env:
        return int(env)
    return SDPA_CHUNK_ELEMENTS.get(device.type, SDPA_CHUNK_ELEMENTS["cpu"])


@dataclass
class Segments:
    """Contiguous groups of a packed token array.

    ``cu`` int32 [G + 1] on the device; ``starts``/``lengths`` int64 numpy [G] on the host
    (the one host sync of a partition, cached with it).
    """

    cu: torch.Tensor
    starts: np.ndarray
    lengths: np.ndarray
    plans: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def max_len(self) -> int:
        return int(self.lengths.max()) if len(self.lengths) else 0

    @property
    def total(self) -> int:
        return int(self.lengths.sum())

    @classmethod
    def from_lengths(cls, lengths: torch.Tensor) -> "Segments":
        """From int [G] lengths on the device (zeros allowed)."""
        host = lengths.detach().cpu().numpy().astype(np.int64)
        starts = np.cumsum(host) - host
        cu = torch.zeros(len(host) + 1, dtype=torch.int32, device=lengths.device)
        cu[1:] = lengths.cumsum(0)
        return cls(cu, starts, host)

    def select(self, which: np.ndarray) -> "Segments":
        """Keep groups ``which``. ``cu`` is rebuilt from the kept lengths, which is right
        when the dropped groups are empty or their rows are removed from the tensor too."""
        starts, lengths = self.starts[which], self.lengths[which]
        cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
        return Segments(torch.from_numpy(cu).to(self.cu.device), starts, lengths)


# ----------------------------------------------------------------- varlen core
def varlen_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    seg_q: Segments,
    seg_k: Segments,
    backend: str | None = None,
    row_map: torch.Tensor | None = None,
) -> torch.Tensor:
    """Group g of ``q`` (rows seg_q.starts[g] .. + lengths[g]) attends to group g of k/v.

    Groups must be contiguous and in the same order in q and k/v, each key group
    non-empty whenever its query group is (see :func:`cross_attention` for empty ones).
    With ``row_map`` (a permutation, self-attention), the groups index the rows
    ``row_map[i]`` instead of ``i``: the padded backend gathers straight from the
    original order, the others permute explicitly.
    """
    if q.ndim != 3 or k.ndim != 3 or v.ndim != 3:
        raise ValueError(f"attention expects [N, H, D] tensors, got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[0] == 0:
        return q.new_zeros(0, q.shape[1], v.shape[2])
    backend = backend or backends.resolve_attn_backend(q.device, q.dtype, q.shape[-1])
    if row_map is not None and backend != "sdpa_padded":
        q, k, v = take_rows(q, row_map), take_rows(k, row_map), take_rows(v, row_map)
        out = varlen_attention(q, k, v, seg_q, seg_k, backend)
        return put_rows(out, row_map, out.shape[0])
    if backend == "flash_attn":
        return _flash_attn(q, k, v, seg_q, seg_k)
    if backend == "torch_varlen":
        return _torch_varlen(q, k, v, seg_q, seg_k)
    if backend == "sdpa_padded":
        return _sdpa_padded(q, k, v, seg_q, seg_k, row_map)
    if backend == "reference":
        return _reference(q, k, v, seg_q, seg_k)
    raise ValueError(f"unknown attention backend {backend!r}")


def _half(q, k, v):
    """Cast to the autocast dtype (or bf16) for kernels that only take fp16/bf16."""
    if q.dtype in backends.HALF_DTYPES:
        return q, k.to(q.dtype), v.to(q.dtype)
    dt = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else torch.bfloat16
    return q.to(dt), k.to(dt), v.to(dt)


def _flash_attn(q, k, v, seg_q, seg_k):
    fa = backends.flash_attn_module()
    out_dtype = q.dtype
    q, k, v = _half(q, k, v)
    out = fa.flash_attn_varlen_func(
        q.contiguous(), k.contiguous(), v.contiguous(), seg_q.cu, seg_k.cu, seg_q.max_len, seg_k.max_len
    )
    return out.to(out_dtype)


def _torch_varlen(q, k, v, seg_q, seg_k):
    fn = backends.torch_varlen_fn()
    out_dtype = q.dtype
    q, k, v = _half(q, k, v)
    out = fn(q.contiguous(), k.contiguous(), v.contiguous(), seg_q.cu, seg_k.cu, seg_q.max_len, seg_k.max_len)
    return out.to(out_dtype)


def _reference(q, k, v, seg_q, seg_k):
    """Naive loop: softmax(q kᵀ/√D) v per group, in fp32 (fp64 stays fp64)."""
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    scale = 1.0 / math.sqrt(q.shape[-1])
    out = []
    for g in range(len(seg_q.lengths)):
        qs, ql = int(seg_q.starts[g]), int(seg_q.lengths[g])
        ks, kl = int(seg_k.starts[g]), int(seg_k.lengths[g])
        if ql == 0:
            continue
        qg = q[qs : qs + ql].to(acc).transpose(0, 1)  # [H, Lq, D]
        kg = k[ks : ks + kl].to(acc).transpose(0, 1)
        vg = v[ks : ks + kl].to(acc).transpose(0, 1)
        p = torch.softmax(qg @ kg.transpose(1, 2) * scale, dim=-1)
        out.append((p @ vg).transpose(0, 1))
    return torch.cat(out).to(q.dtype)


# ------------------------------------------------------------------ sdpa_padded
@dataclass
class _Blocks:
    """Non-empty groups: query rows [qs, qs+ql) attend to key rows [ks, ks+kl)."""

    qs: np.ndarray
    ql: np.ndarray
    ks: np.ndarray
    kl: np.ndarray


def _blocks(seg_q: Segments, seg_k: Segments) -> _Blocks:
    g = np.nonzero(seg_q.lengths > 0)[0]
    return _Blocks(seg_q.starts[g], seg_q.lengths[g], seg_k.starts[g], seg_k.lengths[g])


# A chunk's blocks are padded to its longest key group; start a new chunk when lengths
# fall below this fraction of it (bounds the padding waste), unless they are short anyway.
_PAD_RATIO, _SHORT = 0.75, 32


def _chunks(blocks: _Blocks, heads: int, budget: int) -> list[np.ndarray]:
    """Group blocks (sorted by key length, then query length) into chunks whose padded
    score size G·H·max(Lq)·max(Lk) stays within budget and whose lengths are similar."""
    order = np.lexsort((-blocks.ql, -blocks.kl))
    kl, ql = blocks.kl[order], blocks.ql[order]
    chunks, start, n = [], 0, len(order)
    while start < n:
        lk, lq = int(kl[start]), int(ql[start])
        end = start + 1
        while end < n:
            lq = max(lq, int(ql[end]))
            if heads * lq * lk * (end - start + 1) > budget:
                break
            if lk > _SHORT and kl[end] < _PAD_RATIO * lk:
                break
            end += 1
        chunks.append(order[start:end])
        start = end
    return chunks


def _ranges(starts: np.ndarray, lengths: np.ndarray, pad_to: int) -> tuple[np.ndarray, np.ndarray]:
    """Token rows of the ranges [starts, starts+lengths) and their padded positions
    (block b, slot j) -> b·pad_to + j."""
    block = np.repeat(np.arange(len(lengths)), lengths)
    within = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return starts[block] + within, block * pad_to + within


@dataclass
class _Chunk:
    g: int
    lq: int
    lk: int
    mask: torch.Tensor | None  # [G, 1, 1, Lk] bool, True = attend; None when no key padding


@dataclass
class _Plan:
    """Padded layout of all chunks, concatenated: slot p of the flat padded buffer holds
    row src[p] (padding slots hold row 0); row r sits at slot pos[r]."""

    chunks: list
    src_q: torch.Tensor
    pos_q: torch.Tensor
    src_k: torch.Tensor
    pos_k: torch.Tensor | None  # None when some key rows belong to no block


def _plan(seg_q: Segments, seg_k: Segments, n_q: int, n_k: int, heads: int, budget: int, device) -> _Plan:
    blocks = _blocks(seg_q, seg_k)
    chunks, src_q, slot_q, src_k, slot_k = [], [], [], [], []
    base_q = base_k = 0
    for idx in _chunks(blocks, heads, budget):
        lq, lk = int(blocks.ql[idx].max()), int(blocks.kl[idx].max())
        for starts, lengths, length, base, src, slot in (
            (blocks.qs[idx], blocks.ql[idx], lq, base_q, src_q, slot_q),
            (blocks.ks[idx], blocks.kl[idx], lk, base_k, src_k, slot_k),
        ):
            rows, pos = _ranges(starts, lengths, length)
            # padding slots read row 0: masked keys get zero weight (and zero gradient), padded
            # query rows are dropped, so any finite row will do and x needs no zero row appended
            flat = np.zeros(len(idx) * length, dtype=np.int64)
            flat[pos] = rows
            src.append(flat)
            slot.append((rows, base + pos))
        mask = None
        if not (blocks.kl[idx] == lk).all():
            valid = np.arange(lk)[None] < blocks.kl[idx][:, None]
            mask = torch.from_numpy(valid).to(device)[:, None, None, :]
        chunks.append(_Chunk(len(idx), lq, lk, mask))
        base_q += len(idx) * lq
        base_k += len(idx) * lk

    def inverse(slots, n):
        rows = np.concatenate([r for r, _ in slots])
        pos = np.full(n, -1, dtype=np.int64)
        pos[rows] = np.concatenate([p for _, p in slots])
        return rows, pos

    rows_q, pos_q = inverse(slot_q, n_q)
    if len(rows_q) != n_q or (pos_q < 0).any():
        raise RuntimeError(f"sdpa_padded: segments cover {len(rows_q)} of {n_q} query rows")
    rows_k, pos_k = inverse(slot_k, n_k)
    partial = len(rows_k) != n_k  # cross-attention: context of query-less samples is unused
    to = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    return _Plan(chunks, to(np.concatenate(src_q)), to(pos_q), to(np.concatenate(src_k)), None if partial else to(pos_k))


def _map_plan(plan: _Plan, row_map: torch.Tensor) -> _Plan:
    """The same plan for rows given in original order, where packed row i is row_map[i]."""

    def src(s):
        n = row_map.numel()
        return torch.where(s < n, row_map[s.clamp(max=n - 1)], s)

    def pos(p):
        return None if p is None else torch.empty_like(p).index_copy_(0, row_map, p)

    return _Plan(plan.chunks, src(plan.src_q), pos(plan.pos_q), src(plan.src_k), pos(plan.pos_k))


class _PadRows(torch.autograd.Function):
    """x [N, ...] -> flat padded buffer [P, ...] with slot p = x[src[p]].

    Backward reads each row's own slot (``pos``), ignoring padding slots; without ``pos``
    (cross-attention context rows that no query uses) it scatters, and padding slots add
    the exact zero gradient of masked keys."""

    @staticmethod
    def forward(ctx, x, src, pos):
        ctx.save_for_backward(src, pos)
        ctx.n = x.shape[0]
        return x.index_select(0, src)

    @staticmethod
    def backward(ctx, g):
        src, pos = ctx.saved_tensors
        if pos is not None:
            return g.index_select(0, pos), None, None
        return g.new_zeros(ctx.n, *g.shape[1:]).index_add_(0, src, g), None, None


def _sdpa_padded(q, k, v, seg_q, seg_k, row_map: torch.Tensor | None = None):
    heads = q.shape[1]
    budget = sdpa_chunk_elements(q.device)
    if seg_k is seg_q:  # self-attention: cached with the (cached) partition, built once
        key = ("sdpa_plan", heads, budget, str(q.device), row_map is not None)
        if key not in seg_q.plans:
            plan = _plan(seg_q, seg_k, q.shape[0], k.shape[0], heads, budget, q.device)
            seg_q.plans[key] = plan if row_map is None else _map_plan(plan, row_map)
        plan = seg_q.plans[key]
    else:
        plan = _plan(seg_q, seg_k, q.shape[0], k.shape[0], heads, budget, q.device)
        plan = plan if row_map is None else _map_plan(plan, row_map)
    k, v = k.to(q.dtype), v.to(q.dtype)
    qf = _PadRows.apply(q, plan.src_q, plan.pos_q).split([c.g * c.lq for c in plan.chunks])
    kf = _PadRows.apply(k, plan.src_k, plan.pos_k).split([c.g * c.lk for c in plan.chunks])
    vf = _PadRows.apply(v, plan.src_k, plan.pos_k).split([c.g * c.lk for c in plan.chunks])
    outs = []
    for c, qc, kc, vc in zip(plan.chunks, qf, kf, vf):
        qp, kp, vp = (t.view(c.g, -1, *t.shape[1:]).transpose(1, 2) for t in (qc, kc, vc))
        # every query row (padded ones too) sees >= 1 valid key: no fully masked row, no NaN
        o = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=c.mask)
        outs.append(o.transpose(1, 2).reshape(c.g * c.lq, heads, -1))
    return take_rows(torch.cat(outs), plan.pos_q)


# ------------------------------------------------------------ public functions
def _batch_segments(batch: torch.Tensor, batch_size: int | None) -> Segments:
    if batch.numel() and bool((batch[1:] < batch[:-1]).any()):
        raise ValueError("attention: the batch index must be sorted (rows of a sample contiguous)")
    n = batch_size if batch_size is not None else (int(batch.max()) + 1 if batch.numel() else 0)
    return Segments.from_lengths(torch.bincount(batch.long(), minlength=n))


def full_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    batch: torch.Tensor,
    *,
    segments: Segments | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Each token attends to all tokens with the same (sorted) batch index.

    q, k, v [N, H, D]; batch int [N] sorted. ``segments`` (from a cache) skips the
    one host sync.
    """
    seg = segments or _batch_segments(batch, None)
    return varlen_attention(q, k, v, seg, seg, backend)


def cross_attention(
    q: torch.Tensor,
    q_batch: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    kv_batch: torch.Tensor,
    *,
    batch_size: int | None = None,
    q_segments: Segments | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Each query attends to the context tokens of its own batch element.

    q [Nq, H, D] with sorted q_batch [Nq]; k, v [Nk, H, D] with sorted kv_batch [Nk].
    Queries whose batch element has no context tokens get zeros. ``q_segments`` (one
    group per batch element, e.g. cached on a SparseTensor) skips one host sync.
    """
    if batch_size is None:
        tops = [int(t.max()) + 1 for t in (q_batch, kv_batch) if t.numel()]
        batch_size = max(tops) if tops else 0
    seg_q = q_segments or _batch_segments(q_batch, batch_size)
    seg_k = _batch_segments(kv_batch, batch_size)
    empty_ctx = (seg_q.lengths > 0) & (seg_k.lengths == 0)
    if not empty_ctx.any():
        return varlen_attention(q, k, v, seg_q, seg_k, backend)
    keep = np.nonzero(~empty_ctx)[0]
    has_ctx = torch.from_numpy(~empty_ctx).to(q.device)[q_batch.long()]
    rows = has_ctx.nonzero(as_tuple=True)[0]
    sub_q = seg_q.select(keep)
    sub_q.starts = np.cumsum(sub_q.lengths) - sub_q.lengths  # q is compacted below
    if not rows.numel():
        return q.new_zeros(q.shape[0], q.shape[1], v.shape[2])
    out = varlen_attention(take_rows(q, rows), k, v, sub_q, seg_k.select(keep), backend)
    return put_rows(out, rows, q.shape[0])


@dataclass
class WindowPartition:
    """Tokens regrouped by (batch, window cell): ``perm`` sorts them, ``inverse`` undoes it."""

    perm: torch.Tensor
    inverse: torch.Tensor
    segments: Segments


def window_partition(coords: torch.Tensor, window: int, shift: int = 0) -> WindowPartition:
    """Group rows of coords [N, 4] by (batch, ⌊(xyz + shift) / window⌋); stable within a cell."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    cell = torch.div(coords[:, 1:].long() + shift, window, rounding_mode="floor")
    if coords.shape[0] and bool((cell < 0).any()):
        raise ValueError("window_partition: coords + shift must be non-negative")
    key = K.pack(coords[:, 0], cell)
    perm = torch.argsort(key, stable=True)
    _, counts = torch.unique_consecutive(key[perm], return_counts=True)
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(perm.numel(), device=perm.device)
    return WindowPartition(perm, inverse, Segments.from_lengths(counts))


def windowed_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    coords: torch.Tensor,
    window: int,
    shift: int = 0,
    *,
    partition: WindowPartition | None = None,
    backend: str | None = None,
) -> torch.Tensor:
    """Swin attention: tokens attend to tokens of the same batch element whose window
    index ⌊(xyz + shift) / window⌋ matches on all three axes. No cyclic roll: border
    windows are simply smaller. q, k, v [N, H, D]; coords int [N, 4]."""
    part = partition or window_partition(coords, window, shift)
    return varlen_attention(q, k, v, part.segments, part.segments, backend, row_map=part.perm)
