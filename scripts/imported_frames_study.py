"""Frames rendered for an imported LiDAR scene: sun shading and vertex colours against measured
shading and the orthophoto drape (docs/data_import.md, "Frames of imported scenes").

Meshes the scene as the meshing stage does, then renders the same cameras three times: the way frames
were rendered before (``shading: sun``, no drape) and with the stage's defaults (``measured``
shading, orthophoto drape). Prints one JSON line per camera set with

- ``brightness``: mean frame RGB over the mean of the colours the scene holds at the same surface
  points (the orthophoto where it covers an up-facing point, else the mesh's colour) — 1.0 means
  the frame shows the measured colours; the sun model darkens them;
- ``psnr_vs_orthophoto``: PSNR (dB) of the frame's up-facing pixels against the orthophoto sampled
  at their surface points — what a frame keeps of the 0.3 m image (the drape's own pixels match it
  by construction: this row says what the vertex colours lose);
- ``render_s``: rendering time of the set, side by side.

A middle setting (measured shading, vertex colours) separates the two changes. ``--figure`` draws
one oblique and one close nadir frame in every setting.

    python scripts/imported_frames_study.py data/01_raw/scenes/autzen --figure docs/img/imported_frames.png
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from earthcrafter.geometry.cameras import Camera, intrinsics_from_fov, look_at
from earthcrafter.geometry.poses import plan_cameras
from earthcrafter.geometry.raycast import MeshRaycaster, Shading, orthophoto_drape
from earthcrafter.geometry.surface import MeshingConfig, mesh_scene
from earthcrafter.io.imported_scene import read_imported_scene
from earthcrafter.pipelines.meshing.config import RenderFramesConfig

SETTINGS = {
    "before (sun, vertex colours)": (Shading(), False),
    "measured, vertex colours": (Shading.measured(), False),
    "now (measured, orthophoto drape)": (Shading.measured(), True),
}


def surface_points(frame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Valid-pixel mask, hit points and camera-facing normals of a rendered frame (its depth and
    normal layers)."""
    valid = np.isfinite(frame.depth)
    return valid, frame.camera.unproject_depth(frame.depth)[valid], frame.normal[valid]


def measure(caster, cams, ortho, shading, drape_on, min_z) -> tuple[dict, list]:
    drape = orthophoto_drape(ortho, min_z) if drape_on else None
    t0 = time.perf_counter()
    frames = [caster.render(cam, f"{i:03d}", shading, drape) for i, cam in enumerate(cams)]
    seconds = time.perf_counter() - t0
    plain = [caster.render(cam, "", Shading.measured(), orthophoto_drape(ortho, min_z)) for cam in cams]
    ratio_num = ratio_den = se = count = 0.0
    for fr, ref in zip(frames, plain):
        valid, pts, n = surface_points(ref)
        ratio_num += fr.rgb[valid].astype(np.float64).sum()
        ratio_den += ref.rgb[valid].astype(np.float64).sum()
        o = ortho.sample(pts[:, :2])
        up = (n[:, 2] >= min_z) & ~np.isnan(o).any(1)
        se += ((fr.rgb[valid][up].astype(np.float64) - o[up]) ** 2).sum()
        count += up.sum() * 3
    psnr = 10 * np.log10(255.0**2 / (se / count))
    return {"brightness": round(ratio_num / ratio_den, 3), "psnr_vs_orthophoto": round(float(psnr), 2),
            "render_s": round(seconds, 2), "frames": len(cams)}, frames  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scene", help="an imported scene folder with orthophoto.png (e.g. data/01_raw/scenes/autzen)")
    ap.add_argument("--cell-size", type=float, default=1.0, help="DSM cell size (m), as meshing.dsm.cell_size")
    ap.add_argument("--figure", help="write a PNG of both renderings of two frames here")
    args = ap.parse_args()

    scene = read_imported_scene(args.scene, load_frames=False)
    if getattr(scene, "orthophoto", None) is None:
        raise SystemExit(f"{args.scene}: the scene has no orthophoto")
    cfg = MeshingConfig.model_validate({"method": "dsm", "dsm": {"cell_size": args.cell_size}})
    mesh, _ = mesh_scene(scene, cfg)
    caster = MeshRaycaster(mesh)
    rf = RenderFramesConfig()
    oblique = plan_cameras(caster, count=rf.count, width=rf.width, height=rf.height, fov_deg=rf.fov_deg,
                           pitch_deg_range=rf.pitch_deg_range, seed=rf.seed)  # fmt: skip
    # close nadir frames: 512 px over ~77 m, 0.15 m per pixel at the ground (half the orthophoto's pixel)
    lo, hi = mesh.vertices.min(0), mesh.vertices.max(0)
    centres = [lo + (hi - lo) * f for f in (np.array([0.3, 0.5, 0]), np.array([0.6, 0.4, 0]), np.array([0.5, 0.7, 0]))]
    nadir = []
    for c in centres:
        ground = float(np.nanmax(caster.height_at(c[None, :2])[0:1], initial=lo[2]))
        eye = np.array([c[0], c[1], ground + 66.5])
        nadir.append(Camera(intrinsics_from_fov(512, 512, 60.0), look_at(eye, eye - [0, 0, 1], up=(0, 1, 0)), 512, 512))

    figure_frames = {}
    for name, cams in (("oblique", oblique), ("nadir_close", nadir)):
        for label, (shading, drape_on) in SETTINGS.items():
            row, frames = measure(caster, cams, scene.orthophoto, shading, drape_on, rf.drape_min_normal_z)
            print(json.dumps({"scene": scene.scene_id, "cameras": name, "setting": label, **row}))
            figure_frames[(name, label)] = frames[0].rgb
    if args.figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(2, len(SETTINGS), figsize=(5 * len(SETTINGS), 10))
        for i, name in enumerate(("oblique", "nadir_close")):
            for j, label in enumerate(SETTINGS):
                axes[i, j].imshow(figure_frames[(name, label)])
                axes[i, j].set_title(f"{name.replace('_', ' ')}: {label}", fontsize=10)
                axes[i, j].axis("off")
        fig.tight_layout()
        fig.savefig(args.figure, dpi=60)
        print(json.dumps({"figure": args.figure}))


if __name__ == "__main__":
    main()
