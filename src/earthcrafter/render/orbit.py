"""Turntable / flyover videos of a surfel scene: orbit cameras, rendering, PNG + GIF + MP4."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from earthcrafter.geometry.cameras import intrinsics_from_fov, look_at
from earthcrafter.io.atomic import atomic_path
from earthcrafter.render.gaussians import Gaussians2D
from earthcrafter.render.rasterize import Backend, rasterize_2dgs

log = logging.getLogger(__name__)


def orbit_cameras(
    center: np.ndarray,
    radius: float,
    altitude: float,
    n_frames: int,
    width: int,
    height: int,
    fov_deg: float,
    start_deg: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """World-to-camera [n, 4, 4] and K [n, 3, 3] for cameras circling ``center``.

    Camera i sits at ``center + (radius cos a_i, radius sin a_i, altitude)``,
    ``a_i = start + 360 i / n`` degrees, looking at ``center`` with z up; ``fov_deg`` is horizontal.
    """
    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    if radius <= 0 and altitude == 0:
        raise ValueError("orbit: radius and altitude cannot both be zero (camera at the target)")
    c = np.asarray(center, dtype=np.float64)
    angles = np.deg2rad(start_deg + 360.0 * np.arange(n_frames) / n_frames)
    eyes = c + np.stack([radius * np.cos(angles), radius * np.sin(angles), np.full(n_frames, altitude)], -1)
    viewmats = np.stack([look_at(e, c) for e in eyes])
    Ks = np.repeat(intrinsics_from_fov(width, height, fov_deg)[None], n_frames, axis=0)
    return viewmats, Ks


@torch.no_grad()
def render_orbit(
    gaussians: Gaussians2D,
    center: np.ndarray,
    radius: float,
    altitude: float,
    n_frames: int,
    width: int,
    height: int,
    fov_deg: float = 60.0,
    start_deg: float = 0.0,
    *,
    background: tuple[float, float, float] = (1.0, 1.0, 1.0),
    backend: Backend = "auto",
    batch: int = 4,
) -> list[np.ndarray]:
    """Render an orbit (see :func:`orbit_cameras`); returns ``n_frames`` uint8 [H, W, 3] frames.

    ``altitude`` is the camera height above ``center`` (a flyover when large against ``radius``).
    """
    viewmats, Ks = orbit_cameras(center, radius, altitude, n_frames, width, height, fov_deg, start_deg)
    dev, dt = gaussians.device, gaussians.dtype
    bg = torch.tensor(background, device=dev, dtype=dt)
    frames = []
    for i in tqdm(range(0, n_frames, batch), desc="orbit", unit="batch", leave=False):
        out = rasterize_2dgs(
            gaussians,
            torch.as_tensor(viewmats[i : i + batch], device=dev, dtype=dt),
            torch.as_tensor(Ks[i : i + batch], device=dev, dtype=dt),
            width,
            height,
            background=bg,
            backend=backend,
        )
        rgb = (out.rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
        frames.extend(list(rgb))
    return frames


def _write_mp4(frames: list[np.ndarray], path: Path, fps: float) -> str | None:
    """Encode with the system ffmpeg (H.264, yuv420p). Returns an error message or None."""
    exe = shutil.which("ffmpeg")
    if exe is None:
        return "no ffmpeg executable on PATH"
    h, w = frames[0].shape[:2]
    cmd = [
        exe, "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
        "-r", f"{fps}", "-i", "-", "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2",  # yuv420p needs even sizes
        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-movflags", "+faststart", str(path),
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, input=b"".join(np.ascontiguousarray(f).tobytes() for f in frames),
                              capture_output=True, timeout=600)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"ffmpeg failed to run: {e}"
    if proc.returncode != 0 or not path.is_file():
        return f"ffmpeg exited with {proc.returncode}: {proc.stderr.decode(errors='replace').strip()[-300:]}"
    return None


def save_frames(
    frames: list[np.ndarray],
    out_dir: str | os.PathLike,
    gif: bool = True,
    mp4: bool = True,
    fps: float = 12.0,
    name: str = "orbit",
) -> dict[str, Path | list[Path]]:
    """Write ``frame_0000.png``..., ``<name>.gif`` and ``<name>.mp4`` into ``out_dir`` (atomically, as one folder).

    MP4 uses the system ``ffmpeg``; if it is missing or fails, the reason is logged and only
    the PNGs and GIF are written. Returns the written paths by kind ("png", "gif", "mp4").
    """
    if not frames:
        raise ValueError("save_frames: no frames")
    shapes = {f.shape for f in frames}
    if len(shapes) != 1 or frames[0].ndim != 3 or frames[0].shape[2] != 3:
        raise ValueError(f"save_frames: frames must share one [H, W, 3] shape, got {sorted(shapes)}")
    if any(f.dtype != np.uint8 for f in frames):
        raise ValueError("save_frames: frames must be uint8")
    out_dir = Path(out_dir)
    written: dict[str, Path | list[Path]] = {"png": []}
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for i, f in enumerate(frames):
            Image.fromarray(f).save(tmp / f"frame_{i:04d}.png")
            written["png"].append(out_dir / f"frame_{i:04d}.png")
        if gif:
            imgs = [Image.fromarray(f) for f in frames]
            imgs[0].save(tmp / f"{name}.gif", save_all=True, append_images=imgs[1:],
                         duration=round(1000 / fps), loop=0)  # fmt: skip
            written["gif"] = out_dir / f"{name}.gif"
        if mp4:
            err = _write_mp4(frames, tmp / f"{name}.mp4", fps)
            if err is None:
                written["mp4"] = out_dir / f"{name}.mp4"
            else:
                log.warning("save_frames: no MP4 written (%s); PNG%s only", err, " + GIF" if gif else "")
    return written
