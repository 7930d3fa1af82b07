"""An independent, slow 2DGS reference for tests: world-space ray-plane intersection per pixel.

It shares no code with the renderer except camera conventions and SH colours (tested on
their own): each pixel ray from :meth:`Camera.pixel_rays` is intersected with each surfel's
plane in world space, the hit is expressed in the surfel's (u, v) frame, and surfels are
composited one after the other, front to back, with the alpha threshold, clamp and early
stop that gsplat uses.
"""

from __future__ import annotations

import numpy as np
import torch

from earthcrafter.geometry.cameras import Camera
from earthcrafter.render.gaussians import Gaussians2D, quat_to_rotmat
from earthcrafter.render.sh import sh_to_rgb


def make_scene(n: int, seed: int, sh_degree: int = 1, dtype=torch.float64) -> Gaussians2D:
    """Random surfels in front of the identity camera (z in 1.5..4), some tilted, some off-screen."""
    g = torch.Generator().manual_seed(seed)
    xy = (torch.rand(n, 2, generator=g) - 0.5) * 2.6
    z = 1.5 + 2.5 * torch.rand(n, 1, generator=g)
    quats = torch.randn(n, 4, generator=g)
    scales = 0.03 + 0.25 * torch.rand(n, 2, generator=g)
    opac = 0.05 + 0.94 * torch.rand(n, generator=g)
    sh = 0.5 * torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g)
    return Gaussians2D(torch.cat([xy, z], 1).to(dtype), quats.to(dtype), scales.to(dtype),
                       opac.to(dtype), sh.to(dtype), sh_degree)  # fmt: skip


def reference_render(
    g: Gaussians2D, cam: Camera, near: float = 0.01, far: float = 1e10, background=(0.0, 0.0, 0.0),
    splat_depth: str = "intersection",
) -> dict[str, np.ndarray]:  # fmt: skip
    """Brute force over all pixels x all surfels. Returns rgb, alpha, depth [H, W, 1], normals."""
    means = g.means.detach().double().numpy()
    R = quat_to_rotmat(g.quats.detach().double()).numpy()
    s = g.tangent_scales.detach().double().numpy()
    opa = g.opacities.detach().double().numpy()
    centre = cam.center
    rgb_g = sh_to_rgb(g.sh.detach().double(), torch.from_numpy(means - centre), g.sh_degree).numpy()

    origins, dirs = cam.pixel_rays()  # [H, W, 3]
    cos_fwd = dirs @ cam.forward  # camera z per unit ray length
    px = np.stack(np.meshgrid(np.arange(cam.width) + 0.5, np.arange(cam.height) + 0.5), -1)
    uv_c, z_c = cam.project(means)

    H, W = cam.height, cam.width
    T = np.ones((H, W))
    done = np.zeros((H, W), bool)
    acc = np.zeros((H, W, 7))
    for i in np.argsort(z_c, kind="stable"):
        if not (near < z_c[i] < far) or opa[i] < 1 / 255:
            continue
        t_u, t_v, n = R[i][:, 0], R[i][:, 1], R[i][:, 2]
        denom = dirs @ n
        with np.errstate(divide="ignore", invalid="ignore"):
            ray_len = ((means[i] - origins) @ n) / denom
        hit = origins + ray_len[..., None] * dirs
        u = (hit - means[i]) @ t_u / s[i, 0]
        v = (hit - means[i]) @ t_v / s[i, 1]
        z_hit = ray_len * cos_fwd
        ok3 = np.isfinite(z_hit) & (z_hit > near)
        r3 = np.where(ok3, u * u + v * v, np.inf)
        r2 = 2.0 * ((px - uv_c[i]) ** 2).sum(-1)
        gw = np.minimum(r3, r2)
        alpha = np.minimum(0.999, opa[i] * np.exp(-0.5 * gw))
        # hit depth, clamped to the depth range of the support disk u^2 + v^2 <= 2 ln 255
        dz = np.sqrt(2 * np.log(255)) * np.hypot(s[i, 0] * t_u @ cam.forward, s[i, 1] * t_v @ cam.forward)
        z = np.clip(z_hit, z_c[i] - dz, z_c[i] + dz) if splat_depth == "intersection" else z_c[i]
        z = np.where(ok3, z, z_c[i])
        normal = -n if n @ (means[i] - centre) > 0 else n
        live = ~done & (alpha >= 1 / 255)
        t_next = T * (1 - alpha)
        stop = live & (t_next <= 1e-4)  # this surfel would take T to <= 1e-4: the pixel ends here
        done |= stop
        use = live & ~stop
        w = np.where(use, alpha * T, 0.0)
        acc[..., :3] += w[..., None] * rgb_g[i]
        acc[..., 3:6] += w[..., None] * normal
        acc[..., 6] += np.where(use, w * z, 0.0)
        T = np.where(use, t_next, T)
    a = 1 - T
    return {
        "rgb": acc[..., :3] + T[..., None] * np.asarray(background),
        "alpha": a[..., None],
        "normals": acc[..., 3:6],
        "depth": (acc[..., 6] / np.maximum(a, 1e-10))[..., None],
    }
