"""Residual building blocks: sparse transformer block and sparse conv residual block.

Both take an optional per-sample conditioning vector ``cond`` [B, C_cond] (e.g. a
timestep embedding) for AdaLN: SiLU → Linear (zero-initialised) gives shift/scale/gate,
so a freshly built conditioned block is the identity map.

Activation checkpointing (:func:`set_activation_checkpointing`): a block then keeps only its
inputs for the backward pass and recomputes its inside, trading one more forward pass for the
memory of its activations (2-3x less per voxel in the paper's networks, docs/benchmarks.md).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .conv import SubMConv3d
from .layers import AttnMode, SparseCrossAttention, SparseMLP, SparseSelfAttention
from .norm import LayerNorm32, SparseGroupNorm
from .tensor import SparseTensor


def _ada_ln(cond_channels: int, channels: int, n_chunks: int) -> nn.Sequential:
    lin = nn.Linear(cond_channels, n_chunks * channels)
    nn.init.zeros_(lin.weight)
    nn.init.zeros_(lin.bias)
    return nn.Sequential(nn.SiLU(), lin)


class CheckpointedBlock(nn.Module):
    """A block whose ``_forward`` is recomputed in the backward pass when ``checkpointing`` is on
    (training, with gradients); the same outputs and gradients either way."""

    checkpointing: bool = False

    def forward(self, *args, **kwargs):
        if self.checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(self._forward, *args, use_reentrant=False, **kwargs)
        return self._forward(*args, **kwargs)


def set_activation_checkpointing(model: nn.Module, enabled: bool = True) -> int:
    """Turn activation checkpointing of every block in ``model`` on or off; the number of blocks."""
    blocks = [m for m in model.modules() if isinstance(m, CheckpointedBlock)]
    for m in blocks:
        m.checkpointing = enabled
    return len(blocks)


class SparseTransformerBlock(CheckpointedBlock):
    """Pre-norm block: x += attn(LN(x)); [x += cross(LN(x), context)]; x += mlp(LN(x)).

    With ``cond_channels`` the attention and MLP branches are AdaLN-modulated:
    h = LN(x)·(1 + scale) + shift, x += gate·f(h), and the cross-attention output
    projection is zero-initialised too, so the block starts as the identity.
    """

    def __init__(
        self,
        channels: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        attn_mode: AttnMode = "full",
        window_size: int = 8,
        shift: int = 0,
        qk_norm: bool = False,
        rope: bool = False,
        context_channels: int | None = None,
        cond_channels: int | None = None,
    ):
        super().__init__()
        modulated = cond_channels is not None
        self.norm1 = LayerNorm32(channels, elementwise_affine=not modulated, eps=1e-6)
        self.attn = SparseSelfAttention(
            channels, num_heads, attn_mode, window_size, shift, qk_norm=qk_norm, rope=rope
        )
        self.cross = None
        if context_channels is not None:
            self.norm_cross = LayerNorm32(channels, eps=1e-6)
            self.cross = SparseCrossAttention(channels, context_channels, num_heads, qk_norm=qk_norm)
            if modulated:
                nn.init.zeros_(self.cross.proj.weight)
                nn.init.zeros_(self.cross.proj.bias)
        self.norm2 = LayerNorm32(channels, elementwise_affine=not modulated, eps=1e-6)
        self.mlp = SparseMLP(channels, mlp_ratio)
        self.ada = _ada_ln(cond_channels, channels, 6) if modulated else None

    def _forward(
        self,
        x: SparseTensor,
        cond: torch.Tensor | None = None,
        context: SparseTensor | torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
    ) -> SparseTensor:
        if (self.ada is None) != (cond is None):
            raise ValueError("SparseTransformerBlock: pass cond exactly when built with cond_channels")
        if (self.cross is None) != (context is None):
            raise ValueError("SparseTransformerBlock: pass context exactly when built with context_channels")
        f = x.feats
        if self.ada is not None:
            mods = x.broadcast(self.ada(cond)).to(f.dtype).chunk(6, dim=1)
            shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = mods
        h = self.norm1(f)
        if self.ada is not None:
            h = h * (1 + scale_a) + shift_a
        h = self.attn(x.replace(h)).feats
        f = f + (gate_a * h if self.ada is not None else h)
        if self.cross is not None:
            h = self.cross(x.replace(self.norm_cross(f)), context, context_mask).feats
            f = f + h
        h = self.norm2(f)
        if self.ada is not None:
            h = h * (1 + scale_m) + shift_m
        h = self.mlp(h)
        f = f + (gate_m * h if self.ada is not None else h)
        return x.replace(f)


class SparseResBlock(CheckpointedBlock):
    """Conv residual block: norm - SiLU - SubMConv - norm [AdaLN] - SiLU - SubMConv (+ skip).

    The second conv is zero-initialised, so the block starts as its skip path
    (the identity when in and out channels match). ``norm``: 'layer' (per voxel) or
    'group' (per batch element, gcd(num_groups, channels) groups).
    """

    def __init__(
        self,
        channels: int,
        out_channels: int | None = None,
        cond_channels: int | None = None,
        kernel_size: int = 3,
        norm: str = "layer",
        num_groups: int = 32,
    ):
        super().__init__()
        out_channels = out_channels or channels
        modulated = cond_channels is not None
        self.norm1 = self._norm(norm, channels, num_groups, affine=True)
        self.conv1 = SubMConv3d(channels, out_channels, kernel_size)
        self.norm2 = self._norm(norm, out_channels, num_groups, affine=not modulated)
        self.conv2 = SubMConv3d(out_channels, out_channels, kernel_size)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Linear(channels, out_channels) if out_channels != channels else nn.Identity()
        self.ada = _ada_ln(cond_channels, out_channels, 2) if modulated else None

    @staticmethod
    def _norm(kind: str, channels: int, groups: int, affine: bool) -> nn.Module:
        if kind == "layer":
            return LayerNorm32(channels, elementwise_affine=affine, eps=1e-6)
        if kind == "group":
            return SparseGroupNorm(math.gcd(groups, channels), channels, affine=affine)
        raise ValueError(f"SparseResBlock: norm must be 'layer' or 'group', got {kind!r}")

    def _forward(self, x: SparseTensor, cond: torch.Tensor | None = None) -> SparseTensor:
        if (self.ada is None) != (cond is None):
            raise ValueError("SparseResBlock: pass cond exactly when built with cond_channels")
        h = self.norm1(x)
        h = self.conv1(h.replace(F.silu(h.feats)))
        h = self.norm2(h)
        if self.ada is not None:
            shift, scale = x.broadcast(self.ada(cond)).to(h.dtype).chunk(2, dim=1)
            h = h.replace(h.feats * (1 + scale) + shift)
        h = self.conv2(h.replace(F.silu(h.feats)))
        return x.replace(self.skip(x.feats) + h.feats)
