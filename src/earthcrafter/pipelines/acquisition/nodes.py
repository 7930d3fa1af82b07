"""acquisition nodes: thin calls into earthcrafter.world and earthcrafter.io."""

from __future__ import annotations

import logging
from collections import Counter
from functools import partial

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from earthcrafter import config, tracking
from earthcrafter.io.import_common import MAX_UNLABELED_SHARE, unlabeled_share
from earthcrafter.io.scene import scene_biome
from earthcrafter.io.sources import check_sources, import_source
from earthcrafter.semantics import colorize
from earthcrafter.world import generate_site, scene_id

log = logging.getLogger(__name__)


def acquire_scenes(params: dict) -> dict:
    """Plan every scene of the stage; scenes are produced lazily as the dataset writes them.

    Every import is checked first (files, headers, world files, units), so a bad source fails
    before anything is generated; imports then come first in the plan, synthetic sites after.
    """
    cfg = config.validate("acquisition", params)
    syn = cfg.synthetic
    specs = [src.spec() for src in cfg.imports]
    if not specs and not syn.num_sites:
        raise ValueError("acquisition: nothing to acquire (synthetic.num_sites is 0 and imports is empty)")
    check_sources(specs, what="acquisition.imports")
    bar = tqdm(total=syn.num_sites + len(specs), desc="acquisition", unit="scene")

    def produce(make, *args, **kwargs):
        scene = make(*args, **kwargs)
        bar.update()
        return scene

    plan = {spec["scene_id"]: partial(produce, import_source, **spec) for spec in specs}
    for i in range(syn.first_index, syn.first_index + syn.num_sites):
        sid = scene_id(syn.world, i)
        if sid in plan:
            raise ValueError(f"acquisition: import scene_id {sid!r} is also a synthetic site's id; choose another")
        plan[sid] = partial(produce, generate_site, syn.world, i)
    log.info("acquisition: %d import(s), %d synthetic site(s)", len(specs), syn.num_sites)
    return plan


def summarize_scenes(scenes: dict) -> pd.DataFrame:
    """One row per scene; logs counts, the class histogram and a contact sheet to MLflow.

    ``unlabeled_share`` is the share of class "unlabeled" in the scene's class histogram (points,
    faces or pixels for imports, surface area for synthetic sites); scenes over half unlabeled
    (unclassified LiDAR, say) are counted in ``acquisition/mostly_unlabeled_scenes``.
    """
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
                "biome": scene_biome(meta),
                "size_m": float(meta.get("size_m", np.nan)),
                "num_frames": len(scene.frames),
                "num_faces": 0 if scene.mesh is None else len(scene.mesh.faces),
                "num_points": 0 if scene.points is None else len(scene.points.xyz),
                "num_classes": sum(1 for v in hist.values() if v > 0),
                "unlabeled_share": _nan_if_none(unlabeled_share(hist)),
            }
        )
        if scene.frames and len(sheet) < 8:
            fr = scene.frames[0]
            sem = colorize(fr.semantic) if fr.semantic is not None else np.zeros_like(fr.rgb)
            sheet.append((sid, scene_biome(meta), fr.rgb, sem))
    df = pd.DataFrame(rows)
    tracking.log_metrics(
        {
            "acquisition/scenes": len(df),
            "acquisition/frames": int(df["num_frames"].sum()) if len(df) else 0,
            "acquisition/classes_present": sum(1 for v in classes.values() if v > 0),
            "acquisition/mostly_unlabeled_scenes": int((df["unlabeled_share"] > MAX_UNLABELED_SHARE).sum())
            if len(df) else 0,
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


def _nan_if_none(share: float | None) -> float:
    return float("nan") if share is None else share
