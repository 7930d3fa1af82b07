"""2D Gaussian splatting: surfels, rasterisation (torch reference + gsplat), metrics, PLY, orbit videos."""

from earthcrafter.render.gaussians import Gaussians2D, num_sh_bases, quat_to_rotmat
from earthcrafter.render.metrics import l1, load_lpips, psnr, ssim
from earthcrafter.render.orbit import orbit_cameras, render_orbit, save_frames
from earthcrafter.render.ply import load_ply, save_ply
from earthcrafter.render.rasterize import RenderOutput, rasterize_2dgs, resolve_backend, stack_cameras
from earthcrafter.render.sh import rgb_to_sh_dc, sh_basis, sh_to_rgb

__all__ = [
    "Gaussians2D",
    "RenderOutput",
    "l1",
    "load_lpips",
    "load_ply",
    "num_sh_bases",
    "orbit_cameras",
    "psnr",
    "quat_to_rotmat",
    "rasterize_2dgs",
    "render_orbit",
    "resolve_backend",
    "rgb_to_sh_dc",
    "save_frames",
    "save_ply",
    "sh_basis",
    "sh_to_rgb",
    "ssim",
    "stack_cameras",
]
