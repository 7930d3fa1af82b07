"""Meshing speed and quality against plain baselines, run side by side on the same machine.

    python benchmarks/bench_meshing.py [--size 120] [--buildings 10] [--voxel 0.5]

On a synthetic town of ``--size`` metres (rolling terrain, box buildings; known mesh):

1. TSDF fusion of ray-cast RGB-D frames: ``reconstruct_from_frames`` (sparse open3d
   VoxelBlockGrid, semantics voted per face by pixel rays or by face centroids) vs open3d's
   dense legacy ``UniformTSDFVolume`` over the scene's bounding cube (no semantics), same
   voxel size and truncation.
2. LiDAR-like points: DSM triangulation (three jump modes) vs screened Poisson.
3. ``clean_mesh`` on the fused mesh, and decimation to a quarter of its faces.

Quality is ``mesh_quality`` against the known mesh (Chamfer-L1 in metres, F-score at 0.5 m).
Prints markdown tables.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import open3d as o3d

from earthcrafter.evaluation.mesh_metrics import mesh_quality
from earthcrafter.geometry.cameras import Camera, intrinsics_from_fov, look_at
from earthcrafter.geometry.mesh_clean import CleanConfig, clean_mesh, nearest_faces
from earthcrafter.geometry.raycast import render_frames
from earthcrafter.geometry.surface import DSMConfig, PoissonConfig, reconstruct_from_points
from earthcrafter.geometry.tsdf import TSDFConfig, auto_voxel_size, reconstruct_from_frames
from earthcrafter.io.scene import Mesh, Points
from earthcrafter.semantics import CLASS_ID, PALETTE

GRASS, ROOF, FACADE = CLASS_ID["grass_lawn"], CLASS_ID["building_roof"], CLASS_ID["building_facade"]


# --------------------------------------------------------------------------- synthetic town

def town(size: float, n_buildings: int, seed: int = 0) -> Mesh:
    """Terrain on a 1 m grid (cut out under footprints) plus closed-top boxes."""
    rng = np.random.default_rng(seed)
    h = size / 2
    n = int(size) + 1
    g = np.linspace(-h, h, n)
    X, Y = np.meshgrid(g, g)
    height = lambda x, y: 2.0 * np.sin(x / 40) * np.cos(y / 50)
    verts = [np.stack([X.ravel(), Y.ravel(), height(X, Y).ravel()], 1)]
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel(), idx[1:, :-1].ravel()
    faces = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    boxes, taken = [], np.zeros((n, n), bool)
    while len(boxes) < n_buildings:
        w, l = rng.integers(6, 20, 2)
        x0, y0 = rng.integers(2, n - 22, 2)
        if taken[y0 - 2 : y0 + l + 2, x0 - 2 : x0 + w + 2].any():
            continue
        taken[y0 : y0 + l, x0 : x0 + w] = True
        boxes.append((g[x0], g[y0], g[x0 + w], g[y0 + l], float(rng.uniform(4, 25))))
    cen = verts[0][faces].mean(1)
    ix, iy = np.floor(cen[:, 0] + h).astype(int), np.floor(cen[:, 1] + h).astype(int)
    faces = faces[~taken[iy, ix]]
    sem = [np.full(len(faces), GRASS)]
    out_f, colors, nv = [faces], [np.tile(PALETTE[GRASS], (n * n, 1))], n * n
    for x0, y0, x1, y1, hgt in boxes:
        z0 = height(np.array([x0, x1, x1, x0]), np.array([y0, y0, y1, y1])).min()
        z1 = height((x0 + x1) / 2, (y0 + y1) / 2) + hgt
        v = np.array([[x0, y0, z0], [x1, y0, z0], [x1, y1, z0], [x0, y1, z0],
                      [x0, y0, z1], [x1, y0, z1], [x1, y1, z1], [x0, y1, z1]])
        f = np.array([[4, 5, 6], [4, 6, 7], [0, 1, 5], [0, 5, 4], [1, 2, 6], [1, 6, 5],
                      [2, 3, 7], [2, 7, 6], [3, 0, 4], [3, 4, 7]]) + nv
        verts.append(v), out_f.append(f), colors.append(np.tile(PALETTE[ROOF], (8, 1)))
        sem.append(np.array([ROOF] * 2 + [FACADE] * 8))
        nv += 8
    return Mesh(np.concatenate(verts), np.concatenate(out_f), np.concatenate(colors), np.concatenate(sem))


def cameras(size: float, wh=(320, 240)) -> list[Camera]:
    K = intrinsics_from_fov(*wh, 60.0)
    cams = []
    for x in (-size / 3, 0, size / 3):
        for y in (-size / 3, 0, size / 3):
            cams.append(Camera(K, look_at((x, y + 0.1, 0.8 * size), (x, y, 0)), *wh))
    for i in range(8):
        a = 2 * np.pi * i / 8
        cams.append(Camera(K, look_at((0.6 * size * np.cos(a), 0.6 * size * np.sin(a), 0.6 * size), (0, 0, 0)), *wh))
    return cams


def lidar(mesh: Mesh, density: float, seed: int = 0) -> Points:
    """Points uniform over the xy footprint: first returns of vertical rays."""
    from earthcrafter.geometry.raycast import MeshRaycaster

    rng = np.random.default_rng(seed)
    lo, hi = mesh.vertices[:, :2].min(0), mesh.vertices[:, :2].max(0)
    n = int(density * np.prod(hi - lo))
    xy = rng.uniform(lo, hi, (n, 2))
    caster = MeshRaycaster(mesh)
    hit = caster.cast(np.c_[xy, np.full(n, 1e3)], np.tile([0.0, 0.0, -1.0], (n, 1)))
    ok = hit["prim"] >= 0
    xyz = np.c_[xy[ok], 1e3 - hit["t"][ok]]
    fid = hit["prim"][ok]
    return Points(xyz, mesh.vertex_colors[mesh.faces[fid, 0]], mesh.face_semantic[fid])


# --------------------------------------------------------------------------- baselines

def uniform_tsdf(frames, voxel: float, trunc: float, lo: np.ndarray, length: float) -> Mesh:
    """open3d's dense legacy TSDF over one cube: the textbook baseline."""
    res = int(np.ceil(length / voxel))
    vol = o3d.pipelines.integration.UniformTSDFVolume(
        length=res * voxel, resolution=res, sdf_trunc=trunc,
        color_type=o3d.pipelines.integration.TSDFVolumeColorType.RGB8, origin=lo.reshape(3, 1),
    )
    for fr in frames:
        d = np.where(np.isfinite(fr.depth), fr.depth, 0).astype(np.float32)
        rgbd = o3d.geometry.RGBDImage.create_from_color_and_depth(
            o3d.geometry.Image(np.ascontiguousarray(fr.rgb)), o3d.geometry.Image(d),
            depth_scale=1.0, depth_trunc=1e4, convert_rgb_to_intensity=False,
        )
        K = fr.camera.K
        intr = o3d.camera.PinholeCameraIntrinsic(fr.camera.width, fr.camera.height, K[0, 0], K[1, 1], K[0, 2], K[1, 2])
        vol.integrate(rgbd, intr, fr.camera.world_to_camera)
    lm = vol.extract_triangle_mesh()
    return Mesh(np.asarray(lm.vertices), np.asarray(lm.triangles))


# --------------------------------------------------------------------------- main

def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def quality(mesh: Mesh, gt: Mesh) -> str:
    q = mesh_quality(mesh, gt, n_samples=200_000, threshold=0.5)
    return f"{q['chamfer_l1']:.3f} | {q['fscore']:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=float, default=120.0)
    ap.add_argument("--buildings", type=int, default=10)
    ap.add_argument("--voxel", type=float, default=0.5)
    ap.add_argument("--density", type=float, default=8.0, help="LiDAR points per m^2")
    args = ap.parse_args()

    gt = town(args.size, args.buildings)
    frames, t_render = timed(lambda: render_frames(gt, cameras(args.size)))
    floor = mesh_quality(gt, gt, n_samples=200_000)
    print(f"town {args.size:.0f} m, {len(gt.faces)} faces; {len(frames)} frames rendered in {t_render:.1f} s; "
          f"sampling floor Chamfer {floor['chamfer_l1']:.3f} m\n")

    cfg = TSDFConfig(voxel_size=args.voxel)
    trunc = cfg.trunc_voxels * args.voxel
    (ours, rep), t_ours = timed(lambda: reconstruct_from_frames(frames, cfg, return_report=True))
    lo = np.r_[-args.size / 2 - 2, -args.size / 2 - 2, gt.vertices[:, 2].min() - 2]
    base, t_base = timed(lambda: uniform_tsdf(frames, args.voxel, trunc, lo, args.size + 4))
    dense_mb = (np.ceil((args.size + 4) / args.voxel) ** 3) * 20 / 2**20
    print("| TSDF fusion (voxel %.2f m) | time s | ratio | faces | Chamfer-L1 m | F@0.5 m |" % args.voxel)
    print("|---|---|---|---|---|---|")
    print(f"| dense UniformTSDFVolume (baseline, ~{dense_mb:.0f} MiB grid) | {t_base:.2f} | 1.00 | {len(base.faces)} | {quality(base, gt)} |")
    print(f"| reconstruct_from_frames (sparse, + ray semantic votes) | {t_ours:.2f} | {t_ours / t_base:.2f} | {len(ours.faces)} | {quality(ours, gt)} |")
    cfg_c = TSDFConfig(voxel_size=args.voxel, semantic_vote="centroids")
    (cen, rep_c), t_cen = timed(lambda: reconstruct_from_frames(frames, cfg_c, return_report=True))
    print(f"| reconstruct_from_frames (sparse, + centroid semantic votes) | {t_cen:.2f} | {t_cen / t_base:.2f} | {len(cen.faces)} | {quality(cen, gt)} |")
    print(f"\nseconds (fusion, semantic vote): rays {rep['seconds']}, centroids {rep_c['seconds']}")
    for name, m in (("rays", ours), ("centroids", cen)):
        truth = gt.face_semantic[nearest_faces(gt, m.vertices[m.faces].mean(1))]
        print(f"semantic accuracy vs nearest true face ({name}): {(m.face_semantic == truth).mean():.3f}")

    pts = lidar(gt, args.density)
    print(f"\n{len(pts.xyz)} LiDAR points ({args.density:g} / m^2)\n")
    print("| points -> mesh | time s | ratio | faces | Chamfer-L1 m | F@0.5 m |")
    print("|---|---|---|---|---|---|")
    (poisson, _), t_p = timed(lambda: reconstruct_from_points(pts, PoissonConfig(depth=8), return_report=True))
    print(f"| screened Poisson depth 8 (baseline) | {t_p:.2f} | 1.00 | {len(poisson.faces)} | {quality(poisson, gt)} |")
    for mode in ("facade", "drop", "slope"):
        (m, _), t = timed(lambda: reconstruct_from_points(pts, DSMConfig(cell_size=0.5, jump_mode=mode), return_report=True))
        print(f"| DSM 0.5 m, jump_mode={mode} | {t:.2f} | {t / t_p:.3f} | {len(m.faces)} | {quality(m, gt)} |")

    print("\n| clean_mesh on the fused mesh | time s | faces out | Chamfer-L1 m | F@0.5 m |")
    print("|---|---|---|---|---|")
    (c, _), t_c = timed(lambda: clean_mesh(ours, CleanConfig()))
    print(f"| repair only | {t_c:.2f} | {len(c.faces)} | {quality(c, gt)} |")
    target = len(ours.faces) // 4
    (d, _), t_d = timed(lambda: clean_mesh(ours, CleanConfig(target_faces=target)))
    print(f"| repair + decimate to {target} | {t_d:.2f} | {len(d.faces)} | {quality(d, gt)} |")

    print("\n| scene extent m | auto voxel m | est. TSDF memory MiB |")
    print("|---|---|---|")
    auto = TSDFConfig()
    for e in (200, 600, 1000, 2000):
        v = auto_voxel_size((e, e), auto)
        mem = 1.5 * e * e * (2 * auto.trunc_voxels + auto.block_resolution) / v**2 * 20 / 2**20
        print(f"| {e} | {v:.3f} | {mem:.0f} |")


if __name__ == "__main__":
    main()
