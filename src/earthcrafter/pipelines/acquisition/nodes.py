"""acquisition nodes: thin calls into earthcrafter.world and earthcrafter.io."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from earthcrafter import config, tracking
from earthcrafter.io import import_source
from earthcrafter.semantics import colorize
from earthcrafter.world import generate_site, scene_id

log = logging.getLogger(__name__)


def acquire_scenes(params: dict) -> dict:
    """Plan every scene of the stage; scenes are produced lazily as the dataset writes them."""
    cfg = config.validate("acquisition", params)
    syn = cfg.synthetic
    bar = tqdm(total=syn.num_sites + len(cfg.imports), desc="acquisition", unit="scene")

    def synthetic(index: int):
        scene = generate_site(syn.world, index)
        bar.update()
        return scene

    def imported(src):
        scene = import_source(src.kind, src.path, **{**src.options, "scene_id": src.scene_id})
        bar.update()
        return scene

    plan = {}
    for i in range(syn.first_index, syn.first_index + syn.num_sites):
        sid = scene_id(syn.world, i)
        plan[sid] = lambda i=i: synthetic(i)
    for src in cfg.imports:
        sid = src.scene_id or Path(src.path).stem
        src = src.model_copy(update={"scene_id": sid})
        plan[sid] = lambda src=src: imported(src)
    if len(set(plan)) != syn.num_sites + len(cfg.imports):
        raise ValueError("acquisition: two sources map to the same scene_id; set `scene_id` on the imports")
    log.info("acquisition: %d synthetic site(s), %d import(s)", syn.num_sites, len(cfg.imports))
    return plan


def summarize_scenes(scenes: dict) -> pd.DataFrame:
    """One row per scene; logs counts, the class histogram and a contact sheet to MLflow."""
    rows, classes = [], Counter()
    sheet = []
    for sid, load in tqdm(sorted(scenes.items()), desc="summary", unit="scene"):
        scene = load()
        meta = scene.metadata
        hist = meta.get("class_histogram", {}) or {}
        classes.update({k: float(v) for k, v in hist.items()})
        rows.append(
            {
                "scene_id": sid,
                "source": meta.get("source", "unknown"),
                "biome": meta.get("biome", "real" if meta.get("source") != "synthetic" else "unknown"),
                "size_m": float(meta.get("size_m", np.nan)),
                "num_frames": len(scene.frames),
                "num_faces": 0 if scene.mesh is None else len(scene.mesh.faces),
                "num_points": 0 if scene.points is None else len(scene.points.xyz),
                "num_classes": sum(1 for v in hist.values() if v > 0),
            }
        )
        if scene.frames and len(sheet) < 8:
            fr = scene.frames[0]
            sem = colorize(fr.semantic) if fr.semantic is not None else np.zeros_like(fr.rgb)
            sheet.append((sid, meta.get("biome", ""), fr.rgb, sem))
    df = pd.DataFrame(rows)
    tracking.log_metrics(
        {
            "acquisition/scenes": len(df),
            "acquisition/frames": int(df["num_frames"].sum()) if len(df) else 0,
            "acquisition/classes_present": sum(1 for v in classes.values() if v > 0),
        }
    )
    if sheet:
        fig, axes = plt.subplots(2, len(sheet), figsize=(2.4 * len(sheet), 5), squeeze=False)
        for j, (sid, biome, rgb, sem) in enumerate(sheet):
            axes[0, j].imshow(rgb)
            axes[0, j].set_title(f"{sid}\n{biome}", fontsize=7)
            axes[1, j].imshow(sem)
            for ax in axes[:, j]:
                ax.axis("off")
        fig.tight_layout()
        tracking.log_figure(fig, "acquisition/contact_sheet.png")
        plt.close(fig)
    return df
