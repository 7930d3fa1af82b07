"""Benchmark activation checkpointing: memory per voxel of the paper's networks, with and without.

One forward and backward of a network of the configuration (conf/<env>, default paper) on a synthetic
L-tile crop (earthcrafter.training.synthetic), in a fresh process per measurement, at two sample
sizes. Reported: the peak memory growth at each size and its slope between them (bytes per voxel:
the parameters and gradients cancel out), and the step time. CPU, fp32, resident memory; on GPUs,
``earthcrafter dry-run --checkpointing on|off`` measures the training step itself.

    python benchmarks/bench_checkpointing.py --nets structvae --sizes 20000 40000
    python benchmarks/bench_checkpointing.py --nets texvae texfm --sizes 4000 8000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NETS = ("structvae", "texvae", "structfm_fine", "texfm")


def _batch(net_name: str, params: dict, n: int):
    """(network, loss function) of ``net_name`` on a sample of about ``n`` voxels (cells)."""
    import numpy as np
    import torch

    from earthcrafter.models.flow_net import condition_channels
    from earthcrafter.sparse import SparseTensor
    from earthcrafter.training.synthetic import scene_coords
    from earthcrafter.training.voxel_data import crop_to_budget

    def surface(L: int, k: int) -> torch.Tensor:
        c = scene_coords(L, 0)
        return torch.from_numpy(c[crop_to_budget(c, k, np.random.default_rng(0))]).long()

    if net_name == "structvae":
        from earthcrafter.models.struct_vae import StructVAE, struct_vae_loss
        from earthcrafter.training.structvae import StructVAERunConfig

        cfg = StructVAERunConfig.model_validate(params["train_structvae"]).model
        net, c = StructVAE(cfg), surface(cfg.L, n)
        x = SparseTensor.from_list([torch.ones(len(c), 1)], [c])
        return net, len(c), lambda: struct_vae_loss(net(x, seeds=torch.tensor([0])), cfg)[0]
    if net_name == "texvae":
        from earthcrafter.models.tex_vae import TexVAE
        from earthcrafter.models.tex_vae_train import TexVAETrainConfig

        cfg = TexVAETrainConfig.model_validate(params["train_texvae"]).model
        net, c = TexVAE(cfg, 66), surface(params["train_structvae"]["model"]["L"], n)
        x = SparseTensor.from_list([torch.randn(len(c), 66)], [c])

        def loss():
            mean, logvar = net.encode_posterior(x)
            return net.decode_features(mean).feats.square().mean() + logvar.feats.square().mean()

        return net, len(c), loss
    if net_name == "structfm_fine":
        from earthcrafter.models.struct_fm import stage_net
        from earthcrafter.training.structfm import StructFMRunConfig

        cfg = StructFMRunConfig.model_validate(params["train_structfm"]).model
        net, cells = stage_net(cfg, "fine"), torch.unique(surface(8 * cfg.grid, 10**9) // 8, dim=0)[:n]
        x = SparseTensor.from_list([torch.randn(len(cells), cfg.latent_channels)], [cells])
        layout = torch.randn(1, cfg.grid, cfg.grid, condition_channels(cfg.condition))
        return net, len(cells), lambda: net(x, torch.tensor([0.5]), layout).feats.square().mean()
    if net_name == "texfm":
        from earthcrafter.models.tex_fm import build_texfm
        from earthcrafter.training.texfm import TexFMRunConfig

        cfg = TexFMRunConfig.model_validate(params["train_texfm"]).model
        net, c = build_texfm(cfg), surface(cfg.layout_grid * cfg.layout_stride, n)
        x = SparseTensor.from_list([torch.randn(len(c), cfg.latent_channels)], [c])
        layout = torch.randn(1, cfg.layout_grid, cfg.layout_grid, condition_channels(cfg.condition))
        return net, len(c), lambda: net(x, torch.tensor([0.5]), layout).feats.square().mean()
    raise ValueError(f"unknown network {net_name!r}; networks: {', '.join(NETS)}")


def measure(net_name: str, env: str, n: int, checkpointing: bool) -> dict:
    """One forward + backward in this process; peak memory growth over the built model."""
    import psutil
    import torch

    from earthcrafter.sparse import set_activation_checkpointing
    from earthcrafter.training.dry_run import load_parameters

    torch.manual_seed(0)
    net, size, loss_fn = _batch(net_name, load_parameters(ROOT / "conf", env), n)
    net.train()
    set_activation_checkpointing(net, checkpointing)
    before = psutil.Process().memory_info().rss
    t0 = time.perf_counter()
    loss_fn().backward()
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"net": net_name, "voxels": size, "checkpointing": checkpointing, "peak_growth_gb": (peak - before) / 2**30,
            "seconds": seconds}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env", default="paper")
    ap.add_argument("--nets", nargs="+", default=list(NETS), choices=NETS)
    ap.add_argument("--sizes", nargs=2, type=int, default=[4000, 8000], help="two sample sizes (voxels or cells)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--one", nargs=3, default=None, help=argparse.SUPPRESS)  # internal: net size on|off
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.one:
        net, size, on = args.one
        print(json.dumps(measure(net, args.env, int(size), on == "on")))
        return
    rows = []
    for net in args.nets:
        got = {}
        for on in ("off", "on"):
            for size in args.sizes:  # a fresh process each: the resident peak only grows
                out = subprocess.run([sys.executable, __file__, "--env", args.env, "--threads", str(args.threads),
                                      "--one", net, str(size), on], capture_output=True, text=True, check=True)  # fmt: skip
                got[on, size] = json.loads(out.stdout.strip().splitlines()[-1])
        a, b = args.sizes
        row = {"net": net}
        for on in ("off", "on"):
            lo, hi = got[on, a], got[on, b]
            row[f"kb_per_voxel_{on}"] = 2**20 * (hi["peak_growth_gb"] - lo["peak_growth_gb"]) / (hi["voxels"] - lo["voxels"])
            row[f"seconds_{on}"] = hi["seconds"]
        row["ratio"] = row["kb_per_voxel_off"] / row["kb_per_voxel_on"]
        rows.append(row)
        print(f"{net}: {row['kb_per_voxel_off']:.1f} KB -> {row['kb_per_voxel_on']:.1f} KB per voxel "
              f"({row['ratio']:.1f}x less); s/step {row['seconds_off']:.1f} -> {row['seconds_on']:.1f}", flush=True)  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
