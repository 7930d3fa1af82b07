"""An imported scene as pictures (docs/data_import.md, "The real survey in the base configuration").

Top row: the imported points seen from above — their colour, their height, their earthcrafter
class. Bottom row: frames the meshing stage rendered from the reconstructed mesh, RGB beside the
semantic layer. Reads the outputs of a run; renders nothing itself.

    python scripts/imported_scene_figure.py data/01_raw/scenes/autzen data/02_intermediate/meshes/autzen \\
        --out docs/img/real/autzen.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from earthcrafter.io.atomic import atomic_path  # noqa: E402
from earthcrafter.io.scene import read_scene  # noqa: E402
from earthcrafter.semantics import PALETTE  # noqa: E402

SKY = np.array([180, 200, 230], np.uint8)  # pixels with no surface


def pick_frames(frames, count: int) -> list:
    """``count`` frames spread over the camera plan, among those that see the most surface."""
    seen = [np.isfinite(f.depth).mean() if f.depth is not None else 1.0 for f in frames]
    best = sorted(range(len(frames)), key=lambda i: -seen[i])[: max(count, len(frames) // 2)]
    best.sort()
    return [frames[best[round(k * (len(best) - 1) / max(count - 1, 1))]] for k in range(count)]


def frame_panel(frame) -> np.ndarray:
    """RGB | semantic side by side, no-surface pixels in sky blue on the RGB side."""
    rgb = frame.rgb.copy()
    if frame.depth is not None:
        rgb[~np.isfinite(frame.depth)] = SKY
    sem = PALETTE[frame.semantic] if frame.semantic is not None else np.zeros_like(rgb)
    return np.concatenate([rgb, sem], axis=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("raw_scene", type=Path, help="the imported scene (data/01_raw/scenes/<id>)")
    ap.add_argument("meshed_scene", type=Path, help="the meshed scene (data/02_intermediate/meshes/<id>)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--frames", type=int, default=3)
    args = ap.parse_args()

    raw = read_scene(args.raw_scene, load_frames=False)
    meshed = read_scene(args.meshed_scene)
    if raw.points is None:
        raise SystemExit(f"{args.raw_scene}: no points (is it an imported point cloud?)")
    if not meshed.frames:
        raise SystemExit(f"{args.meshed_scene}: no frames (run the meshing stage)")
    pts = raw.points
    order = np.argsort(pts.xyz[:, 2])  # draw high points last, as seen from above
    xyz = pts.xyz[order]
    extent = pts.xyz.max(0) - pts.xyz.min(0)
    faces = len(meshed.mesh.faces) if meshed.mesh is not None else 0

    cols = max(3, args.frames)  # three point panels above, the frames below
    fig, axes = plt.subplots(2, cols, figsize=(5 * cols, 6.2))
    for ax in axes[0][3:]:
        ax.set_axis_off()
    fig.suptitle(f"{raw.scene_id} (imported): {len(xyz):,} points, {extent[0]:.0f} m x {extent[1]:.0f} m; "
                 f"mesh {faces:,} faces, {len(meshed.frames)} frames")  # fmt: skip
    top = [("points, their colour (metres)", pts.rgb[order] / 255.0 if pts.rgb is not None else None),
           (f"height, {xyz[:, 2].min():.0f}-{xyz[:, 2].max():.0f} m", None),
           ("classes (earthcrafter's palette; black: unlabeled)", PALETTE[pts.semantic[order]] / 255.0 if pts.semantic is not None else None)]  # fmt: skip
    for ax, (title, colors) in zip(axes[0], top):
        if colors is None and "height" not in title:
            ax.set_axis_off()
            ax.set_title(title + ": not in the scene")
            continue
        kw = {"c": xyz[:, 2], "cmap": "terrain"} if colors is None else {"c": colors}
        ax.scatter(xyz[:, 0], xyz[:, 1], s=0.3, linewidths=0, **kw)
        ax.set_aspect("equal")
        ax.set_title(title)
        ax.tick_params(labelsize=7)
    for ax in axes[1]:
        ax.set_axis_off()  # also those beyond the frames shown
    for k, (ax, frame) in enumerate(zip(axes[1], pick_frames(meshed.frames, args.frames))):
        ax.imshow(frame_panel(frame))
        ax.set_title(f"frame {frame.name}" + (": RGB | semantic" if k == 0 else ""), fontsize=9)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
