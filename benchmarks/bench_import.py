"""Importer throughput against plain baselines, run side by side on the same machine.

    python benchmarks/bench_import.py [--points 3000000] [--repeat 3]

1. LAS: ``import_las`` (streamed, units, classes, colour, local frame) vs ``laspy.read`` plus the
   bare minimum of numpy (scaled xyz, RGB, classes) on a synthetic file of ``--points`` points.
2. Orthophoto sampling: ``Orthophoto.sample`` (affine inverse, footprint test, bilinear) vs
   ``scipy.ndimage.map_coordinates(order=1)`` given pixel coordinates directly.
3. Texture sampling: ``import_mesh`` of a textured OBJ grid (subdivision + per-vertex sampling).
Prints a markdown table (median of ``--repeat`` runs).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import laspy
import numpy as np
import pyproj
from PIL import Image
from scipy.ndimage import map_coordinates

from earthcrafter.io.las import import_las
from earthcrafter.io.mesh_import import import_mesh
from earthcrafter.io.orthophoto import Orthophoto


def timed(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def synthetic_las(path: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    header = laspy.LasHeader(point_format=3, version="1.2")
    header.scales, header.offsets = np.full(3, 0.01), np.array([500_000.0, 4_000_000.0, 0.0])
    header.add_crs(pyproj.CRS("EPSG:32610"))
    las = laspy.LasData(header)
    las.x = 500_000 + rng.uniform(0, 1000, n)
    las.y = 4_000_000 + rng.uniform(0, 1000, n)
    las.z = rng.uniform(100, 150, n)
    las.classification = rng.choice(np.array([1, 2, 5, 6], np.uint8), n)
    las.red, las.green, las.blue = (rng.integers(0, 65536, n, dtype=np.uint16) for _ in range(3))
    las.write(str(path))


def las_baseline(path: Path) -> None:
    las = laspy.read(str(path))
    xyz = np.stack([np.asarray(las.x), np.asarray(las.y), np.asarray(las.z)], axis=1)
    rgb = (np.stack([las.red, las.green, las.blue], axis=1) >> 8).astype(np.uint8)
    cls = np.asarray(las.classification)
    return xyz - xyz.min(axis=0), rgb, cls


def textured_grid(folder: Path, cells: int) -> Path:
    tex = np.random.default_rng(0).integers(0, 256, (1024, 1024, 3), dtype=np.uint8)
    Image.fromarray(tex).save(folder / "tex.png")
    (folder / "g.mtl").write_text("newmtl m\nmap_Kd tex.png\n")
    lines = ["mtllib g.mtl"]
    g = np.linspace(0, 1, cells + 1)
    lines += [f"v {x:.6f} {y:.6f} 0" for y in g for x in g]
    lines += [f"vt {x:.6f} {y:.6f}" for y in g for x in g]
    lines.append("usemtl m")
    for r in range(cells):
        for c in range(cells):
            a = r * (cells + 1) + c + 1
            b, d, e = a + 1, a + cells + 1, a + cells + 2
            lines += [f"f {a}/{a} {b}/{b} {e}/{e}", f"f {a}/{a} {e}/{e} {d}/{d}"]
    (folder / "g.obj").write_text("\n".join(lines) + "\n")
    return folder / "g.obj"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=3_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        las_path = tmp / "bench.las"
        synthetic_las(las_path, args.points)
        base = timed(lambda: las_baseline(las_path), args.repeat)
        ours = timed(lambda: import_las(las_path), args.repeat)
        rows.append((f"LAS {args.points / 1e6:.1f} M points", "laspy.read + numpy", base, "import_las", ours))

        rng = np.random.default_rng(1)
        image = rng.integers(0, 256, (4000, 4000, 3), dtype=np.uint8)
        ortho = Orthophoto(image, np.array([[0.5, 0, 1000.0], [0, -0.5, 3000.0]]))
        colrow = np.stack([rng.uniform(0, 3999, 1_000_000), rng.uniform(0, 3999, 1_000_000)], axis=1)
        xy = ortho.pixel_to_xy(colrow)
        img_f = [image[..., c].astype(np.float32) for c in range(3)]  # scipy needs one channel at a time
        base = timed(lambda: [map_coordinates(ch, [colrow[:, 1], colrow[:, 0]], order=1) for ch in img_f], args.repeat)
        ours = timed(lambda: ortho.sample(xy), args.repeat)
        rows.append(("orthophoto 1 M samples", "scipy map_coordinates", base, "Orthophoto.sample", ours))

        obj = textured_grid(tmp, 64)
        ours = timed(lambda: import_mesh(obj, texels_per_edge=2.0), args.repeat)
        faces = len(import_mesh(obj, texels_per_edge=2.0).mesh.faces)
        rows.append((f"textured OBJ 8192 -> {faces} faces", "-", float("nan"), "import_mesh", ours))

    print("| case | baseline | baseline s | ours | ours s | ours / baseline |")
    print("|---|---|---|---|---|---|")
    for case, bname, b, oname, o in rows:
        ratio = "-" if np.isnan(b) else f"{o / b:.2f}"
        bs = "-" if np.isnan(b) else f"{b:.3f}"
        print(f"| {case} | {bname} | {bs} | {oname} | {o:.3f} | {ratio} |")


if __name__ == "__main__":
    main()
