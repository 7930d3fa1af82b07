"""Per-voxel layers and attention modules on :class:`SparseTensor`."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn

from .attention import (
    Segments,
    WindowPartition,
    cross_attention,
    full_attention,
    window_partition,
    windowed_attention,
)
from .embed import RotaryEmbedding3D
from .norm import MultiHeadRMSNorm
from .tensor import SparseTensor


class SparseLinear(nn.Linear):
    """``nn.Linear`` on the feats of a SparseTensor (or on a plain tensor)."""

    def forward(self, x):
        if isinstance(x, SparseTensor):
            return x.replace(super().forward(x.feats))
        return super().forward(x)


class SparseMLP(nn.Module):
    """Linear - GELU(tanh) - Linear on feats."""

    def __init__(self, channels: int, hidden_ratio: float = 4.0, out_channels: int | None = None):
        super().__init__()
        hidden = int(channels * hidden_ratio)
        self.fc1 = nn.Linear(channels, hidden)
        self.act = nn.GELU(approximate="tanh")
        self.fc2 = nn.Linear(hidden, out_channels or channels)

    def forward(self, x):
        f = x.feats if isinstance(x, SparseTensor) else x
        y = self.fc2(self.act(self.fc1(f)))
        return x.replace(y) if isinstance(x, SparseTensor) else y


def batch_segments(x: SparseTensor) -> Segments:
    """One attention group per batch element, cached on ``x``."""
    return x.cached(("batch_segments",), lambda: Segments.from_lengths(x.counts()))


def cached_window_partition(x: SparseTensor, window: int, shift: int) -> WindowPartition:
    """Swin partition of ``x``'s coords, cached on ``x``."""
    return x.cached(("window", window, shift), lambda: window_partition(x.coords, window, shift))


AttnMode = Literal["full", "window"]


class SparseSelfAttention(nn.Module):
    """Multi-head self-attention over a SparseTensor.

    attn_mode 'full': all voxels of a batch element; 'window': Swin windows of
    ``window_size``³ voxels offset by ``shift`` (use window_size // 2 in every other block).
    Options: qk-norm (RMSNorm on q and k per head) and 3-D RoPE on voxel coords.
    """

    def __init__(
        self,
        channels: int,
        num_heads: int,
        attn_mode: AttnMode = "full",
        window_size: int = 8,
        shift: int = 0,
        qkv_bias: bool = True,
        qk_norm: bool = False,
        rope: bool = False,
        rope_theta: float = 10000.0,
    ):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"SparseSelfAttention: {channels} channels not divisible by {num_heads} heads")
        if attn_mode not in ("full", "window"):
            raise ValueError(f"SparseSelfAttention: attn_mode must be 'full' or 'window', got {attn_mode!r}")
        self.channels, self.num_heads = channels, num_heads
        self.head_dim = channels // num_heads
        self.attn_mode, self.window_size, self.shift = attn_mode, window_size, shift
        self.qkv = nn.Linear(channels, 3 * channels, bias=qkv_bias)
        self.proj = nn.Linear(channels, channels)
        self.q_norm = MultiHeadRMSNorm(self.head_dim, num_heads) if qk_norm else None
        self.k_norm = MultiHeadRMSNorm(self.head_dim, num_heads) if qk_norm else None
        self.rope = RotaryEmbedding3D(self.head_dim, rope_theta) if rope else None

    def forward(self, x: SparseTensor) -> SparseTensor:
        n = len(x)
        q, k, v = self.qkv(x.feats).reshape(n, 3, self.num_heads, self.head_dim).unbind(1)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rope is not None:
            cos, sin = x.cached(
                ("rope", self.rope.axis_dim, self.rope.theta), lambda: self.rope.cos_sin(x.coords[:, 1:])
            )
            q, k = self.rope.rotate(q, cos, sin), self.rope.rotate(k, cos, sin)
        if self.attn_mode == "full":
            h = full_attention(q, k, v, x.batch_idx, segments=batch_segments(x))
        else:
            part = cached_window_partition(x, self.window_size, self.shift)
            h = windowed_attention(q, k, v, x.coords, self.window_size, self.shift, partition=part)
        return x.replace(self.proj(h.reshape(n, self.channels)))


def flatten_context(context: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense context [B, L, C] (+ bool mask [B, L]) -> tokens [M, C] and sorted batch [M]."""
    b, l, _ = context.shape
    if mask is None:
        return context.reshape(b * l, -1), torch.arange(b, device=context.device).repeat_interleave(l)
    if mask.shape != (b, l):
        raise ValueError(f"context mask must be [{b}, {l}], got {tuple(mask.shape)}")
    rows, _ = mask.nonzero(as_tuple=True)
    return context[mask], rows


class SparseCrossAttention(nn.Module):
    """Voxels (queries) attend to the context tokens of their own batch element.

    The context is a SparseTensor (variable-length tokens per sample) or a dense
    [B, L, C_ctx] tensor with an optional bool mask [B, L]. Samples without context
    tokens receive zeros.
    """

    def __init__(
        self, channels: int, context_channels: int, num_heads: int, qkv_bias: bool = True, qk_norm: bool = False
    ):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"SparseCrossAttention: {channels} channels not divisible by {num_heads} heads")
        self.channels, self.num_heads = channels, num_heads
        self.head_dim = channels // num_heads
        self.q = nn.Linear(channels, channels, bias=qkv_bias)
        self.kv = nn.Linear(context_channels, 2 * channels, bias=qkv_bias)
        self.proj = nn.Linear(channels, channels)
        self.q_norm = MultiHeadRMSNorm(self.head_dim, num_heads) if qk_norm else None
        self.k_norm = MultiHeadRMSNorm(self.head_dim, num_heads) if qk_norm else None

    def forward(
        self, x: SparseTensor, context: SparseTensor | torch.Tensor, context_mask: torch.Tensor | None = None
    ) -> SparseTensor:
        if isinstance(context, SparseTensor):
            ctx, ctx_batch = context.feats, context.batch_idx
            if context.batch_size != x.batch_size:
                raise ValueError(f"cross-attention: context batch {context.batch_size} != {x.batch_size}")
        else:
            if context.shape[0] != x.batch_size:
                raise ValueError(f"cross-attention: context batch {context.shape[0]} != {x.batch_size}")
            ctx, ctx_batch = flatten_context(context, context_mask)
        n, m = len(x), ctx.shape[0]
        q = self.q(x.feats).reshape(n, self.num_heads, self.head_dim)
        k, v = self.kv(ctx).reshape(m, 2, self.num_heads, self.head_dim).unbind(1)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        h = cross_attention(
            q, x.batch_idx, k, v, ctx_batch, batch_size=x.batch_size, q_segments=batch_segments(x)
        )
        return x.replace(self.proj(h.reshape(n, self.channels)))
