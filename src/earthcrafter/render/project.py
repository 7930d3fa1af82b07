"""Projection and culling of 2DGS surfels for one camera (the first half of the torch backend).

The ray-splat intersection uses the homogeneous-plane form of 2DGS. With
``A = K [s_u R t_u | s_v R t_v | p_cam]`` mapping surfel coordinates (u, v, 1) to homogeneous
pixels, pixel (x, y) sees the surfel point ``(u, v, 1) ~ A^-1 (x, y, 1)``: the rows of
``adj(A)`` are the cross products of the two planes ``x a_2 - a_0`` and ``y a_2 - a_1`` that
contain the pixel's ray. We keep ``b = z_c A^-1`` so that, with ``d = (x, y) - c`` the offset
from the projected centre ``c``,

    (q0, q1, q2) = (0, 0, 1) + b[:, :2] d,   (u, v) = (q0, q1) / q2,   z_hit = z_c / q2.

Footprint model (2DGS paper, with gsplat's constants): ``g = min(u^2 + v^2, 2 |d|^2)`` (the
second term is the screen-space low-pass filter, sigma = sqrt(2)/2 px), ``alpha =
min(0.999, o exp(-g / 2))``, and pairs with alpha < 1/255 are skipped. The 3D term counts
only where the ray meets the surfel plane beyond the near plane (0 < q2 < z_c / near).

Culling: surfels whose centre depth is outside (near, far) or whose footprint misses the
image are dropped. Since alpha >= 1/255 needs ``g <= 2 ln(255 o)``, the screen bounding box
of the ellipse ``u^2 + v^2 <= 2 ln(255 o)`` (exact, from its dual conic) joined with the
filter disk ``|d| <= sqrt(ln(255 o))`` holds every pixel a surfel can touch: an
opacity-aware bound of at most 3.33 sigma, so binning by it changes no pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from earthcrafter.render.gaussians import Gaussians2D, quat_to_rotmat
from earthcrafter.render.sh import sh_to_rgb

ALPHA_MIN = 1.0 / 255.0  # skip pairs below this alpha
ALPHA_MAX = 0.999  # clamp, keeps log1p(-alpha) finite
T_MIN = 1e-4  # a pixel stops before its transmittance would drop to <= T_MIN
LOG_T_MIN = math.log(T_MIN)
FILTER_INV_SQUARE = 2.0  # 1 / sigma^2 of the screen-space low-pass filter, sigma = sqrt(2)/2 px
Q_EPS = 1e-6  # smallest q2 (= z_c / z_hit) for which the ray-plane hit is used
UV_MAX = 1e4  # |u|, |v| clamp: far outside the footprint, keeps squares and gradients finite
EDGE_ON_COS = 1e-6  # |cos(normal, view ray)| below this: the surfel is a line, screen filter only


class Col:
    """Columns of :attr:`ProjectedSurfels.params` (one row per visible surfel)."""

    CX, CY = 0, 1  # projected centre c (pixels)
    B00, B01, B10, B11, B20, B21 = 2, 3, 4, 5, 6, 7  # b[:, :2] = z_c A^-1[:, :2], row-major
    H = 8  # q2 at the centre: 1, or 0 for an edge-on surfel (screen filter only)
    Z, DZ = 9, 10  # centre depth z_c, and the depth half-range of the support disk
    OPA = 11  # opacity
    FEAT = slice(12, 18)  # composited features: rgb (3), camera-facing world normal (3)


N_COLS = 18
SUPPORT_R2 = 2.0 * math.log(255.0)  # (u^2 + v^2) beyond which alpha < 1/255 for any opacity


@dataclass
class ProjectedSurfels:
    """Visible surfels of one camera, sorted by centre depth (front first)."""

    ids: Tensor  # [M] int64 indices into the input Gaussians
    params: Tensor  # [M + 1, N_COLS]; the last row is an all-zero padding surfel (alpha 0)
    pixel_box: Tensor  # [M, 4] int64 inclusive pixel bounds x0, y0, x1, y1 (clamped to the image)


@torch.no_grad()
def footprint_boxes(
    p_cam: Tensor, e_u: Tensor, e_v: Tensor, opacities: Tensor, K: Tensor, width: int, height: int
) -> Tensor:
    """Screen boxes [M, 4] (xmin, ymin, xmax, ymax; continuous pixels) holding every pixel with alpha >= 1/255.

    ``p_cam``, ``e_u``, ``e_v`` [M, 3] are the camera-space centre and scaled tangents. The
    ellipse ``u^2 + v^2 <= r^2`` (r^2 = 2 ln(255 o)) maps to the image conic whose tangent lines
    ``x = const`` satisfy ``l^T A D A^T l = 0`` with ``D = diag(r^2, r^2, -1)``, ``l = (1, 0, -x)``:
    a quadratic in x whose two roots bound the ellipse. If the disk reaches z <= 0 the image
    is not an ellipse and the whole image is returned.
    """
    dt = torch.float64
    A = K.to(dt) @ torch.stack([e_u, e_v, p_cam], dim=-1).to(dt)  # [M, 3, 3], columns
    r2 = 2.0 * torch.log((255.0 * opacities.to(dt)).clamp_min(1.0)) * (1 + 1e-4) + 1e-6
    D = torch.stack([r2, r2, -torch.ones_like(r2)], dim=-1)  # [M, 3]
    w = A[:, 2]
    den = (D * w * w).sum(-1)  # < 0 iff the whole disk is in front of the camera
    ok = den < 0
    den = torch.where(ok, den, -torch.ones_like(den))
    lo, hi = [], []
    for axis in (0, 1):
        a = A[:, axis]
        mid = (D * a * w).sum(-1) / den
        half = (mid * mid - (D * a * a).sum(-1) / den).clamp_min(0).sqrt()
        lo.append(mid - half)
        hi.append(mid + half)
    box = torch.stack(lo + hi, dim=-1)
    # Join the screen-filter disk around the projected centre.
    c = A[:, :2, 2] / A[:, 2:, 2]
    rad = (r2 / FILTER_INV_SQUARE).sqrt()[:, None]
    box = torch.cat([torch.minimum(box[:, :2], c - rad), torch.maximum(box[:, 2:], c + rad)], dim=-1)
    full = torch.tensor([0.0, 0.0, float(width), float(height)], dtype=dt, device=box.device)
    box = torch.where(ok[:, None], box, full)
    return box + torch.tensor([-1e-2, -1e-2, 1e-2, 1e-2], dtype=dt, device=box.device)


def project_surfels(
    g: Gaussians2D,
    viewmat: Tensor,
    K: Tensor,
    width: int,
    height: int,
    near: float,
    far: float,
) -> ProjectedSurfels:
    """Cull and project the surfels for one camera (``viewmat`` [4, 4], ``K`` [3, 3])."""
    viewmat, K = viewmat.to(g.dtype), K.to(g.dtype)
    Rcw, t = viewmat[:3, :3], viewmat[:3, 3]

    with torch.no_grad():  # culling decisions: float64, no graph
        R64 = Rcw.double()
        p_cam = g.means.detach().double() @ R64.T + t.double()
        z = p_cam[:, 2]
        opa = g.opacities.detach()
        keep = (z > near) & (z < far) & (opa >= ALPHA_MIN) & torch.isfinite(p_cam).all(-1)
        idx = keep.nonzero().squeeze(1)
        Rc = R64 @ quat_to_rotmat(g.quats.detach()[idx].double())
        s = g.tangent_scales.detach()[idx].double()
        box = footprint_boxes(p_cam[idx], Rc[..., 0] * s[:, :1], Rc[..., 1] * s[:, 1:], opa[idx], K, width, height)
        # Pixel centres sit at i + 0.5: pixel i is inside [lo, hi] iff lo - 0.5 <= i <= hi - 0.5.
        pix = torch.cat([torch.ceil(box[:, :2] - 0.5), torch.floor(box[:, 2:] - 0.5)], dim=-1)
        inside = (pix[:, 2] >= 0) & (pix[:, 3] >= 0) & (pix[:, 0] <= width - 1) & (pix[:, 1] <= height - 1)
        inside &= (pix[:, 0] <= pix[:, 2]) & (pix[:, 1] <= pix[:, 3])
        idx, pix, z = idx[inside], pix[inside], z[idx[inside]]
        order = torch.sort(z, stable=True).indices  # front to back
        idx, pix = idx[order], pix[order]
        lim = torch.tensor([width - 1, height - 1], dtype=pix.dtype, device=pix.device).repeat(2)
        pix_box = torch.minimum(pix.clamp_min(0), lim).long()

    params = surfel_params(g, idx, Rcw, t, K)
    pad = torch.zeros(1, N_COLS, dtype=params.dtype, device=params.device)
    return ProjectedSurfels(ids=idx, params=torch.cat([params, pad]), pixel_box=pix_box)


def surfel_params(g: Gaussians2D, idx: Tensor, Rcw: Tensor, t: Tensor, K: Tensor) -> Tensor:
    """Differentiable packed parameters [M, N_COLS] of the surfels ``idx``."""
    means = g.means[idx]
    R = quat_to_rotmat(g.quats[idx])  # [M, 3, 3], columns t_u, t_v, t_w (world)
    s = g.tangent_scales[idx]
    p_cam = means @ Rcw.T + t
    Rc = Rcw @ R
    e_u, e_v = Rc[..., 0] * s[:, :1], Rc[..., 1] * s[:, 1:]
    # Rows of adj(V), V = [e_u | e_v | p_cam]: V^-1 = rows / det V, det V = s_u s_v (n . p).
    rows = torch.stack(
        [torch.cross(e_v, p_cam, dim=-1), torch.cross(p_cam, e_u, dim=-1), torch.cross(e_u, e_v, dim=-1)], dim=1
    )
    det = (rows[:, 2] * p_cam).sum(-1)
    z_c = p_cam[:, 2]
    with torch.no_grad():
        edge_on = det.abs() <= EDGE_ON_COS * s[:, 0] * s[:, 1] * p_cam.norm(dim=-1)
    det_safe = torch.where(edge_on, torch.ones_like(det), det)
    b = (z_c / det_safe)[:, None, None] * (rows @ torch.linalg.inv(K)[:, :2])  # [M, 3, 2] = z_c A^-1[:, :2]
    b = torch.where(edge_on[:, None, None], torch.zeros_like(b), b)
    h = (~edge_on).to(b.dtype)  # q2 = h + ...: an edge-on surfel never passes the q2 > 0 test
    uvw = p_cam @ K.T
    centre = uvw[:, :2] / z_c[:, None]
    # Depth range of the support disk u^2 + v^2 <= SUPPORT_R2: bounds the hit depth used per pixel.
    dz = math.sqrt(SUPPORT_R2) * torch.sqrt(e_u[:, 2] ** 2 + e_v[:, 2] ** 2 + 1e-30)
    # Normals face the camera: flip where n . p_cam > 0 (sign of det).
    flip = torch.where(det > 0, -1.0, 1.0).to(R.dtype)
    normals = R[..., 2] * flip[:, None]
    cam_centre = -Rcw.T @ t
    rgb = sh_to_rgb(g.sh[idx], means - cam_centre, g.sh_degree)
    cols = [centre, b.reshape(-1, 6), h[:, None], z_c[:, None], dz[:, None], g.opacities[idx, None], rgb, normals]
    return torch.cat(cols, dim=-1)
