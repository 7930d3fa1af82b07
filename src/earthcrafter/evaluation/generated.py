"""Score generated scenes: structure against the tile whose layout conditioned them, appearance
against real tiles.

**Structure**, per scene, against the layout's own tile (a semantic layout fixes where classes lie,
not heights: these say how close a sample lands, they are not reconstruction scores):

- ``iou``, ``precision``, ``recall`` of the voxels at L; ``cell_iou`` of the occupied L/8 cells
  (Table 4's mIoU^0 and mIoU^3 per scene);
- ``footprint_iou``: IoU of the occupied xy columns;
- ``height_mae_m``: mean |top height generated - top height of the tile| over the columns both
  occupy, in metres; also per class of the tile's top voxel (``height_mae_m/building_roof``...),
  pooled over all scenes' columns;
- ``voxel_ratio``: generated / tile voxel count.

**Appearance**, over all scenes: FD and KD (:mod:`earthcrafter.evaluation.distribution`) between
the generated scenes' orbit frames and the same orbit rendered of reference tiles — their cached
texture latents decoded by the TexVAE on their true voxels, i.e. the real distribution as the
texture model can represent it. The same distances between two halves of the reference tiles
(``*_floor``) are what sampling noise alone gives with that many images: generated scenes are
indistinguishable from real ones in that feature space when they score near the floor.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from earthcrafter.evaluation import voxel_metrics as vm
from earthcrafter.evaluation.distribution import frechet_distance, image_descriptors, kernel_distance
from earthcrafter.features.extractors import FeaturesConfig, build_extractor
from earthcrafter.io.atomic import atomic_path
from earthcrafter.io.latents import file_sha256, read_latent_tile
from earthcrafter.io.structure import read_structure
from earthcrafter.io.tiles import read_tile
from earthcrafter.semantics import CLASS_NAMES
from earthcrafter.sparse.tensor import batched_coords
from earthcrafter.training.voxel_data import evenly_spaced

log = logging.getLogger(__name__)

FIGURE_TITLES = {"generated_vs_layout_tile.png": "Generated scenes (top) and the tiles whose layouts conditioned them (bottom), "
                                                "same orbit camera rule"}
DEFAULT_FEATURES = FeaturesConfig(tiny_ae={"weights_path": "data/06_models/feature_extractor/tiny_ae.pt"})


class EvaluationConfig(BaseModel):
    """``evaluation`` parameters."""

    model_config = ConfigDict(extra="forbid")
    root: str = Field(".", description="project root the manifests' relative paths start from")
    reports_dir: str = "data/08_reporting"
    out_dir: str = "data/08_reporting/evaluation"
    reference_split: str | None = Field(None, description="tiles rendered as the real distribution (None: the layouts' split)")
    max_reference_tiles: int = Field(32, ge=2)
    views_per_scene: int = Field(8, ge=1, description="orbit views per scene and reference tile in FD / KD "
                                 "(evenly spaced; the generated orbit's frame count must be a multiple)")
    features: FeaturesConfig = DEFAULT_FEATURES
    kid_subsets: int = Field(50, ge=1)
    kid_subset_size: int = Field(100, ge=2)
    render_cache: str | None = Field("data/07_model_output/evaluation_renders", description="reference renders kept "
                                     "per tile (keyed by its texture latents' SHA-256, views and size); null: none")
    progress: bool = True
    mlflow: bool = True


# --------------------------------------------------------------------------- structure

def top_heights(coords: np.ndarray, L: int) -> np.ndarray:
    """[L, L] index of the highest occupied voxel per column, -1 where the column is empty."""
    h = np.full((L, L), -1, np.int64)
    c = np.asarray(coords, dtype=np.int64).reshape(-1, 3)
    np.maximum.at(h, (c[:, 0], c[:, 1]), c[:, 2])
    return h


def _top_class(coords: np.ndarray, semantic: np.ndarray, L: int) -> np.ndarray:
    """[L, L] class of each column's highest voxel (0 where empty)."""
    cls = np.zeros((L, L), np.int64)
    c = np.asarray(coords, dtype=np.int64).reshape(-1, 3)
    order = np.argsort(c[:, 2], kind="stable")  # later (higher) writes win
    cls[c[order, 0], c[order, 1]] = np.asarray(semantic)[order]
    return cls


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def structure_scores(generated: np.ndarray, tile_coords: np.ndarray, tile_semantic: np.ndarray, L: int,
                     voxel_size: float, cell: int = 8) -> tuple[dict[str, float], dict[str, tuple[float, int]]]:  # fmt: skip
    """Per-scene scores (see the module docstring) and, per class of the tile's top voxel,
    (sum of |height error| in metres, columns) for pooling over scenes."""
    gen = batched_coords(np.asarray(generated, np.int64).reshape(-1, 3))
    ref = batched_coords(np.asarray(tile_coords, np.int64).reshape(-1, 3))
    fine = vm.ratios(vm.confusion(gen, ref, 1))
    coarse = vm.ratios(vm.confusion(vm.coarsen(gen, cell), vm.coarsen(ref, cell), 1))
    hg, hr = top_heights(generated, L), top_heights(tile_coords, L)
    both = (hg >= 0) & (hr >= 0)
    err = np.abs(hg - hr)[both] * voxel_size
    cls = _top_class(tile_coords, tile_semantic, L)[both]
    by_class = {CLASS_NAMES[k]: (float(err[cls == k].sum()), int((cls == k).sum())) for k in np.unique(cls)}
    scores = {"iou": fine["iou"], "precision": fine["precision"], "recall": fine["recall"],
              "cell_iou": coarse["iou"], "footprint_iou": _iou(hg >= 0, hr >= 0),
              "height_mae_m": float(err.mean()) if len(err) else float("nan"),
              "voxel_ratio": len(gen) / max(len(ref), 1)}  # fmt: skip
    return scores, by_class


# --------------------------------------------------------------------------- appearance

def reference_frames(row, root: Path, frames: int, size: int) -> list[np.ndarray]:
    """The generation stage's orbit rendered of a real tile: its cached texture latents decoded by
    the TexVAE on its true voxels (the weights that encoded them, refused if changed)."""
    from earthcrafter.latents.export import aerial_orbit, decode_texture
    from earthcrafter.render import render_orbit

    tile = read_tile(root / row["tile_path"])
    tex = read_latent_tile(root / row["tex_path"])
    gaussians = decode_texture(tex, root, tile.coords if tex.stride > 1 else None)
    return render_orbit(gaussians, n_frames=frames, **aerial_orbit(tile.coords, tile.voxel_size, tile.L, size))


def cached_reference_frames(row, root: Path, frames: int, size: int, cache: Path | None) -> tuple[list[np.ndarray], bool]:
    """:func:`reference_frames`, kept in ``cache/<tile_id>.npz`` and reused while the tile's texture
    latent file (which names the TexVAE weights and the voxel tile it came from), the view count and
    the size are unchanged; returns (frames, whether they were reused)."""
    if cache is None:
        return reference_frames(row, root, frames, size), False
    key = f"{file_sha256(root / row['tex_path'])}:{frames}:{size}"
    path = cache / f"{row['tile_id']}.npz"
    if path.is_file():
        try:
            with np.load(path) as z:
                if str(z["key"]) == key:
                    return list(z["frames"]), True
        except (OSError, ValueError, KeyError) as e:  # a damaged cache file is rendered again
            log.warning("evaluation: ignoring unreadable render cache %s (%s)", path, e)
    views = reference_frames(row, root, frames, size)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, key=np.asarray(key), frames=np.stack(views))
    return views, False


def _read_frames(scene_dir: Path) -> list[np.ndarray]:
    paths = sorted((scene_dir / "orbit").glob("frame_*.png"))
    if not paths:
        raise FileNotFoundError(f"{scene_dir / 'orbit'}: no orbit frames (run generation with generation.frames > 0)")
    return [np.array(Image.open(p).convert("RGB")) for p in paths]


def _distances(a: np.ndarray, b: np.ndarray, cfg: EvaluationConfig) -> dict[str, float]:
    kd, kd_std = kernel_distance(a, b, cfg.kid_subsets, cfg.kid_subset_size)
    return {"fd": frechet_distance(a, b), "kd": kd, "kd_std": kd_std}


def side_by_side(generated: list[np.ndarray], reference: list[np.ndarray], columns: int = 6) -> np.ndarray:
    """A row of up to ``columns`` generated views over a row of reference views (white padding)."""
    size = generated[0].shape[0]
    rows = []
    for frames in (generated[:columns], reference[:columns]):
        strip = np.full((size, columns * size, 3), 255, np.uint8)
        for i, f in enumerate(frames):
            strip[:, i * size : (i + 1) * size] = f
        rows.append(strip)
    return np.concatenate(rows, axis=0)


# --------------------------------------------------------------------------- the stage

def evaluate_generated(generated: pd.DataFrame, latents_manifest: pd.DataFrame,
                       config: EvaluationConfig | dict) -> tuple[pd.DataFrame, dict[str, Any], dict[str, np.ndarray]]:  # fmt: skip
    """(one row of scores per scene, summary metrics, figures as uint8 images)."""
    cfg = config if isinstance(config, EvaluationConfig) else EvaluationConfig.model_validate(config)
    root = Path(cfg.root)
    if generated.empty:
        raise ValueError("evaluation: the generated manifest is empty (run `kedro run --pipelines=generation`)")
    tiles = latents_manifest.set_index("tile_id")
    unknown = sorted(set(generated["layout_tile"]) - set(tiles.index))
    if unknown:
        raise ValueError(f"evaluation: layout tiles {unknown[:5]} of the generated scenes are not in the latent manifest")

    rows, pooled, gen_frames, unconditional = [], {}, [], 0
    for _, scene in tqdm(generated.iterrows(), total=len(generated), desc="score scenes", disable=not cfg.progress):
        scene_dir = root / scene["path"]
        gen_frames.append(_read_frames(scene_dir))
        if scene.get("condition", "layout") == "none":  # no tile to compare the structure with
            unconditional += 1
            rows.append({"scene_id": scene["scene_id"], "layout_tile": None})
            continue
        path = scene_dir / "structure.parquet"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing (scenes generated before structure files existed: re-run generation)")
        coords, meta = read_structure(path)
        tile = read_tile(root / tiles.loc[scene["layout_tile"], "tile_path"])
        if tile.L != meta["L"]:
            raise ValueError(f"{path}: L = {meta['L']} but its layout tile {tile.tile_id} has L = {tile.L}")
        scores, by_class = structure_scores(coords, tile.coords, tile.semantic, tile.L, tile.voxel_size)
        for name, (total, n) in by_class.items():
            t, m = pooled.get(name, (0.0, 0))
            pooled[name] = (t + total, m + n)
        rows.append({"scene_id": scene["scene_id"], "layout_tile": scene["layout_tile"], **scores})
    table = pd.DataFrame(rows)
    metrics: dict[str, Any] = {"scenes": len(table)}
    metrics.update({k: float(table[k].mean()) for k in table.columns if k not in ("scene_id", "layout_tile")})
    if unconditional:
        log.info("evaluation: %d unconditional scene(s) have no layout tile: scored for appearance only", unconditional)
        metrics["unconditional_scenes"] = unconditional
    metrics.update({f"height_mae_m/{k}": t / n for k, (t, n) in sorted(pooled.items()) if n})

    figures: dict[str, np.ndarray] = {}
    order = {"train": 0, "val": 1}  # then any other (a block split's "buffer": no reference set of its own)
    layout_split = sorted(set(tiles.loc[generated["layout_tile"], "split"]), key=lambda s: (order.get(s, 2), s))
    split = cfg.reference_split or layout_split[0]
    if not cfg.reference_split and len(layout_split) > 1:
        log.info("evaluation: layouts from splits %s; reference tiles from %r (set evaluation.reference_split)", layout_split, split)
    refs = latents_manifest[(latents_manifest["split"] == split)].reset_index(drop=True)
    if refs.empty or "tex_path" not in refs or not refs["tex_path"].fillna("").astype(bool).all():
        reason = f"reference split {split!r} has no tiles" if refs.empty else "tiles lack texture latents"
        log.warning("evaluation: appearance not scored (%s)", reason)
        metrics["appearance"] = f"not scored: {reason}"
        return table, metrics, figures
    refs = refs.iloc[evenly_spaced(len(refs), cfg.max_reference_tiles)].reset_index(drop=True)
    shapes = {(len(g), g[0].shape) for g in gen_frames}
    if len(shapes) > 1:
        raise ValueError(f"evaluation: the scenes' orbits differ in frame count or size {sorted(shapes)}: "
                         "evaluate scenes of one generation run together")  # fmt: skip
    n_orbit, size = len(gen_frames[0]), gen_frames[0][0].shape[0]
    n_frames = cfg.views_per_scene if n_orbit % cfg.views_per_scene == 0 else n_orbit
    if n_frames != cfg.views_per_scene:
        log.warning("evaluation: %d orbit frames per scene is no multiple of views_per_scene = %d; using all %d",
                    n_orbit, cfg.views_per_scene, n_orbit)  # fmt: skip
    gen_frames = [g[:: n_orbit // n_frames] for g in gen_frames]  # the angles an n_frames orbit renders
    cache = root / cfg.render_cache if cfg.render_cache else None
    rendered = [cached_reference_frames(r, root, n_frames, size, cache)
                for _, r in tqdm(refs.iterrows(), total=len(refs), desc="render references", disable=not cfg.progress)]  # fmt: skip
    ref_frames = [views for views, _ in rendered]
    metrics["reference_renders_reused"] = sum(reused for _, reused in rendered)
    extractor = build_extractor(cfg.features)
    name = extractor.name
    gen_d = image_descriptors([f for g in gen_frames for f in g], extractor)
    per_tile = [image_descriptors(views, extractor) for views in ref_frames]
    ref_d = np.concatenate(per_tile)
    for k, v in _distances(gen_d, ref_d, cfg).items():
        metrics[f"{k}_{name}"] = v
    if len(per_tile) >= 2:  # the floor compares disjoint tiles
        for k, v in _distances(np.concatenate(per_tile[0::2]), np.concatenate(per_tile[1::2]), cfg).items():
            metrics[f"{k}_{name}_floor"] = v
    else:
        log.warning("evaluation: one reference tile, no floor for FD / KD (it compares two halves of the tiles)")
    metrics.update(reference_split=split, reference_tiles=len(refs), generated_images=len(gen_d),
                   reference_images=len(ref_d), feature_space=name)  # fmt: skip
    weights = getattr(cfg.features, cfg.features.extractor, None)
    weights = getattr(weights, "weights_path", None) or getattr(weights, "path", None)
    if weights is not None and (root / weights).is_file():  # the feature space is these weights: say which
        metrics["feature_weights_sha256"] = file_sha256(root / weights)
    shown = generated["layout_tile"].iloc[:8]  # each shown scene beside its layout's own tile
    own = [cached_reference_frames({"tile_id": t, **tiles.loc[t]}, root, n_frames, size, cache)[0][0] for t in shown]
    figures["generated_vs_layout_tile.png"] = side_by_side([g[0] for g in gen_frames], own, columns=len(shown))
    return table, metrics, figures


def run_evaluation(generated: pd.DataFrame, latents_manifest: pd.DataFrame, config: EvaluationConfig | dict,
                   large_scenes: list[str] = ()) -> tuple[pd.DataFrame, dict[str, Any]]:  # fmt: skip
    """The ``evaluation`` stage: score the scenes, then write ``<out_dir>/report.html`` and
    ``<out_dir>/figures/``, with the same numbers, figures and page in an MLflow run.
    ``large_scenes``: the folders of the large scenes the same generation run wrote (its metrics'
    ``large_scene_paths``), shown in the report; other folders beside them are not this run's."""
    from earthcrafter import tracking
    from earthcrafter.evaluation import html_report as hr
    from earthcrafter.training.tracking import training_run

    cfg = config if isinstance(config, EvaluationConfig) else EvaluationConfig.model_validate(config)
    root = Path(cfg.root)
    out, reports = root / cfg.out_dir, root / cfg.reports_dir
    with training_run("evaluation", {"stage": "evaluation"}, enabled=cfg.mlflow and tracking.is_main_process()) as run_id:
        table, metrics, figures = evaluate_generated(generated, latents_manifest, cfg)
        stage_metrics = hr.read_stage_metrics(reports)
        tables, notes = hr.read_tables(reports)
        images: dict[str, bytes] = {}
        sheet = root / Path(generated["path"].iloc[0]).parent / "contact_sheet.png"
        if sheet.is_file():
            images["Layout, voxels and texture of each scene"] = hr.image_png(sheet)
        large_dirs = [root / p for p in large_scenes]
        for large in large_dirs:
            for view, what in (("preview.png", "map, real scene, generated voxels and surfels"),
                               ("top.png", "map and surfels from above")):  # fmt: skip
                if (large / view).is_file():
                    images[f"Large scene {large.name}: {what}"] = hr.image_png(large / view)
        for name, image in figures.items():
            images[FIGURE_TITLES.get(name, name)] = hr.image_png(image)
            with atomic_path(out / "figures" / name) as tmp:
                Image.fromarray(image).save(tmp)
        curves = hr.loss_curves(hr.training_run_ids(stage_metrics)) if cfg.mlflow else None
        if curves is not None:
            images["Training loss"] = hr.figure_png(curves)
            with atomic_path(out / "figures" / "loss_curves.png") as tmp:
                tmp.write_bytes(images["Training loss"])
        scene_dirs = [root / p for p in generated["path"]] + large_dirs
        views = {d.name: os.path.relpath(d / "view.html", out) for d in scene_dirs if (d / "view.html").is_file()}
        page = hr.write_report(out / "report.html", summary=metrics, scenes=table, stage_metrics=stage_metrics,
                               tables=tables, notes=notes, images=images, commit=tracking.git_commit(root),
                               views=views)  # fmt: skip
        if run_id:
            tracking.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))})
            tracking.log_params(cfg.model_dump(mode="json"))
            tracking.log_artifact(page)
            for name in list(figures) + (["loss_curves.png"] if curves is not None else []):
                tracking.log_artifact(out / "figures" / name, "figures")
        metrics["run_id"] = run_id or ""
    log.info("evaluated %d scenes: %s; report %s", len(table),
             {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)}, page)  # fmt: skip
    return table, metrics
