"""Normalisation layers for sparse tensors (statistics in fp32, or fp64 for fp64 inputs)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .tensor import SparseTensor


def _feats(x):
    return x.feats if isinstance(x, SparseTensor) else x


def _wrap(x, feats):
    return x.replace(feats) if isinstance(x, SparseTensor) else feats


class LayerNorm32(nn.LayerNorm):
    """LayerNorm over the last dim computed in fp32 and cast back (fp16-safe).
    Accepts a tensor or a :class:`SparseTensor` (normalises each voxel's channels)."""

    def forward(self, x):
        f = _feats(x)
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        with torch.autocast(f.device.type, enabled=False):
            y = F.layer_norm(f.float(), self.normalized_shape, w, b, self.eps)
        return _wrap(x, y.to(f.dtype))


SparseLayerNorm = LayerNorm32


def sparse_group_norm(
    x: SparseTensor,
    num_groups: int,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """GroupNorm with statistics per (batch element, group) over all its voxels.

    Equals ``nn.GroupNorm`` applied to each sample's [1, C, n_b] feature matrix. Segment
    sums via ``index_add`` (two passes: mean, then centred variance); no loop over samples.
    Returns feats [N, C] in x's dtype.
    """
    n, c = x.feats.shape
    if c % num_groups:
        raise ValueError(f"group norm: {c} channels not divisible by {num_groups} groups")
    per = c // num_groups
    acc = torch.float64 if x.feats.dtype == torch.float64 else torch.float32
    with torch.autocast(x.device.type, enabled=False):
        f = x.feats.to(acc).reshape(n, num_groups, per)
        idx = x.batch_idx
        count = (x.counts() * per).clamp(min=1).to(acc)[:, None]  # [B, 1]
        zeros = f.new_zeros(x.batch_size, num_groups)
        mean = zeros.index_add(0, idx, f.sum(-1)) / count
        centred = f - mean[idx][..., None]
        var = zeros.index_add(0, idx, centred.square().sum(-1)) / count
        y = (centred * torch.rsqrt(var + eps)[idx][..., None]).reshape(n, c)
        if weight is not None:
            y = y * weight.to(acc)
        if bias is not None:
            y = y + bias.to(acc)
    return y.to(x.feats.dtype)


class SparseGroupNorm(nn.Module):
    """GroupNorm per batch element of a :class:`SparseTensor` (see :func:`sparse_group_norm`)."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True):
        super().__init__()
        if num_channels % num_groups:
            raise ValueError(f"SparseGroupNorm: {num_channels} channels not divisible by {num_groups} groups")
        self.num_groups, self.num_channels, self.eps = num_groups, num_channels, eps
        self.weight = nn.Parameter(torch.ones(num_channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_channels)) if affine else None

    def forward(self, x: SparseTensor) -> SparseTensor:
        return x.replace(sparse_group_norm(x, self.num_groups, self.weight, self.bias, self.eps))

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.weight is not None}"


class MultiHeadRMSNorm(nn.Module):
    """RMSNorm over the head dim of [N, H, D] with a learned gain per (head, channel);
    used as qk-norm. Computed in fp32."""

    def __init__(self, head_dim: int, num_heads: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(num_heads, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        y = xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + self.eps) * self.gamma.float()
        return y.to(x.dtype)
