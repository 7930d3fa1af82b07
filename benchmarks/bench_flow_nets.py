"""Benchmark the flow networks: one-resolution transformer against the paper's U-Net.

One training step (forward + backward of the flow loss) of TexFM's two networks on the same
voxel sets, side by side in one process, at several sizes: the base tiles' ~7k voxels up to
L = 128 tiles. Reported: ms per step (median of --repeats), voxels/s, parameters, and the ratio
against the transformer at the same size. On CUDA also the peak memory.

    python benchmarks/bench_flow_nets.py --quick
    python benchmarks/bench_flow_nets.py --device cuda --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from earthcrafter.models.tex_fm import TexFMConfig, build_texfm
from earthcrafter.semantics import NUM_CLASSES
from earthcrafter.sparse import SparseTensor
from earthcrafter.training.synthetic import scene_coords

# the base configuration's TexFM; the same transformer with as many blocks as the U-Nets (8); a U-Net
# of about the base step time; a wider one
NETS = {
    "transformer 64 x 2 (base)": dict(arch="transformer", width=64, depth=2),
    "transformer 64 x 8": dict(arch="transformer", width=64, depth=8),
    "unet 32-64-64-96, 1-1-1-2": dict(arch="unet", width=64, unet_widths=[32, 64, 64, 96], unet_depths=[1, 1, 1, 2]),
    "unet 64-64-96-96, 1-1-1-2": dict(arch="unet", width=64, unet_widths=[64, 64, 96, 96], unet_depths=[1, 1, 1, 2]),
}


def step_ms(net: torch.nn.Module, coords: torch.Tensor, grid: int, device: str, repeats: int) -> list[float]:
    layout = torch.rand(1, grid, grid, NUM_CLASSES, device=device)
    batched = torch.cat([torch.zeros(len(coords), 1, dtype=torch.int32), coords.int()], 1).to(device)
    times = []
    for i in range(repeats + 1):  # the first step builds caches: not timed
        x = SparseTensor(torch.randn(len(coords), 8, device=device), batched, 1)
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        net(x, torch.full((1,), 0.5, device=device), layout).feats.square().mean().backward()
        if device == "cuda":
            torch.cuda.synchronize()
        if i:
            times.append(1000 * (time.perf_counter() - t0))
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="the base size only, 3 repeats")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [64] if args.quick else [64, 96, 128]
    repeats = 3 if args.quick else args.repeats
    rows = []
    for L in sizes:
        coords = torch.from_numpy(scene_coords(L, 0))
        base_ms = None
        for name, kw in NETS.items():
            torch.manual_seed(0)
            net = build_texfm(TexFMConfig(num_heads=4, layout_grid=L // 8, layout_stride=8, **kw)).to(args.device)
            if args.device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            ms = statistics.median(step_ms(net, coords, L // 8, args.device, repeats))
            base_ms = base_ms or ms
            rows.append({"L": L, "voxels": len(coords), "net": name, "params_M": sum(p.numel() for p in net.parameters()) / 1e6,
                         "ms": ms, "voxels_per_s": len(coords) / ms * 1000, "vs_transformer": ms / base_ms,
                         "peak_GB": torch.cuda.max_memory_allocated() / 2**30 if args.device == "cuda" else None})  # fmt: skip
            r = rows[-1]
            print(f"L={L:4d} {r['voxels']:7d} voxels  {name:28s} {r['params_M']:6.2f} M  {ms:8.1f} ms  "
                  f"{r['voxels_per_s']:9.0f} vox/s  {r['vs_transformer']:.2f}x")  # fmt: skip
    machine = {"platform": platform.platform(), "processor": platform.processor(), "threads": args.threads,
               "device": args.device, "torch": torch.__version__}  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
