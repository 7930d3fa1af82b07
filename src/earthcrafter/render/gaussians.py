"""2D Gaussian surfels (2DGS) as plain activated tensors.

A surfel i has a centre ``means[i]`` (world, metres), a rotation ``R_i`` from the quaternion
``quats[i]`` (w, x, y, z; normalised here, so any non-zero scale is fine), and two tangent
scales ``scales[i, :2]``. The columns of ``R_i`` are the tangent axes ``t_u``, ``t_v`` and the
surfel normal ``t_w = t_u x t_v``. A point on the surfel is ``p + s_u t_u u + s_v t_v v`` and
its footprint is the Gaussian ``G(u, v) = exp(-(u^2 + v^2) / 2)``.

Values are stored *activated*: scales are positive lengths and opacities lie in (0, 1).
The PLY file stores the usual 3DGS pre-activations (log scale, logit opacity); see
``earthcrafter.render.ply``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor


def num_sh_bases(degree: int) -> int:
    """Number of real SH coefficients per colour channel up to ``degree``: (degree + 1)^2."""
    return (degree + 1) ** 2


def sh_degree_from_bases(k: int) -> int:
    """Inverse of :func:`num_sh_bases`; raises if ``k`` is not a perfect square in 1..16."""
    degree = round(k**0.5) - 1
    if degree < 0 or degree > 3 or num_sh_bases(degree) != k:
        raise ValueError(f"SH coefficient count {k} is not (deg+1)^2 for a degree in 0..3")
    return degree


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Quaternions [..., 4] (w, x, y, z; any non-zero norm) -> rotation matrices [..., 3, 3]."""
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]  # fmt: skip
    return torch.stack(rows, dim=-1).reshape(*quats.shape[:-1], 3, 3)


@dataclass
class Gaussians2D:
    """N surfels with spherical-harmonic colour.

    Fields:
        means: [N, 3] world centres.
        quats: [N, 4] rotations, (w, x, y, z), need not be unit length.
        scales: [N, 2] tangent scales s_u, s_v (> 0). [N, 3] is accepted; the third is ignored.
        opacities: [N] in (0, 1).
        sh: [N, K, 3] SH coefficients, K = (sh_degree + 1)^2; ``sh[:, 0]`` is the DC term.
        sh_degree: 0..3.
    """

    means: Tensor
    quats: Tensor
    scales: Tensor
    opacities: Tensor
    sh: Tensor
    sh_degree: int = 0

    def __post_init__(self) -> None:
        n = self.means.shape[0] if self.means.dim() == 2 else -1
        expect = {
            "means": (self.means, (n, 3)),
            "quats": (self.quats, (n, 4)),
            "opacities": (self.opacities, (n,)),
        }
        for name, (t, shape) in expect.items():
            if tuple(t.shape) != shape:
                raise ValueError(f"Gaussians2D.{name}: expected shape {shape}, got {tuple(t.shape)}")
        if self.scales.dim() != 2 or self.scales.shape[0] != n or self.scales.shape[1] not in (2, 3):
            raise ValueError(f"Gaussians2D.scales: expected [{n}, 2] or [{n}, 3], got {tuple(self.scales.shape)}")
        k = num_sh_bases(self.sh_degree) if 0 <= self.sh_degree <= 3 else -1
        if k < 0:
            raise ValueError(f"Gaussians2D.sh_degree must be 0..3, got {self.sh_degree}")
        if self.sh.dim() != 3 or self.sh.shape[0] != n or self.sh.shape[1] < k or self.sh.shape[2] != 3:
            raise ValueError(
                f"Gaussians2D.sh: expected [{n}, >= {k}, 3] for sh_degree {self.sh_degree}, got {tuple(self.sh.shape)}"
            )
        devices = {t.device for t in self.tensors()}
        if len(devices) != 1:
            raise ValueError(f"Gaussians2D: all tensors must share one device, got {sorted(map(str, devices))}")
        if not all(t.is_floating_point() for t in self.tensors()):
            raise ValueError("Gaussians2D: all tensors must be floating point")

    def tensors(self) -> tuple[Tensor, ...]:
        return (self.means, self.quats, self.scales, self.opacities, self.sh)

    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def device(self) -> torch.device:
        return self.means.device

    @property
    def dtype(self) -> torch.dtype:
        return self.means.dtype

    @property
    def tangent_scales(self) -> Tensor:
        """[N, 2] the two scales the surfel uses."""
        return self.scales[:, :2]

    @property
    def rotmats(self) -> Tensor:
        """[N, 3, 3] rotations; columns t_u, t_v, t_w."""
        return quat_to_rotmat(self.quats)

    @property
    def normals(self) -> Tensor:
        """[N, 3] unit surfel normals t_w (sign as stored; renderers flip them toward the camera)."""
        return self.rotmats[..., 2]

    def _map(self, fn) -> "Gaussians2D":
        kw = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in ("means", "quats", "scales", "opacities", "sh"):
            kw[name] = fn(kw[name])
        return Gaussians2D(**kw)

    def to(self, *args, **kwargs) -> "Gaussians2D":
        return self._map(lambda t: t.to(*args, **kwargs))

    def detach(self) -> "Gaussians2D":
        return self._map(Tensor.detach)

    def index(self, idx: Tensor) -> "Gaussians2D":
        """Subset by a boolean mask or an index tensor."""
        return self._map(lambda t: t[idx])

    def check_values(self) -> None:
        """Raise on non-finite values, non-positive tangent scales, opacities outside [0, 1] or zero quaternions."""
        for name in ("means", "quats", "scales", "opacities", "sh"):
            bad = ~torch.isfinite(getattr(self, name))
            if bad.any():
                raise ValueError(f"Gaussians2D.{name}: {int(bad.sum())} non-finite value(s)")
        if (self.tangent_scales <= 0).any():
            raise ValueError(f"Gaussians2D.scales: {int((self.tangent_scales <= 0).sum())} value(s) <= 0")
        bad = (self.opacities < 0) | (self.opacities > 1)
        if bad.any():
            raise ValueError(f"Gaussians2D.opacities: {int(bad.sum())} value(s) outside [0, 1]")
        if (self.quats.norm(dim=-1) == 0).any():
            raise ValueError("Gaussians2D.quats: zero quaternion(s)")
