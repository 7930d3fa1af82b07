"""Voxelization of featured scenes into L^3 training tiles.

Per scene: central crop -> sliding tiles (:mod:`earthcrafter.geometry.crops`) -> for each tile an
``L^3`` grid with ``voxel_size = tile_size / L`` whose corner (``origin_m``) is the tile's xy
corner and ``z0``:

**z-window rule.** ``z0 = quantile_q(sample heights in the tile) - margin * voxel_size``
(defaults q = 0.01, margin = 2 voxels); the window is ``[z0, z0 + L * voxel_size)``. Samples are
area-weighted, so z0 sits just under the lowest 1 % of the tile's surface area: the ground is kept
and the whole grid height is left for what stands on it. Content above the window (or below it) is
clipped and counted (``clipped_above`` / ``clipped_below`` samples, ``clipped_fraction``).

**Occupancy and features.** The surface is sampled at ``samples_per_voxel / voxel_size^2`` points
per m^2; a voxel is occupied when it holds at least ``min_samples_per_voxel`` samples, so every
occupied voxel has surface samples to carry features. Those samples are the probes of score
aggregation (:mod:`earthcrafter.features.aggregate`): every observation of every sample in a voxel
is pooled into the voxel's weighted mean feature and class vote. Surface samples, not voxel
centres, are projected because they lie on the surface: the depth test can be tight, and a
voxel's feature averages several pixels of its surface like a box filter.

Voxels no frame saw keep zero features and ``confidence = 0`` and are counted (``unseen_voxels``);
with ``fill_unvoted_semantics`` they take the majority face class of the mesh. Frames lacking depth
or normal maps get them by ray casting the mesh; frames with NaN depth or no camera are skipped.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from earthcrafter.features.aggregate import (
    AggregationConfig,
    FeatureSource,
    SurfaceSamples,
    aggregate,
    frame_problem,
    sample_surface,
)
from earthcrafter.features.base import ImageFeatureExtractor, frame_features
from earthcrafter.features.layout import FEATURE_LAYOUT, layout_channels, layout_to_json
from earthcrafter.geometry.cameras import Camera
from earthcrafter.geometry.crops import CropConfig, TileSpec, bounds_xy, central_crop, faces_in_box_xy, plan_tiles
from earthcrafter.io.georef import scene_georef
from earthcrafter.io.scene import Frame, Mesh, Scene, scene_biome
from earthcrafter.io.tiles import TileViews, VoxelTile, class_histogram
from earthcrafter.semantics import NUM_CLASSES

log = logging.getLogger(__name__)
FP16_MAX = float(np.finfo(np.float16).max)


class ViewsConfig(BaseModel):
    """Per-tile ground-truth views: the ``count`` frames that see most of the tile, resized."""

    model_config = ConfigDict(extra="forbid")
    count: int = Field(8, ge=0)
    height: int = Field(96, ge=8)
    width: int = Field(96, ge=8)
    min_visible_samples: int = Field(1, ge=1)


class VoxelizeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    L: int = Field(64, ge=2, le=65535)
    samples_per_voxel: float = Field(8.0, gt=0, description="surface samples per voxel_size^2 of area")
    min_samples_per_voxel: int = Field(1, ge=1)
    z_quantile: float = Field(0.01, ge=0, le=1)
    z_margin_voxels: float = Field(2.0, ge=0)
    fill_unvoted_semantics: bool = True
    tiles_per_pass: int | None = Field(None, ge=1, description="tiles aggregated together (bounds memory); None: all")
    seed: int = 0
    crop: CropConfig = CropConfig()
    aggregation: AggregationConfig = AggregationConfig()
    views: ViewsConfig = ViewsConfig()

    @property
    def voxel_size(self) -> float:
        return self.crop.tile_size_m / self.L


# --------------------------------------------------------------------------- voxel grid primitives

def choose_z0(z: np.ndarray, voxel_size: float, quantile: float = 0.01, margin_voxels: float = 2.0) -> float:
    """The z-window rule: the ``quantile`` of the heights minus ``margin_voxels`` voxels."""
    if len(z) == 0:
        raise ValueError("choose_z0: no heights")
    return float(np.quantile(z, quantile) - margin_voxels * voxel_size)


@dataclass
class VoxelAssignment:
    coords: np.ndarray  # [M, 3] int32 occupied voxels, sorted by linear key
    inverse: np.ndarray  # [K] int64 voxel of each kept point
    kept: np.ndarray  # [K] int64 indices of kept points into the input
    counts: np.ndarray  # [M] int64 points per voxel
    clipped_below: int
    clipped_above: int
    dropped_sparse: int  # points in voxels under min_points


def voxelize_points(
    xyz: np.ndarray, origin: np.ndarray, voxel_size: float, L: int, min_points: int = 1
) -> VoxelAssignment:
    """Assign points [N, 3] to the L^3 grid at ``origin``; x/y outside [0, L) are clamped (points
    are pre-selected by the tile's half-open box), z outside is clipped and counted."""
    ijk = np.floor((np.asarray(xyz, np.float64) - origin) / voxel_size).astype(np.int64)
    ijk[:, :2] = np.clip(ijk[:, :2], 0, L - 1)
    below, above = ijk[:, 2] < 0, ijk[:, 2] >= L
    kept = np.flatnonzero(~(below | above))
    keys = (ijk[kept, 0] * L + ijk[kept, 1]) * L + ijk[kept, 2]
    uniq, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    dropped = 0
    if min_points > 1:
        dense = counts >= min_points
        dropped = int(counts[~dense].sum())
        keep_pts = dense[inverse]
        kept, inverse = kept[keep_pts], inverse[keep_pts]
        remap = np.cumsum(dense) - 1
        inverse, uniq, counts = remap[inverse], uniq[dense], counts[dense]
    coords = np.stack([uniq // (L * L), (uniq // L) % L, uniq % L], axis=1).astype(np.int32)
    return VoxelAssignment(coords, inverse.astype(np.int64), kept, counts, int(below.sum()), int(above.sum()), dropped)


def voxelize_mesh_occupancy(
    mesh: Mesh, origin: np.ndarray, voxel_size: float, L: int, samples_per_voxel: float = 64.0, seed: int = 0
) -> np.ndarray:
    """Occupied voxels [M, 3] of a mesh by dense surface sampling (a geometry-only reference)."""
    xy_min, xy_max = origin[:2], origin[:2] + L * voxel_size
    faces = faces_in_box_xy(mesh, xy_min, xy_max)
    s = sample_surface(mesh, samples_per_voxel / voxel_size**2, seed, faces)
    box = TileSpec("ref", 0, 0, (float(xy_min[0]), float(xy_min[1])), L * voxel_size)
    inside = box.contains_xy(s.xyz)
    return voxelize_points(s.xyz[inside], origin, voxel_size, L).coords


# --------------------------------------------------------------------------- frames

def prepare_frames(frames: list[Frame], mesh: Mesh | None) -> tuple[list[Frame], list[str]]:
    """Fill missing depth / normal maps by ray casting ``mesh``; returns the frames (copies where
    changed) and the names of frames whose geometry was rendered."""
    rendered = []
    out = list(frames)
    caster = None
    for i, fr in enumerate(frames):
        if not isinstance(getattr(fr, "camera", None), Camera):
            continue  # skipped (and reported) by aggregation
        if (fr.depth is None or fr.normal is None) and mesh is not None and len(mesh.faces):
            if caster is None:
                from earthcrafter.geometry.raycast import MeshRaycaster

                caster = MeshRaycaster(mesh)
            depth, normal = _cast_geometry(caster, fr.camera)
            fr = copy.copy(fr)
            if fr.depth is None:
                fr.depth = depth
            if fr.normal is None:
                fr.normal = normal
            out[i] = fr
            rendered.append(fr.name)
    return out, rendered


def _cast_geometry(caster, camera: Camera) -> tuple[np.ndarray, np.ndarray]:
    origins, dirs = camera.pixel_rays()
    hit = caster.cast(origins, dirs)
    valid = hit["prim"] >= 0
    depth = np.where(valid, hit["t"] * (dirs @ camera.forward), np.inf).astype(np.float32)
    normal = caster.face_normals[np.where(valid, hit["prim"], 0)]
    normal = np.where((np.einsum("hwc,hwc->hw", normal, dirs) > 0)[..., None], -normal, normal)
    normal[~valid] = 0.0
    return depth, normal.astype(np.float32)


# --------------------------------------------------------------------------- views

def _resize(img: np.ndarray, height: int, width: int) -> np.ndarray:
    pil = Image.fromarray(img)
    method = Image.Resampling.BOX if width <= img.shape[1] and height <= img.shape[0] else Image.Resampling.BILINEAR
    return np.asarray(pil.resize((width, height), method))


def local_world_to_camera(world_to_camera: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """Extrinsics in the tile-local frame (``p_world = p_local + origin``)."""
    T = np.eye(4)
    T[:3, 3] = origin
    return world_to_camera @ T


def tile_mask(frame: Frame, origin: np.ndarray, extent: np.ndarray, height: int, width: int, ss: int = 3) -> np.ndarray:
    """Mask [height, width] of view pixels whose surface lies in the box [origin, origin + extent):
    a pixel is in when most of its ``ss x ss`` sub-samples of the frame's depth map are."""
    cam = frame.camera
    H, W = cam.height, cam.width
    sub = (np.arange(ss) + 0.5) / ss
    rows = np.minimum(((np.arange(height)[:, None] + sub) * H / height).ravel().astype(np.int64), H - 1)
    cols = np.minimum(((np.arange(width)[:, None] + sub) * W / width).ravel().astype(np.int64), W - 1)
    z = frame.depth[np.ix_(rows, cols)].astype(np.float64)
    z = np.where(np.isfinite(z), z, np.nan)
    x = (cols[None, :] + 0.5 - cam.K[0, 2]) / cam.K[0, 0] * z
    y = (rows[:, None] + 0.5 - cam.K[1, 2]) / cam.K[1, 1] * z
    R, t = cam.world_to_camera[:3, :3], cam.world_to_camera[:3, 3]
    local = np.einsum("...j,jk->...k", np.stack([x, y, z], axis=-1) - t, R) - origin
    with np.errstate(invalid="ignore"):
        inside = ((local >= 0) & (local < extent)).all(axis=-1)
    return inside.reshape(height, ss, width, ss).mean(axis=(1, 3)) > 0.5


def build_views(
    frames: list[Frame], order: np.ndarray, origin: np.ndarray, extent: np.ndarray, cfg: ViewsConfig
) -> TileViews:
    """The views of ``frames[order]``, resized, with masks of the box [origin, origin + extent)."""
    h, w = cfg.height, cfg.width
    if len(order) == 0:
        return TileViews.empty(h, w)
    rgb, mask, depth, K, E, names = [], [], [], [], [], []
    for fi in order:
        fr = frames[fi]
        H, W = fr.camera.height, fr.camera.width
        rgb.append(_resize(fr.rgb, h, w))
        mask.append(tile_mask(fr, origin, extent, h, w))
        rows = np.minimum(((np.arange(h) + 0.5) * H / h).astype(np.int64), H - 1)
        cols = np.minimum(((np.arange(w) + 0.5) * W / w).astype(np.int64), W - 1)
        depth.append(fr.depth[rows][:, cols])
        K.append(np.diag([w / W, h / H, 1.0]) @ fr.camera.K)
        E.append(local_world_to_camera(fr.camera.world_to_camera, origin))
        names.append(fr.name)
    return TileViews(np.stack(rgb), np.stack(mask), np.stack(depth).astype(np.float32), np.stack(K), np.stack(E), names)


# --------------------------------------------------------------------------- scenes

@dataclass
class SceneVoxels:
    tiles: list[VoxelTile]
    views: list[TileViews]
    report: dict
    skipped: list[dict] = field(default_factory=list)  # {scene_id, scope, item, reason}


@dataclass
class _TilePlan:
    spec: TileSpec
    origin: np.ndarray
    assign: VoxelAssignment
    samples: np.ndarray  # indices into the scene samples, one per kept point
    num_samples: int


def _plan_tile(spec: TileSpec, samples: SurfaceSamples, cfg: VoxelizeConfig) -> _TilePlan | None:
    idx = np.flatnonzero(spec.contains_xy(samples.xyz))
    if not len(idx):
        return None
    s = cfg.voxel_size
    z0 = choose_z0(samples.xyz[idx, 2], s, cfg.z_quantile, cfg.z_margin_voxels)
    origin = np.array([spec.xy_min[0], spec.xy_min[1], z0])
    assign = voxelize_points(samples.xyz[idx], origin, s, cfg.L, cfg.min_samples_per_voxel)
    if not len(assign.coords):
        return None
    return _TilePlan(spec, origin, assign, idx[assign.kept], len(idx))


def voxelize_scene(
    scene: Scene,
    features: FeatureSource | ImageFeatureExtractor,
    cfg: VoxelizeConfig | None = None,
    layout: dict[str, slice] | None = None,
) -> SceneVoxels:
    """Voxelize one scene into tiles with aggregated features, plus their views and a report.

    ``features``: an extractor (feature maps are built per frame with
    :func:`~earthcrafter.features.base.frame_features`), a sequence of per-frame maps
    [H, W, C] aligned with ``scene.frames``, or a callable ``(i, frame) -> [H, W, C]``.
    Problems with the scene as a whole (no mesh, no usable frame, empty crop) give no tiles and
    one ``skipped`` record; skipped tiles and frames are recorded too.
    """
    cfg = cfg or VoxelizeConfig()
    t0 = time.perf_counter()
    if isinstance(features, ImageFeatureExtractor):
        extractor = features
        layout = extractor.layout
        features = lambda i, fr: frame_features(fr, extractor)  # noqa: E731
    layout = layout or FEATURE_LAYOUT
    sid = scene.scene_id
    skipped: list[dict] = []
    report = {"scene_id": sid, "L": cfg.L, "voxel_size_m": cfg.voxel_size, "tiles": []}

    def skip_scene(reason: str) -> SceneVoxels:
        log.warning("voxelize: skipping scene %s: %s", sid, reason)
        skipped.append({"scene_id": sid, "scope": "scene", "item": sid, "reason": reason})
        report.update(num_tiles=0, seconds=time.perf_counter() - t0)
        return SceneVoxels([], [], report, skipped)

    mesh = scene.mesh
    if mesh is None or len(mesh.faces) == 0:
        return skip_scene("no mesh (or an empty one)")
    frames, rendered = prepare_frames(scene.frames, mesh)
    report["frames_geometry_rendered"] = rendered
    problems = {fr.name: frame_problem(fr) for fr in frames}
    for name, why in problems.items():
        if why:
            skipped.append({"scene_id": sid, "scope": "frame", "item": name, "reason": why})
    report["frames_skipped"] = sum(bool(v) for v in problems.values())
    if not frames or all(problems.values()):
        return skip_scene("no usable frames (need a camera and a finite depth map)")

    crop_min, crop_size = central_crop(*bounds_xy(mesh), cfg.crop)
    specs = plan_tiles(sid, crop_min, crop_size, cfg.crop)
    faces = faces_in_box_xy(mesh, crop_min, crop_min + crop_size)
    report["central_crop"] = {"xy_min": crop_min.tolist(), "size_m": np.asarray(crop_size).tolist()}
    if not specs:
        return skip_scene(f"empty crop: central crop {np.min(crop_size):.1f} m is smaller than a {cfg.crop.tile_size_m} m tile")
    if not len(faces):
        return skip_scene("empty crop: no mesh faces in the central crop")
    timings = report["timings"] = {}
    t1 = time.perf_counter()
    samples = sample_surface(mesh, cfg.samples_per_voxel / cfg.voxel_size**2, cfg.seed, faces)
    report["num_surface_samples"] = len(samples)

    plans = []
    for spec in specs:
        plan = _plan_tile(spec, samples, cfg)
        if plan is None:
            skipped.append({"scene_id": sid, "scope": "tile", "item": spec.tile_id, "reason": "zero voxels"})
            log.warning("voxelize: skipping tile %s: zero voxels", spec.tile_id)
        else:
            plans.append(plan)
    timings["sample_and_voxelize_s"] = time.perf_counter() - t1
    timings["aggregate_s"] = timings["tiles_and_views_s"] = 0.0

    tiles, views = [], []
    per_pass = cfg.tiles_per_pass or max(1, len(plans))
    for b in range(0, len(plans), per_pass):
        batch = plans[b : b + per_pass]
        t1 = time.perf_counter()
        agg = _aggregate_batch(batch, samples, frames, features, cfg, layout)
        timings["aggregate_s"] += time.perf_counter() - t1
        t1 = time.perf_counter()
        report.setdefault("aggregation", []).append(agg.summary())
        offset = 0
        for t, plan in enumerate(batch):
            m = len(plan.assign.coords)
            tile, info = _make_tile(scene, plan, agg, slice(offset, offset + m), samples, cfg, layout)
            order = np.argsort(-agg.frame_hits[:, t], kind="stable")
            order = order[agg.frame_hits[order, t] >= cfg.views.min_visible_samples][: cfg.views.count]
            extent = np.array([cfg.crop.tile_size_m] * 2 + [cfg.L * cfg.voxel_size])
            tv = build_views(frames, order, plan.origin, extent, cfg.views)
            info["num_views"] = len(tv)
            tiles.append(tile)
            views.append(tv)
            report["tiles"].append(info)
            offset += m
        timings["tiles_and_views_s"] += time.perf_counter() - t1
    report.update(num_tiles=len(tiles), seconds=time.perf_counter() - t0)
    return SceneVoxels(tiles, views, report, skipped)


def _aggregate_batch(batch: list[_TilePlan], samples: SurfaceSamples, frames, features, cfg, layout):
    # Tile by tile, voxel by voxel (x-major): spatially coherent chunks that frames can cull.
    order = [np.argsort(p.assign.inverse, kind="stable") for p in batch]
    idx = np.concatenate([p.samples[o] for p, o in zip(batch, order)])
    offsets = np.cumsum([0] + [len(p.assign.coords) for p in batch])
    groups = np.concatenate([(p.assign.inverse[o] + offsets[t]).astype(np.int32) for t, (p, o) in enumerate(zip(batch, order))])
    view_groups = np.concatenate([np.full(len(p.samples), t, np.int32) for t, p in enumerate(batch)])
    return aggregate(
        samples.xyz[idx], samples.normal[idx], frames, features, cfg.aggregation,
        groups=groups, num_groups=int(offsets[-1]), view_groups=view_groups, num_view_groups=len(batch), layout=layout,
    )


def _make_tile(
    scene: Scene, plan: _TilePlan, agg, sl: slice, samples: SurfaceSamples, cfg, layout
) -> tuple[VoxelTile, dict]:
    a = plan.assign
    m = len(a.coords)
    feats = agg.feats[sl]
    overflow = int((np.abs(feats) > FP16_MAX).sum())
    feats = np.clip(feats, -FP16_MAX, FP16_MAX).astype(np.float16)
    semantic = agg.semantic[sl].copy()
    confidence = agg.confidence[sl]
    unseen = agg.num_obs[sl] == 0
    filled = 0
    if cfg.fill_unvoted_semantics and samples.semantic is not None:
        unvoted = confidence == 0
        if unvoted.any():
            votes = np.bincount(a.inverse * NUM_CLASSES + samples.semantic[plan.samples], minlength=m * NUM_CLASSES)
            majority = votes.reshape(m, NUM_CLASSES).argmax(axis=1).astype(np.uint8)
            semantic[unvoted] = majority[unvoted]
            filled = int(unvoted.sum())
    clipped = a.clipped_above + a.clipped_below
    counts = {
        "num_voxels": m,
        "num_samples": plan.num_samples,
        "clipped_above": a.clipped_above,
        "clipped_below": a.clipped_below,
        "clipped_fraction": clipped / max(plan.num_samples, 1),
        "dropped_sparse_samples": a.dropped_sparse,
        "unseen_voxels": int(unseen.sum()),
        "unseen_fraction": float(unseen.mean()),
        "semantics_filled_from_mesh": filled,
        "fp16_overflow_values": overflow,
    }
    meta = {
        "scene_id": scene.scene_id,
        "biome": scene_biome(scene.metadata),
        "L": cfg.L,
        "voxel_size_m": cfg.voxel_size,
        "origin_m": [float(v) for v in plan.origin],
        "feature_layout": layout_to_json(layout),
        "counts": counts,
        "extra": {"row": plan.spec.row, "col": plan.spec.col, "tile_size_m": plan.spec.size_m,
                  **({"georef": georef} if (georef := scene_georef(scene.metadata)) else {})},
    }
    if feats.shape[1] != layout_channels(layout):
        raise ValueError(f"features have {feats.shape[1]} channels, layout expects {layout_channels(layout)}")
    tile = VoxelTile(plan.spec.tile_id, a.coords, feats, semantic, confidence, meta)
    info = {"tile_id": tile.tile_id, "z0": float(plan.origin[2]), **counts, "class_hist": class_histogram(semantic)}
    if unseen.any():
        log.info("tile %s: %d of %d voxels unseen by any frame", tile.tile_id, unseen.sum(), m)
    return tile, info
