"""Benchmark 2DGS rasterisation: forward and forward+backward, Gaussians/s and frames/s.

Scene: N surfels tiling a 100 m x 100 m rolling heightfield (tangent to it, SH degree 1),
seen by an aerial camera 90 m out and 60 m up looking at the centre (about half the frame
is ground). Each configuration is timed side by side with a baseline configuration:

* CPU: the torch backend with automatic tile size vs the same with fixed 16 px tiles.
* CUDA: gsplat vs the torch backend (when gsplat is installed).

Usage::

    python benchmarks/bench_render.py --device cpu            # full CPU table
    python benchmarks/bench_render.py --device cpu --quick    # a minute or so
    python benchmarks/bench_render.py --device cuda           # gsplat vs torch
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from dataclasses import dataclass

import numpy as np
import torch

from earthcrafter.geometry.cameras import intrinsics_from_fov, look_at
from earthcrafter.render import Gaussians2D, rasterize_2dgs
from earthcrafter.render.rasterize_gsplat import gsplat_available


def terrain_surfels(n: int, extent: float = 100.0, seed: int = 0) -> Gaussians2D:
    """``n`` surfels on the heightfield z = 5 sin(x/15) cos(y/11), each tangent to it."""
    g = torch.Generator().manual_seed(seed)
    xy = (torch.rand(n, 2, generator=g) - 0.5) * extent
    x, y = xy.unbind(-1)
    z = 5 * torch.sin(x / 15) * torch.cos(y / 11)
    dzdx = 5 / 15 * torch.cos(x / 15) * torch.cos(y / 11)
    dzdy = -5 / 11 * torch.sin(x / 15) * torch.sin(y / 11)
    normal = torch.nn.functional.normalize(torch.stack([-dzdx, -dzdy, torch.ones(n)], -1), dim=-1)
    # shortest-arc quaternion taking +z to the normal: (1 + n_z, z x n)
    quats = torch.stack([1 + normal[:, 2], -normal[:, 1], normal[:, 0], torch.zeros(n)], -1)
    quats = torch.nn.functional.normalize(quats, dim=-1)
    spacing = extent / math.sqrt(n)
    scales = spacing * (0.5 + 0.5 * torch.rand(n, 2, generator=g))
    opacities = 0.3 + 0.69 * torch.rand(n, generator=g)
    sh = 0.3 * torch.randn(n, 4, 3, generator=g)
    return Gaussians2D(torch.stack([x, y, z], -1), quats, scales, opacities, sh, sh_degree=1)


def aerial_cameras(n_views: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    angles = np.linspace(0, 2 * np.pi, n_views, endpoint=False)
    V = [look_at(np.array([90 * np.cos(a), 90 * np.sin(a), 60.0]), np.zeros(3)) for a in angles]
    K = [intrinsics_from_fov(size, size, 60.0)] * n_views
    return torch.tensor(np.stack(V), dtype=torch.float32), torch.tensor(np.stack(K), dtype=torch.float32)


@dataclass
class Timing:
    forward_s: float  # wall
    fwd_bwd_s: float  # wall
    fwd_bwd_cpu_s: float  # CPU time of this process (all its threads)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_render(g: Gaussians2D, V, K, size: int, device: str, repeats: int, **kw) -> Timing:
    """Best-of-``repeats`` times of a no-grad forward and of forward + backward.

    CPU time is reported next to wall time because on a shared machine wall time also
    measures the other processes; with one thread, CPU time is the idle-machine wall time.
    """
    best_f = best_fb = best_cpu = math.inf
    for _ in range(repeats + 1):  # the first round warms up (allocations, kernel compilation)
        _sync(device)
        t0 = time.perf_counter()
        with torch.no_grad():
            rasterize_2dgs(g, V, K, size, size, **kw)
        _sync(device)
        t1, c1 = time.perf_counter(), time.process_time()
        out = rasterize_2dgs(g, V, K, size, size, **kw)
        loss = out.rgb.square().sum() + out.depth.sum() + out.normals.sum()
        loss.backward()
        _sync(device)
        t2, c2 = time.perf_counter(), time.process_time()
        for t in g.tensors():
            t.grad = None
        best_f, best_fb, best_cpu = min(best_f, t1 - t0), min(best_fb, t2 - t1), min(best_cpu, c2 - c1)
    return Timing(best_f, best_fb, best_cpu)


def configurations(device: str, quick: bool) -> list[tuple[int, int]]:
    """(Gaussians, image size) pairs: the training sizes, then the headline 250k at 512^2."""
    if quick:
        return [(20_000, 64), (50_000, 128)]
    if device == "cuda":
        return [(50_000, 128), (250_000, 512), (1_000_000, 1024)]
    return [(20_000, 64), (100_000, 128), (50_000, 256), (250_000, 256), (250_000, 512)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--quick", action="store_true", help="small configurations only")
    ap.add_argument("--views", type=int, default=1, help="cameras per call")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    ap.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                    help="time behind frames/s and the ratios: wall, or process CPU time (use with --threads 1 "
                         "on a shared machine)")  # fmt: skip
    ap.add_argument("--no-baseline", action="store_true", help="time only the first variant")
    ap.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device")
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.device == "cuda":
        variants = {"torch": dict(backend="torch")}
        if gsplat_available():
            variants = {"gsplat": dict(backend="gsplat"), **variants}
        else:
            print("gsplat not installed: timing the torch backend on CUDA only")
    else:
        variants = {"torch auto tiles": dict(backend="torch"), "torch 16px tiles": dict(backend="torch", tile_size=16)}
    if args.no_baseline:
        variants = dict(list(variants.items())[:1])
    baseline = list(variants)[-1]

    print(f"# {platform.machine()} {platform.processor() or ''}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {args.device}, {args.views} view(s) per call, "
          f"rates from {args.clock} time")  # fmt: skip
    print("| Gaussians | image | variant | forward s | fwd+bwd s | fwd+bwd CPU s | frames/s (fwd+bwd) "
          "| Gaussians/s (fwd+bwd) | fwd+bwd vs baseline |")  # fmt: skip
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    rows = []
    for n, size in configurations(args.device, args.quick):
        g = terrain_surfels(n).to(args.device)
        for t in g.tensors():
            t.requires_grad_(True)
        V, K = aerial_cameras(args.views, size)
        V, K = V.to(args.device), K.to(args.device)
        times = {name: time_render(g, V, K, size, args.device, args.repeats, **kw) for name, kw in variants.items()}
        pick = (lambda t: t.fwd_bwd_cpu_s) if args.clock == "cpu" else (lambda t: t.fwd_bwd_s)  # noqa: E731
        for name, t in times.items():
            fps = args.views / pick(t)
            row = dict(
                gaussians=n, size=size, variant=name, forward_s=t.forward_s, fwd_bwd_s=t.fwd_bwd_s,
                fwd_bwd_cpu_s=t.fwd_bwd_cpu_s, frames_per_s=fps, gaussians_per_s=n * fps,
                speedup_vs_baseline=pick(times[baseline]) / pick(t),
            )  # fmt: skip
            rows.append(row)
            print(f"| {n:,} | {size}² | {name} | {t.forward_s:.3f} | {t.fwd_bwd_s:.3f} | {t.fwd_bwd_cpu_s:.3f} | "
                  f"{fps:.2f} | "
                  f"{n * fps:,.0f} | {row['speedup_vs_baseline']:.2f}× |", flush=True)  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
