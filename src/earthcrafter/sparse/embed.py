"""Positional and timestep embeddings: 3-D sinusoidal, learned, rotary (RoPE), timestep."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .tensor import SparseTensor


def _xyz(x: SparseTensor | torch.Tensor) -> torch.Tensor:
    """Float [N, 3] positions from a SparseTensor (voxel coords) or a [N, 3] tensor."""
    return (x.coords[:, 1:] if isinstance(x, SparseTensor) else x).float()


def sinusoidal_embedding_3d(xyz: torch.Tensor, channels: int, max_period: float = 10000.0) -> torch.Tensor:
    """[N, 3] positions -> [N, channels]: per axis [sin(p·ω_j), cos(p·ω_j)] with
    ω_j = max_period^(-j/F), j < F = channels // 6; the remainder is zero-padded."""
    nf = channels // 6
    if nf == 0:
        raise ValueError(f"sinusoidal 3-D embedding needs >= 6 channels, got {channels}")
    omega = max_period ** (-torch.arange(nf, device=xyz.device, dtype=torch.float32) / nf)
    ang = xyz.float()[:, :, None] * omega  # [N, 3, F]
    emb = torch.cat([ang.sin(), ang.cos()], dim=-1).reshape(xyz.shape[0], 6 * nf)
    pad = channels - 6 * nf
    return torch.nn.functional.pad(emb, (0, pad)) if pad else emb


class SinusoidalPosEmbed3D(nn.Module):
    """Absolute sin-cos encoding of integer voxel coords (see :func:`sinusoidal_embedding_3d`)."""

    def __init__(self, channels: int, max_period: float = 10000.0):
        super().__init__()
        self.channels, self.max_period = channels, max_period

    def forward(self, x: SparseTensor | torch.Tensor) -> torch.Tensor:
        return sinusoidal_embedding_3d(_xyz(x), self.channels, self.max_period)


class LearnedPosEmbed3D(nn.Module):
    """Learned absolute encoding, factorised per axis: E_x[x] + E_y[y] + E_z[z]
    (a full resolution³ table would not fit)."""

    def __init__(self, channels: int, resolution: int = 1024):
        super().__init__()
        self.resolution = resolution
        self.tables = nn.ParameterList(
            [nn.Parameter(torch.randn(resolution, channels) * 0.02) for _ in range(3)]
        )

    def forward(self, x: SparseTensor | torch.Tensor) -> torch.Tensor:
        xyz = (x.coords[:, 1:] if isinstance(x, SparseTensor) else x).long()
        if xyz.numel() and (int(xyz.min()) < 0 or int(xyz.max()) >= self.resolution):
            raise ValueError(f"LearnedPosEmbed3D: coords outside [0, {self.resolution})")
        return sum(t[xyz[:, a]] for a, t in enumerate(self.tables))


class RotaryEmbedding3D(nn.Module):
    """3-D rotary position embedding for [N, H, D] queries/keys.

    The head dim is split into three equal even parts (x, y, z), each rotated pairwise
    (dims 2j, 2j+1) by angle p_axis·θ^(-2j/d); leftover dims (D mod 6) pass through.
    q·k then depends on positions only through their difference.
    """

    def __init__(self, head_dim: int, theta: float = 10000.0):
        super().__init__()
        self.axis_dim = (head_dim // 6) * 2
        if self.axis_dim == 0:
            raise ValueError(f"RotaryEmbedding3D needs head_dim >= 6, got {head_dim}")
        self.head_dim, self.theta = head_dim, theta
        freqs = theta ** (-torch.arange(0, self.axis_dim, 2, dtype=torch.float32) / self.axis_dim)
        self.register_buffer("freqs", freqs, persistent=False)

    def cos_sin(self, xyz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[N, 3] positions -> cos, sin [N, 1, 3·axis_dim/2] (angles in fp64: positions reach 1023)."""
        freqs = self.freqs.to(xyz.device, torch.float64)
        ang = (xyz.double()[:, :, None] * freqs).reshape(xyz.shape[0], 1, -1)
        return ang.cos(), ang.sin()

    def rotate(self, t: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Rotate t [N, H, D] in fp32 (fp64 stays fp64)."""
        n_rot = 3 * self.axis_dim
        acc = torch.float64 if t.dtype == torch.float64 else torch.float32
        tf, cos, sin = t.to(acc), cos.to(acc), sin.to(acc)
        pairs = tf[..., :n_rot].reshape(*t.shape[:2], n_rot // 2, 2)
        a, b = pairs[..., 0], pairs[..., 1]
        rot = torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).reshape(*t.shape[:2], n_rot)
        return torch.cat([rot, tf[..., n_rot:]], dim=-1).to(t.dtype)

    def forward(self, q: torch.Tensor, k: torch.Tensor, xyz: torch.Tensor):
        cos, sin = self.cos_sin(xyz)
        return self.rotate(q, cos, sin), self.rotate(k, cos, sin)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """[B] (fractional) timesteps -> [B, dim] = [cos(t·ω_j), sin(t·ω_j)], ω_j = max_period^(-j/(dim/2))."""
    half = dim // 2
    omega = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    ang = t.float()[:, None] * omega[None]
    emb = torch.cat([ang.cos(), ang.sin()], dim=-1)
    return torch.nn.functional.pad(emb, (0, 1)) if dim % 2 else emb


class TimestepEmbedder(nn.Module):
    """Sinusoidal timestep features followed by Linear-SiLU-Linear: [B] -> [B, hidden]."""

    def __init__(self, hidden: int, frequency_dim: int = 256, max_period: float = 10000.0):
        super().__init__()
        self.frequency_dim, self.max_period = frequency_dim, max_period
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        emb = timestep_embedding(t, self.frequency_dim, self.max_period)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))
