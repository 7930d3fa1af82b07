"""Benchmark: score aggregation + voxelization per tile, against open3d's geometry-only voxel grid.

A synthetic 600 m scene (rolling terrain with fields and a road grid, box buildings, pyramid
trees) is rendered from 1 nadir + 16 oblique cameras; feature maps (66 channels, float16) are
computed once up front. Each configuration then runs ``voxelize_scene`` (3 x 3 tiles of 200 m
over the central 500 m) in a fresh subprocess, so its peak RSS is its own. The baseline is
``open3d.geometry.VoxelGrid.create_from_triangle_mesh`` on each tile's mesh crop at the same voxel
size: occupancy only, no features, no views.

    python benchmarks/bench_voxelize.py                    # L = 64 and L = 360
    python benchmarks/bench_voxelize.py --L 64 --figures docs/img/tiles
    python benchmarks/bench_voxelize.py --tiny-ae          # also time tiny_ae training
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import time
import tracemalloc

import numpy as np

SCENE = 600.0


def build_scene(frame_size: int, seed: int = 0):
    from earthcrafter.geometry.cameras import Camera, intrinsics_from_fov, look_at
    from earthcrafter.geometry.raycast import Shading, render_frames
    from earthcrafter.io.scene import Mesh, Scene
    from earthcrafter.semantics import CLASS_ID, PALETTE

    rng = np.random.default_rng(seed)
    verts, faces, cols, sems = [], [], [], []

    def add(v, f, col, sem):
        faces.append(f + sum(len(x) for x in verts))
        verts.append(v)
        cols.append(np.clip(col, 0, 255).astype(np.uint8))
        sems.append(sem)

    def height(x, y):
        return 6 * np.sin(x / 70) * np.cos(y / 90) + 2 * np.sin((x + y) / 23)

    n = 200  # 3 m terrain grid
    g = np.linspace(0, SCENE, n + 1)
    X, Y = np.meshgrid(g, g, indexing="ij")
    v = np.stack([X.ravel(), Y.ravel(), height(X, Y).ravel()], 1)
    idx = np.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel()
    f = np.concatenate([np.stack([a, b, d], 1), np.stack([a, d, c], 1)])
    cx, cy = v[f].mean(1)[:, 0], v[f].mean(1)[:, 1]
    road = (np.abs((cx % 150) - 75) < 5) | (np.abs((cy % 150) - 75) < 5)
    field = ((cx // 75 + cy // 75) % 3 == 0) & ~road
    sem = np.where(road, CLASS_ID["road"], np.where(field, CLASS_ID["cropland"], CLASS_ID["grass_lawn"]))
    vcol = PALETTE[sem].astype(float)
    vc = np.zeros((len(v), 3))
    np.add.at(vc, f.ravel(), np.repeat(vcol, 3, 0))
    vc /= np.bincount(f.ravel(), minlength=len(v))[:, None]
    vc *= 0.8 + 0.2 * rng.random((len(v), 1))
    add(v, f, vc, sem)

    box_faces = np.array([[0, 1, 2], [0, 2, 3], [4, 6, 5], [4, 7, 6], [0, 4, 5], [0, 5, 1], [1, 5, 6], [1, 6, 2], [2, 6, 7], [2, 7, 3], [3, 7, 4], [3, 4, 0]])
    for _ in range(90):
        x0, y0 = rng.uniform(20, SCENE - 60, 2)
        if min(abs((x0 % 150) - 75), abs((y0 % 150) - 75)) < 45:
            continue
        w, l, h = rng.uniform(10, 40), rng.uniform(10, 40), rng.uniform(6, 45)
        zb = height(np.array([x0, x0 + w]), np.array([y0, y0 + l])).min() - 1
        corners = np.array([[x0, y0], [x0 + w, y0], [x0 + w, y0 + l], [x0, y0 + l]])
        bv = np.concatenate([np.c_[corners, np.full(4, zb)], np.c_[corners, np.full(4, zb + 1 + h)]])
        fs = box_faces[2:]  # no floor
        roof = np.zeros(10, bool)
        roof[:2] = True
        base = rng.uniform(120, 230, 3)
        add(bv, fs, np.tile(base, (8, 1)), np.where(roof, CLASS_ID["building_roof"], CLASS_ID["building_facade"]).astype(np.uint8))
    for _ in range(400):
        x, y = rng.uniform(0, SCENE, 2)
        r, h = rng.uniform(2, 5), rng.uniform(6, 15)
        z = float(height(np.array([x]), np.array([y]))[0])
        tv = np.array([[x - r, y - r, z], [x + r, y - r, z], [x + r, y + r, z], [x - r, y + r, z], [x, y, z + h]])
        add(tv, np.array([[0, 1, 4], [1, 2, 4], [2, 3, 4], [3, 0, 4]]), np.tile([40, 110, 40], (5, 1)), np.full(4, CLASS_ID["tree"], np.uint8))
    mesh = Mesh(np.concatenate(verts), np.concatenate(faces), np.concatenate(cols), np.concatenate(sems).astype(np.uint8))

    K = intrinsics_from_fov(frame_size, frame_size, 60)
    target = np.array([SCENE / 2, SCENE / 2, 0.0])
    cams = [Camera(K, look_at(target + [0, -1, 520], target, (0, 1, 0)), frame_size, frame_size)]
    for k in range(16):
        az, el = 2 * np.pi * k / 16, np.deg2rad(45 if k % 2 else 60)
        focus = target + 140 * np.array([np.cos(az + 1), np.sin(az + 1), 0])
        eye = focus + 380 * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        cams.append(Camera(K, look_at(eye, focus), frame_size, frame_size))
    frames = render_frames(mesh, cams, Shading())
    return Scene("bench", {"biome": "temperate"}, mesh, None, frames)


def frame_feature_maps(scene):
    import torch

    from earthcrafter.features.base import frame_features
    from earthcrafter.features.extractors import TinyAEExtractor
    from earthcrafter.features.tiny_ae import TinyAE

    torch.manual_seed(0)
    ex = TinyAEExtractor(TinyAE())
    t = time.perf_counter()
    maps = [frame_features(fr, ex) for fr in scene.frames]
    return maps, (time.perf_counter() - t) / len(maps)


def _run_config(L: int, frame_size: int, tiles_per_pass: int | None, queue) -> None:
    import open3d as o3d

    from earthcrafter.geometry.crops import CropConfig, crop_mesh
    from earthcrafter.geometry.voxelize import VoxelizeConfig, voxelize_scene

    scene = build_scene(frame_size)
    maps, extract_s = frame_feature_maps(scene)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cfg = VoxelizeConfig(L=L, crop=CropConfig(), tiles_per_pass=tiles_per_pass)
    cfg.aggregation.progress = False
    tracemalloc.start()
    t, c = time.perf_counter(), time.process_time()
    res = voxelize_scene(scene, maps, cfg)
    total, total_cpu = time.perf_counter() - t, time.process_time() - c
    traced_peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    base = []
    for tile in res.tiles:
        lo = tile.origin[:2]
        sub = crop_mesh(scene.mesh, lo, lo + 200.0)
        om = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(sub.vertices), o3d.utility.Vector3iVector(sub.faces))
        t, c = time.perf_counter(), time.process_time()
        grid = o3d.geometry.VoxelGrid.create_from_triangle_mesh(om, tile.voxel_size)
        base.append((time.perf_counter() - t, len(grid.get_voxels()), time.process_time() - c))
    n = len(res.tiles)
    queue.put(
        {
            "L": L,
            "tiles": n,
            "frames": len(scene.frames),
            "frame_size": frame_size,
            "faces": len(scene.mesh.faces),
            "voxels_per_tile": float(np.mean([len(t) for t in res.tiles])),
            "samples_per_tile": res.report["num_surface_samples"] / n,
            "unseen_fraction": float(np.mean([t.meta["counts"]["unseen_fraction"] for t in res.tiles])),
            "per_tile_s": total / n,
            "per_tile_cpu_s": total_cpu / n,
            "timings_per_tile_s": {k: v / n for k, v in res.report["timings"].items()},
            "feature_extraction_per_frame_s": extract_s,
            "o3d_per_tile_s": float(np.mean([b[0] for b in base])),
            "o3d_per_tile_cpu_s": float(np.mean([b[2] for b in base])),
            "o3d_voxels_per_tile": float(np.mean([b[1] for b in base])),
            "rss_before_mb": rss_before,
            "rss_peak_mb": rss_peak,
            "tracemalloc_peak_mb": traced_peak,
            "tiles_per_pass": tiles_per_pass,
        }
    )


def run_config(L: int, frame_size: int, tiles_per_pass: int | None) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_run_config, args=(L, frame_size, tiles_per_pass, q))
    p.start()
    out = q.get()
    p.join()
    return out


def bench_tiny_ae() -> dict:
    from earthcrafter.features.tiny_ae import TinyAETrainConfig, train_tiny_ae

    scene = build_scene(256)
    out = {}
    for threads in (1, 2):
        _, m = train_tiny_ae(scene.frames, TinyAETrainConfig(num_threads=threads))
        out[threads] = {k: round(v, 2) for k, v in m.items()}
    return out


def render_figures(out_dir: str, L: int = 64) -> None:
    """Frame | tile voxels coloured by class | by f_rgb, seen through the same tile-local camera."""
    from pathlib import Path

    from PIL import Image

    from earthcrafter.features.preview import splat_voxels, tile_colors
    from earthcrafter.geometry.crops import CropConfig
    from earthcrafter.geometry.voxelize import ViewsConfig, VoxelizeConfig, voxelize_scene

    scene = build_scene(512)
    maps, _ = frame_feature_maps(scene)
    size = 512
    cfg = VoxelizeConfig(L=L, crop=CropConfig(), views=ViewsConfig(count=6, height=size, width=size))
    cfg.aggregation.progress = False
    res = voxelize_scene(scene, maps, cfg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for ti in (4, 0):
        tile, views = res.tiles[ti], res.views[ti]
        oblique = [v for v in range(len(views)) if views.names[v] != "000"][:2]
        for v in oblique:
            K, E = views.K[v], views.world_to_camera[v]
            panels = [views.rgb[v]]
            for mode in ("class", "rgb"):
                panels.append(splat_voxels(tile.coords, tile_colors(tile, mode), K, E, tile.voxel_size, size, size))
            rows, cols = np.nonzero(views.mask[v])
            r0, r1 = max(rows.min() - 8, 0), min(rows.max() + 8, size)
            c0, c1 = max(cols.min() - 8, 0), min(cols.max() + 8, size)
            crops = [Image.fromarray(p[r0:r1, c0:c1]).resize((256, round(256 * (r1 - r0) / (c1 - c0))), Image.Resampling.LANCZOS) for p in panels]
            sep = np.full((crops[0].height, 4, 3), 255, np.uint8)
            img = np.concatenate([np.asarray(crops[0]), sep, np.asarray(crops[1]), sep, np.asarray(crops[2])], axis=1)
            small = Image.fromarray(img).quantize(colors=128, method=Image.Quantize.MEDIANCUT)  # keeps the PNG small
            small.save(out / f"{tile.tile_id}_{views.names[v]}.png", optimize=True)
    print(f"figures written to {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--L", type=int, nargs="*", default=[64, 360])
    ap.add_argument("--frame-size", type=int, default=512)
    ap.add_argument("--tiles-per-pass", type=int, default=None)
    ap.add_argument("--figures", default=None, help="render the documentation figures into this folder")
    ap.add_argument("--tiny-ae", action="store_true")
    args = ap.parse_args()
    print(f"machine: {platform.machine()} {mp.cpu_count()} CPUs, {platform.python_version()}")
    if args.figures:
        render_figures(args.figures)
    for L in args.L:
        r = run_config(L, args.frame_size, args.tiles_per_pass)
        r["ratio_to_o3d_wall"] = r["per_tile_s"] / r["o3d_per_tile_s"]
        r["ratio_to_o3d_cpu"] = r["per_tile_cpu_s"] / r["o3d_per_tile_cpu_s"]
        print(json.dumps(r, indent=1))
    if args.tiny_ae:
        print(json.dumps(bench_tiny_ae(), indent=1))


if __name__ == "__main__":
    main()
