"""How visible the windows' seams of large scenes are, with and without outpainting.

For each scene's map (all its tiles) and each mode, generates the large scene with the project's
trained models and prints one Markdown row of :func:`earthcrafter.latents.large_scene.seam_scores`
(steps across cell boundaries between columns decided by different windows, against those inside
one window) and the time per window. Modes:

- ``independent``: every window sampled on its own, nothing pinned (its new columns placed beside
  the decided ones) — what tiling independent generations gives;
- ``replace``: outpainting by replacement (the decided columns pinned), no resampling;
- ``resample<N>``: outpainting with N RePaint resampling passes per Euler step (the default: 3).

    python scripts/large_scene_seams.py --scenes syn_s0_0003 syn_s0_0006 --modes independent replace resample3
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
import torch

from earthcrafter.io.tiles import read_tile
from earthcrafter.latents.generate import GenerationConfig, load_generators
from earthcrafter.latents.large_scene import cell_layout, class_raster_from_tiles, generate_large_scene, seam_scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=".", help="project root (trained models, latent manifest)")
    ap.add_argument("--scenes", nargs="+", required=True)
    ap.add_argument("--modes", nargs="+", default=["independent", "replace", "resample3"])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.root)
    manifest = pd.read_parquet(root / "data" / "05_model_input" / "latents_manifest.parquet")
    stats = json.loads((root / "data" / "05_model_input" / "latents_stats.json").read_text())
    cfg = GenerationConfig(**{k: str(root / v) for k, v in GenerationConfig().model_dump().items()
                              if k in ("structfm_dir", "texfm_dir", "structvae_path", "texvae_path")})  # fmt: skip
    models = load_generators(cfg, stats)
    cols = ["scene", "mode", "seed", "windows", "s / window", "ground step seam / inside (m)", "top step seam / inside (m)",
            "colour step seam / inside"]  # fmt: skip
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for scene_id in args.scenes:
        rows = manifest[manifest["scene_id"] == scene_id]
        tiles = [read_tile(p if Path(p).is_absolute() else root / p) for p in rows["tile_path"]]
        raster, vs, _ = class_raster_from_tiles(tiles)
        layout = cell_layout(raster, models.structvae.config.L // models.grid)
        for mode in args.modes:
            for seed in args.seeds:
                resample = int(mode[len("resample"):]) if mode.startswith("resample") else 0
                t = time.perf_counter()
                scene = generate_large_scene(models, layout, vs, seed=seed, resample=resample,
                                             outpaint=mode != "independent", progress=False)  # fmt: skip
                sec = (time.perf_counter() - t) / len(scene.windows)
                s = seam_scores(scene)
                pair = lambda name: f"{s['seam_' + name]:.2f} / {s['interior_' + name]:.2f}"  # noqa: E731
                print(f"| {scene_id} | {mode} | {seed} | {len(scene.windows)} | {sec:.1f} | {pair('ground_step_m')} | "
                      f"{pair('top_step_m')} | {pair('colour_step')} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
