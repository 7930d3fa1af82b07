"""Real spherical harmonics for view-dependent colour, degrees 0..3.

Convention (the one 3DGS/2DGS checkpoints, PLY files and gsplat use, so files interoperate):
basis functions are the orthonormal real SH ``Y_lm`` evaluated at the unit view direction
``d = (x, y, z)`` = normalize(mean - camera centre), ordered l = 0, 1, 2, 3 and, within a
degree, m = -l..l, with the signs below (degree 1 is ``(-C1 y, C1 z, -C1 x)``). The colour is

    rgb = clamp_min(sum_k sh[k] * Y_k(d) + 0.5, 0)

so a DC coefficient ``c0`` gives ``C0 * c0 + 0.5``; :func:`rgb_to_sh_dc` inverts that.
"""

from __future__ import annotations

import torch
from torch import Tensor

from earthcrafter.render.gaussians import num_sh_bases

C0 = 0.28209479177387814  # 1 / (2 sqrt(pi))
C1 = 0.4886025119029199  # sqrt(3) / (2 sqrt(pi))
C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)


def sh_basis(dirs: Tensor, degree: int) -> Tensor:
    """Real SH basis at directions [..., 3] (normalised here) -> [..., (degree + 1)^2]."""
    if not 0 <= degree <= 3:
        raise ValueError(f"SH degree must be 0..3, got {degree}")
    d = torch.nn.functional.normalize(dirs, dim=-1, eps=1e-12)
    x, y, z = d.unbind(-1)
    out = [torch.full_like(x, C0)]
    if degree >= 1:
        out += [-C1 * y, C1 * z, -C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [
            C2[0] * x * y,
            C2[1] * y * z,
            C2[2] * (2 * zz - xx - yy),
            C2[3] * x * z,
            C2[4] * (xx - yy),
        ]
    if degree >= 3:
        out += [
            C3[0] * y * (3 * xx - yy),
            C3[1] * x * y * z,
            C3[2] * y * (4 * zz - xx - yy),
            C3[3] * z * (2 * zz - 3 * xx - 3 * yy),
            C3[4] * x * (4 * zz - xx - yy),
            C3[5] * z * (xx - yy),
            C3[6] * x * (xx - 3 * yy),
        ]
    return torch.stack(out, dim=-1)


def sh_to_rgb(sh: Tensor, dirs: Tensor, degree: int) -> Tensor:
    """Colour from SH coefficients [..., K, 3] (K >= (degree+1)^2) at directions [..., 3] -> [..., 3].

    Only the first (degree + 1)^2 coefficients are used; the result is clamped at 0 (not at 1).
    """
    k = num_sh_bases(degree)
    if sh.shape[-2] < k:
        raise ValueError(f"sh has {sh.shape[-2]} coefficients, degree {degree} needs {k}")
    basis = sh_basis(dirs, degree)
    return torch.clamp_min((basis.unsqueeze(-1) * sh[..., :k, :]).sum(-2) + 0.5, 0.0)


def rgb_to_sh_dc(rgb: Tensor) -> Tensor:
    """DC coefficient whose degree-0 colour is ``rgb`` [..., 3] (for rgb >= 0)."""
    return (rgb - 0.5) / C0
