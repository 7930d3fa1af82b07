"""Per-voxel 2D Gaussian (surfel) head: raw decoder channels -> activated surfels.

Every active voxel emits ``K`` surfels. Each surfel is a slice of the decoder output laid
out as (in this order)

=========  =======================  ===================================================
part       channels                 activation
=========  =======================  ===================================================
offset     3                        ``tanh(raw + p_k) * offset_range`` voxels around the
                                    voxel centre; ``p_k`` spreads the K initial points
scale      2, or 3 (third unused)   ``softplus(raw + softplus^-1(init_scale)) + min_scale``
                                    voxels (2DGS uses the two tangent scales)
opacity    1                        ``eps + (1 - 2 eps) * sigmoid(raw + logit(init_opacity))``
rotation   6 ("6d") or 4 ("quat")   6-D: two vectors -> Gram-Schmidt -> R = [t_u t_v n];
                                    quat: ``normalize(raw + [1, 0, 0, 0])``; both start
                                    at the identity, i.e. horizontal surfels facing +z
sh         3 (degree + 1)^2         raw SH coefficients (see earthcrafter.render.sh); the
                                    DC term starts at 0, i.e. grey 0.5
=========  =======================  ===================================================

With K = 1, a 3-scale, 6-D rotation and SH degree 0 a voxel holds 3 + 3 + 1 + 6 + 3 = 16
values, the paper's ``V_GS in R^{L^3 x 16}``; the layout is configurable.

Geometry is computed in voxel units and converted to metres with the tile's voxel size:
voxel ``ijk`` has its centre at ``(ijk + 0.5) * voxel_size`` in the tile-local frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from earthcrafter.render.gaussians import Gaussians2D, num_sh_bases

_OPACITY_EPS = 1e-4  # keeps opacities strictly inside (0, 1) even when the sigmoid saturates


@dataclass(frozen=True)
class GaussianLayout:
    """Channel layout of one surfel and of one voxel (K surfels)."""

    gaussians_per_voxel: int = 1
    scale_dims: Literal[2, 3] = 3
    rotation: Literal["6d", "quat"] = "6d"
    sh_degree: int = 0

    def __post_init__(self) -> None:
        if self.gaussians_per_voxel < 1:
            raise ValueError(f"gaussians_per_voxel must be >= 1, got {self.gaussians_per_voxel}")
        if self.scale_dims not in (2, 3):
            raise ValueError(f"scale_dims must be 2 or 3, got {self.scale_dims}")
        if self.rotation not in ("6d", "quat"):
            raise ValueError(f"rotation must be '6d' or 'quat', got {self.rotation!r}")
        if not 0 <= self.sh_degree <= 3:
            raise ValueError(f"sh_degree must be 0..3, got {self.sh_degree}")

    @property
    def parts(self) -> dict[str, int]:
        rot = 6 if self.rotation == "6d" else 4
        return {"offset": 3, "scale": self.scale_dims, "opacity": 1, "rotation": rot,
                "sh": 3 * num_sh_bases(self.sh_degree)}  # fmt: skip

    @property
    def slices(self) -> dict[str, slice]:
        out, start = {}, 0
        for name, width in self.parts.items():
            out[name] = slice(start, start + width)
            start += width
        return out

    @property
    def per_gaussian(self) -> int:
        return sum(self.parts.values())

    @property
    def per_voxel(self) -> int:
        return self.per_gaussian * self.gaussians_per_voxel


def rotation_6d_to_matrix(d6: Tensor) -> Tensor:
    """[..., 6] -> [..., 3, 3] rotations whose columns are (t_u, t_v, t_u x t_v).

    Gram-Schmidt on the two 3-vectors (Zhou et al., "On the continuity of rotation
    representations"); continuous, so it trains better than quaternions or Euler angles.
    """
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = F.normalize(a1, dim=-1, eps=1e-8)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1, eps=1e-8)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def matrix_to_quaternion(R: Tensor) -> Tensor:
    """Rotation matrices [..., 3, 3] -> unit quaternions [..., 4] (w, x, y, z), w >= 0.

    Of the four algebraically equivalent formulas the one with the largest denominator
    is used, so the result is accurate (and its gradient finite) for every rotation.
    """
    m = R.reshape(*R.shape[:-2], 9)
    m00, m01, m02, m10, m11, m12, m20, m21, m22 = m.unbind(-1)
    # 4 q_i^2 for i = w, x, y, z
    sq = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    q_abs = torch.sqrt(torch.clamp_min(sq, 0.0) + 1e-12)
    # Row i: the quaternion times 2 q_i, from the formulas that divide by q_i.
    cands = torch.stack(
        [
            torch.stack([sq[..., 0], m21 - m12, m02 - m20, m10 - m01], -1),
            torch.stack([m21 - m12, sq[..., 1], m10 + m01, m02 + m20], -1),
            torch.stack([m02 - m20, m10 + m01, sq[..., 2], m12 + m21], -1),
            torch.stack([m10 - m01, m20 + m02, m21 + m12, sq[..., 3]], -1),
        ],
        dim=-2,
    ) / (2.0 * q_abs[..., None])
    best = q_abs.argmax(dim=-1)
    q = torch.gather(cands, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = F.normalize(q, dim=-1)
    return torch.where(q[..., :1] < 0, -q, q)


def hammersley_offsets(k: int) -> Tensor:
    """K points in [-0.5, 0.5]^3 (voxel units) spread by a 3-D Hammersley set; [0, 0, 0] for K = 1."""
    if k == 1:
        return torch.zeros(1, 3)

    def radical_inverse(i: int, base: int) -> float:
        inv, f = 0.0, 1.0 / base
        while i > 0:
            inv += f * (i % base)
            i //= base
            f /= base
        return inv

    pts = [[(i + 0.5) / k, radical_inverse(i + 1, 2), radical_inverse(i + 1, 3)] for i in range(k)]  # all in (0, 1)
    return torch.tensor(pts, dtype=torch.float32) - 0.5


class GaussianHead(nn.Module):
    """Linear map from trunk features to K surfels per voxel, with bounded activations.

    Args:
        width: trunk feature channels.
        layout: the surfel channel layout.
        offset_range: reach of the centre around the voxel centre, in voxels (tanh bound).
        init_scale: initial tangent scale in voxels (about half a voxel covers the voxel).
        min_scale: floor of the tangent scales in voxels (keeps surfels non-degenerate).
        init_opacity: initial opacity in (0, 1).
    """

    def __init__(
        self,
        width: int,
        layout: GaussianLayout,
        *,
        offset_range: float = 0.75,
        init_scale: float = 0.5,
        min_scale: float = 0.01,
        init_opacity: float = 0.5,
    ):
        super().__init__()
        if not 0.0 < init_opacity < 1.0:
            raise ValueError(f"init_opacity must be in (0, 1), got {init_opacity}")
        if offset_range <= 0.5:
            raise ValueError(f"offset_range must exceed 0.5 voxel (the initial spread), got {offset_range}")
        if init_scale <= 0 or min_scale < 0:
            raise ValueError(f"init_scale must be > 0 and min_scale >= 0, got {init_scale}, {min_scale}")
        self.layout = layout
        self.offset_range, self.min_scale = float(offset_range), float(min_scale)
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, layout.per_voxel)
        # Zero weights: every voxel starts from the biases below, so the first renders are
        # well-formed (covering, half-transparent, horizontal, grey surfels).
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        k = layout.gaussians_per_voxel
        spread = hammersley_offsets(k) / self.offset_range  # in (-2/3, 2/3): atanh is finite
        self.register_buffer("offset_bias", torch.atanh(spread), persistent=False)
        self.scale_bias = math.log(math.expm1(init_scale))  # softplus^-1
        self.opacity_bias = math.log(init_opacity / (1.0 - init_opacity))

    def raw(self, feats: Tensor) -> Tensor:
        """[N, width] -> [N, K, per_gaussian] raw channels, always float32.

        Autocast is off here: positions reach hundreds of voxels, where bf16 cannot even
        represent a voxel centre (its spacing at 256-512 is 2).
        """
        with torch.autocast(device_type=feats.device.type, enabled=False):
            out = self.proj(self.norm(feats.float()))
        return out.view(feats.shape[0], self.layout.gaussians_per_voxel, self.layout.per_gaussian)

    def activate(self, raw: Tensor, voxel_coords: Tensor, voxel_size: Tensor) -> Gaussians2D:
        """Raw surfel channels -> :class:`Gaussians2D` in the tile-local metric frame.

        Args:
            raw: [N, K, per_gaussian].
            voxel_coords: [N, 3] integer voxel indices (x, y, z).
            voxel_size: [N] or scalar voxel edge in metres.
        Returns surfels ordered voxel-major: surfel ``n * K + k`` is voxel n's k-th surfel; zero
        voxels give zero surfels. Computed in float32 with autocast off (positions reach hundreds of
        voxels; see :meth:`raw`).
        """
        with torch.autocast(device_type=raw.device.type, enabled=False):
            return self._activate(raw, voxel_coords, voxel_size)

    def _activate(self, raw: Tensor, voxel_coords: Tensor, voxel_size: Tensor) -> Gaussians2D:
        s = self.layout.slices
        raw = raw.float()
        n, k = raw.shape[:2]
        vs = torch.as_tensor(voxel_size, dtype=raw.dtype, device=raw.device).reshape(-1, 1, 1).expand(n, 1, 1)
        centre = (voxel_coords.to(raw.dtype) + 0.5)[:, None, :]
        offset = torch.tanh(raw[..., s["offset"]] + self.offset_bias.to(raw.dtype)) * self.offset_range
        means = (centre + offset) * vs
        scales = (F.softplus(raw[..., s["scale"]] + self.scale_bias) + self.min_scale) * vs
        opacity = torch.sigmoid(raw[..., s["opacity"]].squeeze(-1) + self.opacity_bias)
        opacity = _OPACITY_EPS + (1.0 - 2.0 * _OPACITY_EPS) * opacity
        rot = raw[..., s["rotation"]]
        if self.layout.rotation == "6d":
            identity = torch.tensor([1.0, 0, 0, 0, 1, 0], dtype=raw.dtype, device=raw.device)
            quats = matrix_to_quaternion(rotation_6d_to_matrix(rot + identity))
        else:
            quats = F.normalize(rot + torch.tensor([1.0, 0, 0, 0], dtype=raw.dtype, device=raw.device), dim=-1)
        n_sh, n_scale = num_sh_bases(self.layout.sh_degree), self.layout.scale_dims  # explicit: n may be 0
        return Gaussians2D(
            means=means.reshape(n * k, 3),
            quats=quats.reshape(n * k, 4),
            scales=scales.reshape(n * k, n_scale),
            opacities=opacity.reshape(n * k),
            sh=raw[..., s["sh"]].reshape(n * k, n_sh, 3),
            sh_degree=self.layout.sh_degree,
        )

    def forward(self, feats: Tensor, voxel_coords: Tensor, voxel_size: Tensor) -> Gaussians2D:
        return self.activate(self.raw(feats), voxel_coords, voxel_size)
