"""StructVAE benchmarks: training throughput, peak memory, decoding memory at L=360.

    python benchmarks/bench_structvae.py cpu        # base config + Table 3 variants (+ paper widths), side by side
    python benchmarks/bench_structvae.py decode     # decode memory vs L on CPU, extrapolated to L=360
    python benchmarks/bench_structvae.py gpu        # paper config at L=256 / 360 (needs CUDA)

Scenes come from earthcrafter.training.synthetic (terrain + buildings, ~300k voxels at
L=360, close to the paper's 220k average). Every figure is printed as a JSON line; the
``--out`` file collects them. CPU peak memory is the resident-set growth during the measured
call, sampled every 2 ms in a background thread; CUDA peak memory is
``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch
import yaml

from earthcrafter.models.struct_vae import StructVAE, StructVAEConfig, struct_vae_loss
from earthcrafter.sparse import SparseTensor
from earthcrafter.training.structvae import StructVAERunConfig
from earthcrafter.training.synthetic import scene_coords
from earthcrafter.training.voxel_data import crop_to_budget

ROOT = Path(__file__).resolve().parent.parent


def load_config(env: str) -> StructVAERunConfig:
    raw = yaml.safe_load((ROOT / "conf" / env / "parameters_train_structvae.yml").read_text())["train_structvae"]
    return StructVAERunConfig.model_validate(raw)


class PeakRSS:
    """Peak resident-set growth (bytes) over a ``with`` block, sampled in a thread."""

    def __init__(self, interval: float = 0.002):
        self.proc, self.interval = psutil.Process(os.getpid()), interval

    def __enter__(self):
        self.start = self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)
        self.growth = self.peak - self.start


def batch_of(L: int, seeds: list[int], device: torch.device, crop: int | None = None, max_voxels: int | None = None) -> SparseTensor:
    coords = []
    for s in seeds:
        c = scene_coords(L, s)
        if crop:
            c = c[(c[:, 0] < crop) & (c[:, 1] < crop)]
        if max_voxels:
            c = c[crop_to_budget(c.astype(np.int64), max_voxels, np.random.default_rng(s))]
        coords.append(torch.from_numpy(c).to(device))
    return SparseTensor.from_list([torch.ones(len(c), 1, device=device) for c in coords], coords)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_throughput(cfg: StructVAEConfig, batches: list[SparseTensor], device: torch.device, steps: int, bf16: bool) -> dict:
    """voxels/s and samples/s of full training steps (forward, backward, AdamW)."""
    torch.manual_seed(0)
    model = StructVAE(cfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(x):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss, _ = struct_vae_loss(model(x, seeds=torch.arange(x.batch_size)), cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step(batches[0])  # warm-up: kernel maps, allocator, lazy imports
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with PeakRSS() as mem:
        t0 = time.perf_counter()
        for i in range(steps):
            step(batches[i % len(batches)])
        sync(device)
        dt = time.perf_counter() - t0
    voxels = sum(len(batches[i % len(batches)]) for i in range(steps))
    samples = sum(batches[i % len(batches)].batch_size for i in range(steps))
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else mem.growth
    return {"s_per_step": dt / steps, "voxels_per_s": voxels / dt, "samples_per_s": samples / dt,
            "peak_mem_gb": peak / 2**30, "params_M": sum(p.numel() for p in model.parameters()) / 1e6}


def decode_memory(cfg: StructVAEConfig, L: int, device: torch.device, bf16: bool) -> dict:
    """Peak memory and time of decoding one tile (batch 1) from its latents, free-running."""
    torch.manual_seed(0)
    model = StructVAE(cfg).to(device).eval()
    x = batch_of(L, [0], device)
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        z = model.encode(x)
        # Untrained weights keep ~half the children; teacher forcing decodes the ground-truth
        # voxel set, the size a trained decoder produces, through the same layers.
        sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        with PeakRSS() as mem:
            t0 = time.perf_counter()
            y = model.decode(z, gt=x.coords)
            sync(device)
            dt = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else mem.growth
    return {"L": L, "voxels": len(x), "latent_voxels": len(z), "decoded": len(y), "decode_s": dt, "peak_mem_gb": peak / 2**30}


def emit(record: dict, out: list) -> None:
    print(json.dumps(record), flush=True)
    out.append(record)


def _isolated(args, extra: list[str]) -> list[dict]:
    """Run one measurement in a fresh process, so its peak RSS is its own."""
    cmd = [sys.executable, __file__, *extra, "--steps", str(args.steps), "--threads", str(args.threads)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]


def run_cpu(args, out: list) -> None:
    base = load_config("base")
    if args.row is None:  # driver: one process per row
        # one row per model: the "_global" rows train the models of "cblock" / "fullattn" on more tiles
        models = [row for row in base.ablations if not row.endswith("_global")]
        for row in ["main", *models, "paper_widths:xcube", "paper_widths:fullattn"]:
            for rec in _isolated(args, ["cpu", "--row", row]):
                emit(rec, out)
        return
    widths, _, row = args.row.rpartition(":")
    cfg, data = base.model, base.data
    B, crop = base.trainer.batch_size, data.crop_size
    if widths == "paper_widths":  # paper widths/depths on whole L=64 tiles: where conv cost dominates
        cfg, B, crop = load_config("paper").model.model_copy(update={"L": cfg.L}), 1, None
    override = base.ablations.get(row, {}).get("model", {})
    m = StructVAEConfig.model_validate({**cfg.model_dump(), **override})
    device = torch.device("cpu")
    batches = [batch_of(m.L, list(range(i * B, (i + 1) * B)), device, crop=crop) for i in range(3)]
    r = train_throughput(m, batches, device, args.steps, bf16=False)
    emit({"bench": "train_cpu", "config": args.row, "L": m.L, "crop": crop, "batch": B,
          "threads": torch.get_num_threads(), **r}, out)


def run_decode(args, out: list) -> None:
    if args.row is None:
        for L in args.sizes:
            for rec in _isolated(args, ["decode", "--row", str(L)]):
                emit(rec, out)
        return
    paper = load_config("paper").model
    emit({"bench": "decode_cpu", "config": "paper", "threads": torch.get_num_threads(),
          **decode_memory(paper, int(args.row), torch.device("cpu"), bf16=False)}, out)


def run_gpu(args, out: list) -> None:
    if not torch.cuda.is_available():
        print("no CUDA device: skipping the GPU benchmark", file=sys.stderr)
        return
    device = torch.device("cuda")
    paper = load_config("paper")
    cfg, cap = paper.model, paper.data.max_voxels
    for L in (256, 360):
        batches = [batch_of(L, [2 * i, 2 * i + 1], device, max_voxels=cap) for i in range(2)]
        emit({"bench": "train_gpu", "config": "paper", "L": L, "batch": 2, "bf16": True,
              "device": torch.cuda.get_device_name(device), **train_throughput(cfg, batches, device, args.steps, bf16=True)}, out)
    emit({"bench": "decode_gpu", "config": "paper", "bf16": True, **decode_memory(cfg, 360, device, bf16=True)}, out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["cpu", "decode", "gpu"])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 128, 160])
    ap.add_argument("--row", default=None, help=argparse.SUPPRESS)  # internal: one measurement per process
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--out", type=Path, default=None, help="append the JSON records to this file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    out: list = []
    {"cpu": run_cpu, "decode": run_decode, "gpu": run_gpu}[args.what](args, out)
    if args.out:
        with args.out.open("a") as f:
            f.writelines(json.dumps(r) + "\n" for r in out)


if __name__ == "__main__":
    main()
