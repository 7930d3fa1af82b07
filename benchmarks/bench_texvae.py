"""Benchmark TexVAE training throughput: voxels/s and views/s of full training steps.

A step is what the trainer does per batch: encode, sample, decode the Gaussians, render each
sample's views, L1 + SSIM + KL loss, backward, AdamW update. Tiles are the toy test scene
(tests/features/ec_toy_scene.py) voxelized by ``earthcrafter.geometry.voxelize`` at ``--L``
(the base configuration's 64 by default), or any voxel manifest given with ``--manifest``.

Every configuration runs side by side with the baseline (the base configuration of
conf/base/parameters_train_texvae.yml: tube, width 64, 2 + 2 blocks, 2 views of 48 px,
batch 1) and is reported as a ratio to it. On a shared machine wall time also measures the
other processes, so process CPU time is reported beside it (with one thread it is what an
idle machine's wall time would be).

Usage::

    python benchmarks/bench_texvae.py                    # CPU table (a few minutes)
    python benchmarks/bench_texvae.py --quick            # fewer steps
    python benchmarks/bench_texvae.py --device cuda      # gsplat + bf16; adds the paper width
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from earthcrafter.models.tex_vae import TexVAEConfig
from earthcrafter.models.tex_vae_data import TexVAEDataConfig, TexVAEDataset
from earthcrafter.models.tex_vae_task import RenderConfig, TexVAELossConfig, TexVAETask
from earthcrafter.training.sampler import Draw

ROOT = Path(__file__).resolve().parents[1]

BASE_MODEL = dict(width=64, num_heads=4, window=8, enc_depth=2, dec_depth=2)
BASE_DATA = dict(view_width=48, views_per_sample=2, cache_tiles=True)


def toy_manifest(L: int, out: Path) -> pd.DataFrame:
    """Voxelize the toy scene (2 x 2 tiles of 60 m) at L; all tiles in the train split."""
    sys.path.insert(0, str(ROOT / "tests" / "features"))
    from ec_toy_scene import PoolExtractor, make_scene

    from earthcrafter.geometry.crops import CropConfig
    from earthcrafter.geometry.voxelize import VoxelizeConfig, voxelize_scene
    from earthcrafter.io.tiles import build_manifest, write_scene_tiles

    cfg = VoxelizeConfig(L=L, crop=CropConfig(central_size_m=100, tile_size_m=60, tile_stride_m=40),
                         views={"count": 8, "height": 96, "width": 96})  # fmt: skip
    cfg.aggregation.progress = False
    res = voxelize_scene(make_scene(size=128), PoolExtractor(), cfg)
    man = build_manifest(write_scene_tiles(out, res.tiles, res.views))
    man["split"] = "train"
    return man


@dataclass
class Result:
    name: str
    steps: int
    wall_s: float
    cpu_s: float
    voxels: int
    views: int

    def row(self, base: "Result") -> dict:
        return {
            "config": self.name,
            "s/step (wall)": self.wall_s / self.steps,
            "s/step (cpu)": self.cpu_s / self.steps,
            "voxels/s (wall)": self.voxels / self.wall_s,
            "views/s (wall)": self.views / self.wall_s,
            "voxels/s (cpu)": self.voxels / self.cpu_s,
            "views/s (cpu)": self.views / self.cpu_s,
            "throughput vs baseline (cpu)": (self.voxels / self.cpu_s) / (base.voxels / base.cpu_s),
            "throughput vs baseline (wall)": (self.voxels / self.wall_s) / (base.voxels / base.wall_s),
        }


def run(name: str, manifest: pd.DataFrame, device: str, steps: int, *, model: dict, data: dict,
        threads: int = 1, batch: int = 1, render_only_loss: bool = True, bf16: bool = False) -> Result:  # fmt: skip
    """Time ``steps`` training steps (after one warm-up step) of one configuration."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    ds = TexVAEDataset(manifest, split="train", features=model.get("features", "f_feat"),
                       config=TexVAEDataConfig(**data), augment=True)  # fmt: skip
    task = TexVAETask(TexVAEConfig(**model), ds.layout_channels(), TexVAELossConfig(lpips_vgg=0, lpips_alex=0),
                      RenderConfig(backend="auto"))  # fmt: skip
    net = task.build_model().to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    batches = [task.collate([ds[Draw((s * batch + i) % len(ds), (0, s * batch + i))] for i in range(batch)])
               for s in range(steps + 1)]  # fmt: skip
    wall = cpu = 0.0
    voxels = views = 0
    for s, b in enumerate(batches):
        b = b.to(device)
        if device == "cuda":
            torch.cuda.synchronize()
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            if render_only_loss:
                loss, _ = task.training_step(net, b)
            else:  # no rasterisation: a loss on the decoded surfel parameters (the network's share)
                gs, mean, logvar = net(b.voxels, b.voxel_size)
                loss = sum(g.means.sum() + g.sh.sum() + g.opacities.sum() + g.scales.sum() for g in gs) * 1e-6
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        if s == 0:
            continue  # warm-up
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
        voxels += len(b.voxels)
        views += sum(len(v) for v in b.views)
    return Result(name, steps, wall, cpu, voxels, views)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--manifest", help="voxel manifest parquet (default: voxelize the toy scene)")
    ap.add_argument("--L", type=int, default=64)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args()
    steps = 3 if args.quick else args.steps
    with tempfile.TemporaryDirectory() as tmp:
        man = pd.read_parquet(args.manifest) if args.manifest else toy_manifest(args.L, Path(tmp))
        man = man.assign(split="train") if args.manifest is None else man
        configs = [
            ("baseline: base config (tube, 2 views x 48 px, 1 thread)", {}, {}, {}),
            ("network only (no rasterisation)", {}, {}, {"render_only_loss": False}),
            ("4 views per sample", {}, {"views_per_sample": 4}, {}),
            ("views 96 px", {}, {"view_width": 96}, {}),
            ("unet2 (TexF)", {"arch": "unet2"}, {}, {}),
            ("2 Gaussians per voxel", {"gaussians_per_voxel": 2}, {}, {}),
            ("2 threads", {}, {}, {"threads": 2}),
        ]
        if args.device == "cuda":
            configs = [(n, m, d, o) for n, m, d, o in configs if "thread" not in n]
            configs += [("bf16 autocast", {}, {}, {"bf16": True}),
                        ("paper width 768 / 12 heads / 12 + 12 blocks, 512 px, bf16",
                         {"width": 768, "num_heads": 12, "enc_depth": 12, "dec_depth": 12},
                         {"view_width": 512}, {"bf16": True})]  # fmt: skip
        results = []
        for name, model, data, opts in configs:
            r = run(name, man, args.device, steps, model={**BASE_MODEL, **model}, data={**BASE_DATA, **data}, **opts)
            results.append(r)
            print(f"{name}: {r.wall_s / r.steps:.3f} s/step wall, {r.cpu_s / r.steps:.3f} s/step cpu", flush=True)
    rows = pd.DataFrame([r.row(results[0]) for r in results])
    machine = f"{os.cpu_count()}-core {platform.machine()} CPU, torch {torch.__version__}"
    if args.device == "cuda":
        machine += f", {torch.cuda.get_device_name(0)}"
    voxels_per_tile = int(man["num_voxels"].mean()) if "num_voxels" in man else -1
    print(f"\nTexVAE training throughput on {args.device} ({machine}); tiles of ~{voxels_per_tile} voxels, {steps} steps each\n")
    print(rows.to_markdown(index=False, floatfmt=".3g"))
    if args.json:
        Path(args.json).write_text(json.dumps({"device": args.device, "machine": machine, "rows": rows.to_dict("records")}, indent=2))


if __name__ == "__main__":
    main()
