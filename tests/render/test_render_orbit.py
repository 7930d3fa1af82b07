"""Orbit cameras, orbit rendering and frame/GIF/MP4 writing."""

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from earthcrafter.geometry.cameras import Camera
from earthcrafter.render import orbit_cameras, render_orbit, rgb_to_sh_dc, save_frames
from earthcrafter.render.gaussians import Gaussians2D


def test_orbit_cameras_circle_and_look_at_the_centre():
    centre = np.array([10.0, -5.0, 2.0])
    V, K = orbit_cameras(centre, radius=30.0, altitude=20.0, n_frames=8, width=64, height=48, fov_deg=60)
    assert V.shape == (8, 4, 4) and K.shape == (8, 3, 3)
    for E in V:
        cam = Camera(K[0], E, 64, 48)
        off = cam.center - centre
        assert np.hypot(off[0], off[1]) == pytest.approx(30.0) and off[2] == pytest.approx(20.0)
        uv, z = cam.project(centre[None])
        np.testing.assert_allclose(uv[0], [32, 24], atol=1e-9)  # the centre is in the middle of the frame
        assert z[0] > 0


def _disc_scene():
    """A single flat, red, opaque disc of surfels in the z = 0 plane."""
    a = np.linspace(-4, 4, 17)
    xx, yy = np.meshgrid(a, a)
    keep = xx**2 + yy**2 < 16
    means = torch.tensor(np.stack([xx[keep], yy[keep], np.zeros(keep.sum())], -1), dtype=torch.float32)
    n = len(means)
    rgb = torch.tensor([[0.9, 0.1, 0.1]]).expand(n, 3)
    return Gaussians2D(means, torch.tensor([[1.0, 0, 0, 0]]).expand(n, 4), torch.full((n, 2), 0.5),
                       torch.full((n,), 0.95), rgb_to_sh_dc(rgb)[:, None, :], 0)  # fmt: skip


def test_render_orbit_frames_show_the_scene_on_the_background():
    frames = render_orbit(_disc_scene(), center=np.zeros(3), radius=12.0, altitude=8.0, n_frames=3, width=32,
                          height=24, fov_deg=60, batch=2)  # fmt: skip
    assert len(frames) == 3 and all(f.shape == (24, 32, 3) and f.dtype == np.uint8 for f in frames)
    for f in frames:
        assert tuple(f[0, 0]) == (255, 255, 255)  # white background in the corner
        assert f[12, 16, 0] > 200 and f[12, 16, 1] < 60  # red disc at the centre


def test_save_frames_writes_pngs_gif_and_mp4(tmp_path):
    frames = [np.full((10, 15, 3), 20 * i, dtype=np.uint8) for i in range(4)]
    out = save_frames(frames, tmp_path / "video", fps=5)
    assert [p.name for p in out["png"]] == [f"frame_{i:04d}.png" for i in range(4)]
    np.testing.assert_array_equal(np.asarray(Image.open(out["png"][2])), frames[2])
    gif = Image.open(out["gif"])
    assert gif.n_frames == 4
    if shutil.which("ffmpeg"):
        assert out["mp4"].stat().st_size > 0
        assert out["mp4"].read_bytes()[4:8] == b"ftyp"


def test_save_frames_falls_back_to_gif_without_ffmpeg(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    frames = [np.zeros((8, 8, 3), dtype=np.uint8)] * 2
    out = save_frames(frames, tmp_path / "v")
    assert "mp4" not in out and out["gif"].is_file()
    assert "no MP4 written" in caplog.text


def test_save_frames_rejects_bad_frames(tmp_path):
    with pytest.raises(ValueError, match="share one"):
        save_frames([np.zeros((8, 8, 3), np.uint8), np.zeros((4, 8, 3), np.uint8)], tmp_path / "x")
    with pytest.raises(ValueError, match="uint8"):
        save_frames([np.zeros((8, 8, 3), np.float32)], tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_render_orbit_float64_on_cpu_backend():
    g = _disc_scene().to(torch.float64)
    frames = render_orbit(g, np.zeros(3), 12.0, 8.0, 1, 16, 12, backend="torch")
    assert frames[0].shape == (12, 16, 3)
