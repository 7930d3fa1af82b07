"""Benchmark unconditional sampling: one network call per Euler step against guiding the dropped condition.

Unconditional generation samples the flows with the all-zero condition, which is also classifier-free
guidance's unconditional input, so guiding it evaluates each network twice per step on one input
((1 + w) v - w v = v). ``earthcrafter.flow.guidance`` skips that second call. This runs the flows of one
unconditional scene (the trained base models under ``--root``; StructFM, the StructVAE decode between,
TexFM; 25 steps, CFG 3, seed 0) both ways, interleaved in one process, and reports median wall and CPU
seconds, network calls, and how far the two samples differ.

    python benchmarks/bench_uncond_guidance.py --root . --repeats 3
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from earthcrafter.flow import guidance
from earthcrafter.flow.latent_stats import denormalize
from earthcrafter.latents import generate as gen
from earthcrafter.models import struct_fm, tex_fm


def guided_twice(cond, strength):
    """The rule before: any condition given is guided, the all-zero one too."""
    return (None, 0.0) if cond is None else (torch.zeros_like(cond), strength)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=".", help="project root with trained base models and the latent cache")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=25)
    args = ap.parse_args()
    root = Path(args.root)
    stats = json.loads((root / "data/05_model_input/latents_stats.json").read_text())
    cfg = gen.GenerationConfig(structfm_dir=str(root / "data/06_models/struct_fm"),
                               texfm_dir=str(root / "data/06_models/tex_fm"),
                               structvae_path=str(root / "data/06_models/structvae/model.pt"),
                               texvae_path=str(root / "data/06_models/tex_vae/model.pt"),
                               condition="none", mlflow=False, device="cpu")  # fmt: skip
    models = gen.load_generators(cfg, stats)
    calls = [0]
    for net in (models.structfm.coarse, models.structfm.fine, models.texfm):
        net.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    cond = gen.tile_condition(models.structfm.config.condition, "none", None, None, models.structfm.config.grid)

    @torch.no_grad()
    def flows(rule) -> dict:
        struct_fm.guidance = tex_fm.guidance = rule  # the name both models call
        calls[0] = 0
        g = torch.Generator().manual_seed(0)
        wall, cpu = time.perf_counter(), time.process_time()
        _, z_s = models.structfm.generate(cond, 1, args.steps, 3.0, generator=g)
        voxels = models.structvae.decode(z_s.replace(denormalize(z_s.feats, stats["struct"])), threshold=0.0)
        z_t = tex_fm.generate_texture(models.texfm, voxels.replace(torch.zeros(len(voxels), 1)), cond, args.steps,
                                      3.0, generator=g)  # fmt: skip
        return {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu, "calls": calls[0],
                "z_s": z_s, "z_t": z_t}  # fmt: skip

    runs = {"guided twice": [], "one call": []}
    for r in range(args.repeats):  # interleaved, the order alternating: drift in the machine's load hits both
        for name in (("guided twice", "one call") if r % 2 == 0 else ("one call", "guided twice")):
            runs[name].append(flows(guided_twice if name == "guided twice" else guidance))
    struct_fm.guidance = tex_fm.guidance = guidance
    print(f"machine: {platform.machine()} {platform.processor() or ''}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print("| rule | wall (median s) | CPU (median s) | network calls |\n|---|--:|--:|--:|")
    for name, rs in runs.items():
        print(f"| {name} | {statistics.median(x['wall'] for x in rs):.1f} | "
              f"{statistics.median(x['cpu'] for x in rs):.1f} | {rs[0]['calls']} |")
    before, after = runs["guided twice"][0], runs["one call"][0]
    ratio = statistics.median(x["cpu"] for x in runs["guided twice"]) / statistics.median(
        x["cpu"] for x in runs["one call"])
    print(f"CPU time ratio {ratio:.2f}x")
    for key in ("z_s", "z_t"):
        same = torch.equal(before[key].coords, after[key].coords)
        diff = (before[key].feats - after[key].feats).abs().max().item() if same else float("nan")
        print(f"{key}: same coordinates {same}, max |difference| {diff:.2e}")


if __name__ == "__main__":
    main()
