"""Photos as StructFM conditions: Table 4's two_stage row with and without height dropout.

Trains the configuration's ``two_stage`` Table 4 row (condition rgbd, generated from the training
tiles) once per ``--dropout`` value, each into ``<out>/hd<p>`` (reused when there), and generates from the same tiles
three ways — the view with its depth, the view's colours alone (a photo), and the null condition —
printing one Markdown row per model and input (docs/structfm.md, "Photos"). ``--figure`` also
draws three tiles with both generations of the last model.

    python scripts/photo_condition_study.py --dropout 0 0.5 --out data/06_models/photo_study --figure docs/img/structfm_photo.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from earthcrafter.flow.latent_stats import denormalize
from earthcrafter.io.tiles import read_tile_coords
from earthcrafter.training.conditions import model_condition, view_colours
from earthcrafter.training.structfm import StructFMRunConfig, ablation_config, build_datasets, load_structfm, train_structfm
from earthcrafter.training.structfm_preview import _render, generate_preview
from earthcrafter.training.structvae import load_structvae

INPUTS = {None: "RGBD view", "rgb": "the view's colours alone", "none": "none (the CFG null condition)"}


def load_project(root: Path, env: str | None):
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(root)
    with KedroSession.create(project_path=root, env=env) as session:
        ctx = session.load_context()
        return ctx.params["train_structfm"], ctx.catalog.load("latents_manifest"), ctx.catalog.load("latents_stats")


def figure(model, cfg, tiles, stats, path: Path, count: int = 3) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    vae = load_structvae(cfg.structvae_path)
    L, kind = vae.config.L, model.config.condition
    picks = np.linspace(0, len(tiles) - 1, count).astype(int)
    fig, axes = plt.subplots(count, 4, figsize=(12, 3 * count), squeeze=False)
    for row, i in zip(axes, picks):
        s = tiles[int(i)]
        gt, _ = read_tile_coords(tiles.rows.iloc[int(i)]["tile_path"])
        gens = []
        for part in (None, "rgb"):
            _, z = model.generate(model_condition(s["layout"][None], kind, part), 1, cfg.sample.steps,
                                  cfg.sample.cfg_strength, generator=torch.Generator().manual_seed(0))  # fmt: skip
            gens.append(vae.decode(z.replace(denormalize(z.feats, stats)), threshold=0.0).coords[:, 1:].numpy())
        top = int(max(gt[:, 2].max(), *(g[:, 2].max() for g in gens if len(g))))
        colours = view_colours(s["layout"].numpy(), kind).transpose(1, 0, 2)[::-1]
        panels = [colours, _render(gt, L, top)] + [_render(g, L, top) for g in gens]
        titles = [f"view colours per column\n{s['tile_id']}", "tile", "generated from the RGBD view",
                  "generated from the colours alone"]  # fmt: skip
        for ax, img, title in zip(row, panels, titles):
            ax.imshow(img, interpolation="nearest")
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=".", help="project root (cached latents, trained StructVAE)")
    ap.add_argument("--env", default=None, help="Kedro environment over conf/base")
    ap.add_argument("--dropout", type=float, nargs="+", default=[0.0, 0.5], help="height_dropout values")
    ap.add_argument("--out", default="data/06_models/photo_study", help="one trained row per value under here")
    ap.add_argument("--figure", default=None, help="PNG of three tiles and the last model's generations")
    ap.add_argument("--steps", type=int, default=None, help="training steps per stage (default: the row's)")
    ap.add_argument("--tiles", type=int, default=None, help="tiles generated from (default: the row's, all)")
    args = ap.parse_args()
    params, manifest, stats = load_project(Path(args.root).resolve(), args.env)
    base = ablation_config(StructFMRunConfig.model_validate(params), "two_stage")
    if args.steps:
        base = base.model_copy(update={s: getattr(base, s).model_copy(update={"steps": args.steps, "warmup_steps": 0})
                                       for s in ("coarse", "fine")})  # fmt: skip
    if args.tiles:
        base = base.model_copy(update={"preview_tiles": args.tiles})
    print("| height_dropout | input | ClassSFM mIoU³ (%) | LatentSFM mIoU³ (%) | mIoU⁰ (%) |\n|---|---|--:|--:|--:|")
    for p in args.dropout:
        cfg = base.model_copy(update={"output_dir": str(Path(args.out) / f"hd{p}"), "mlflow": False,
                                      "preview_tiles": 0, "model": base.model.model_copy(update={"height_dropout": p})})  # fmt: skip
        if not (Path(cfg.output_dir) / "fine" / "model.pt").exists():  # a row trained before is reused
            train_structfm(manifest, stats, cfg)
        model = load_structfm(cfg.output_dir)
        tiles = build_datasets(manifest, stats["struct"], cfg)[0 if cfg.preview_split == "train" else 1]
        cfg = cfg.model_copy(update={"preview_tiles": base.preview_tiles})
        rows = {}
        for given, name in INPUTS.items():
            m = generate_preview(model, tiles, stats["struct"], cfg, given=given)
            pre = f"gen_{given}_" if given else "gen_"
            rows[name] = [100 * m[f"{pre}coarse_cell_iou"], 100 * m[f"{pre}cell_iou"], 100 * m[f"{pre}iou"]]
            print(f"| {p} | {name} | " + " | ".join(f"{v:.1f}" for v in rows[name]) + " |", flush=True)
        (Path(cfg.output_dir) / "photo_study.json").write_text(json.dumps(rows, indent=1))
    if args.figure:
        figure(model, cfg, tiles, stats["struct"], Path(args.figure))


if __name__ == "__main__":
    main()
