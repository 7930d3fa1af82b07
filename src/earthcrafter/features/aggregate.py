"""Score aggregation of per-pixel features and semantics onto surface points (after VCD-Texture).

Every surface point is projected into every frame. An observation counts when the point lies in
the image, in front of the camera, and passes the depth test ``|z - depth[pixel]| <= rel_tol * z +
abs_tol`` against the frame's depth map (nearest pixel); so a point hidden under a roof gets nothing
from a frame that sees the roof. Each observation is weighted by its view score::

    w = cos^a * d^-b * min(1, border / border_px) * exp(-2 (residual / tol)^2)

- ``cos``: |cosine| between the surface normal and the viewing ray (frontal views count most);
  observations with ``cos < min_cos`` (grazing) are dropped,
- ``d``: distance from the camera centre (closer = finer pixels),
- ``border``: distance in pixels from the projected point to the nearest image edge,
- ``residual``: depth-test residual (how far the pixel's surface is from the point), the
  "distance between projected pixel and voxel" term.

Features: weighted mean of the sampled feature maps (nearest or bilinear). Semantics: weighted vote
over the frames' class maps (or a segmenter's, see :mod:`earthcrafter.features.segmenters`);
``confidence`` = winning weight / total vote weight. Results can be pooled into groups (e.g. voxels):
all observations of all points of a group are averaged together.

Points never observed have ``num_obs == 0``; they are reported, never dropped. Frames without a
camera, without a depth map or with NaN depth are skipped and listed with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Union

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from earthcrafter.features.segmenters import get_segmenter, segment
from earthcrafter.geometry.cameras import Camera
from earthcrafter.geometry.faces import face_normals
from earthcrafter.io.scene import Frame, Mesh
from earthcrafter.semantics import NUM_CLASSES

log = logging.getLogger(__name__)

FLOAT32_MAP_BYTES = 1 << 30  # feature maps up to this size are converted to float32 once per frame
FeatureSource = Union[Sequence[np.ndarray], Callable[[int, Frame], np.ndarray]]


class AggregationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    depth_rel_tol: float = Field(0.01, ge=0, description="depth test tolerance, fraction of camera z")
    depth_abs_tol: float = Field(0.1, ge=0, description="depth test tolerance, metres")
    incidence_power: float = Field(2.0, ge=0)
    distance_power: float = Field(1.0, ge=0)
    border_px: float = Field(4.0, ge=0, description="weight ramps from 0 at the image edge to 1 at this many pixels")
    residual_weight: bool = True
    min_cos: float = Field(0.05, ge=0, lt=1)
    sampling: Literal["nearest", "bilinear"] = "nearest"
    chunk_points: int = Field(65_536, ge=1)
    segmenter: str | None = Field(
        None, description="segmenter for frames without semantic maps; None: they do not vote"
    )
    progress: bool = True


# --------------------------------------------------------------------------- surface samples

@dataclass
class SurfaceSamples:
    xyz: np.ndarray  # [N, 3] float64, world metres
    normal: np.ndarray  # [N, 3] float32, unit face normal (mesh winding; sign irrelevant here)
    face: np.ndarray  # [N] int64, source face
    semantic: np.ndarray | None = None  # [N] uint8, the face's class

    def __len__(self) -> int:
        return len(self.xyz)

    def subset(self, idx: np.ndarray) -> "SurfaceSamples":
        sem = None if self.semantic is None else self.semantic[idx]
        return SurfaceSamples(self.xyz[idx], self.normal[idx], self.face[idx], sem)


def face_areas_normals(mesh: Mesh) -> tuple[np.ndarray, np.ndarray]:
    """Face areas [F] (m²) and unit normals [F, 3] float32 (zero-area faces: zero normal)."""
    cr = face_normals(mesh.vertices, mesh.faces)
    norm = np.linalg.norm(cr, axis=1)
    normals = cr / np.maximum(norm, 1e-12)[:, None]
    return 0.5 * norm, normals.astype(np.float32)


def sample_surface(
    mesh: Mesh, density: float, seed: int = 0, faces: np.ndarray | None = None, max_samples: int = 200_000_000
) -> SurfaceSamples:
    """Area-weighted random points on the mesh (or on ``faces`` of it), ``density`` per m².

    Stratified by face: face i gets ``floor(A_i * density + U)`` points (U uniform in [0, 1)),
    so every face's expected count is exact and large faces are never starved. (Mesh metrics
    draw a fixed number of points instead: ``earthcrafter.evaluation.mesh_metrics.sample_surface``.)
    """
    if density <= 0:
        raise ValueError(f"sample_surface: density must be > 0, got {density}")
    rng = np.random.default_rng(seed)
    face_ids = np.arange(len(mesh.faces)) if faces is None else np.asarray(faces, dtype=np.int64)
    sub = Mesh(mesh.vertices, mesh.faces[face_ids])
    area, normal = face_areas_normals(sub)
    counts = np.floor(area * density + rng.random(len(area))).astype(np.int64)
    total = int(counts.sum())
    if total > max_samples:
        raise ValueError(f"sample_surface: {total} samples exceed max_samples={max_samples}; lower the density")
    owner = np.repeat(np.arange(len(face_ids)), counts)
    r1 = np.sqrt(rng.random(total))
    r2 = rng.random(total)
    a, b, c = 1 - r1, r1 * (1 - r2), r1 * r2
    tri = sub.faces[owner]
    v = mesh.vertices
    xyz = a[:, None] * v[tri[:, 0]] + b[:, None] * v[tri[:, 1]] + c[:, None] * v[tri[:, 2]]
    sem = None if mesh.face_semantic is None else mesh.face_semantic[face_ids[owner]]
    return SurfaceSamples(xyz, normal[owner], face_ids[owner], sem)


# --------------------------------------------------------------------------- aggregation

@dataclass
class Aggregate:
    """Aggregated features and semantics per group (per point when no groups were given)."""

    feats: np.ndarray  # [G, C] float32 weighted mean; 0 where unseen
    semantic: np.ndarray  # [G] uint8 vote winner; 0 where no vote
    confidence: np.ndarray  # [G] float32 winning weight / total vote weight; 0 where no vote
    weight: np.ndarray  # [G] float32 total view weight
    num_obs: np.ndarray  # [G] int64 observations (point x frame)
    point_obs: np.ndarray  # [N] int32 frames that saw each point
    frame_hits: np.ndarray  # [F, T] int64 visible points per frame and view group
    frame_names: list[str]
    skipped_frames: list[tuple[str, str]] = field(default_factory=list)  # (frame, reason)
    frames_without_semantics: int = 0

    @property
    def unseen(self) -> np.ndarray:
        return self.num_obs == 0

    def summary(self) -> dict:
        return {
            "groups": int(len(self.num_obs)),
            "unseen_groups": int(self.unseen.sum()),
            "points": int(len(self.point_obs)),
            "unseen_points": int((self.point_obs == 0).sum()),
            "frames_used": len(self.frame_names) - len(self.skipped_frames),
            "frames_skipped": len(self.skipped_frames),
            "frames_without_semantics": self.frames_without_semantics,
        }


def frame_problem(frame: Frame) -> str | None:
    """Why a frame cannot be used for aggregation, or None."""
    if not isinstance(getattr(frame, "camera", None), Camera):
        return "no camera"
    if frame.depth is None:
        return "no depth map"
    if np.isnan(frame.depth).any():
        return "NaN depth"
    return None


def view_weights(
    cos: np.ndarray, dist: np.ndarray, border: np.ndarray, residual: np.ndarray, tol: np.ndarray, cfg: AggregationConfig
) -> np.ndarray:
    """The view score of observations (see module docstring); all inputs [n]."""
    w = np.power(cos, cfg.incidence_power) * np.power(dist, -cfg.distance_power)
    if cfg.border_px > 0:
        w = w * np.clip(border / cfg.border_px, 0.0, 1.0)
    if cfg.residual_weight:
        w = w * np.exp(-2.0 * (residual / np.maximum(tol, 1e-12)) ** 2)
    return np.where(cos >= cfg.min_cos, w, 0.0)


def _pixel_taps(u: np.ndarray, v: np.ndarray, row: np.ndarray, col: np.ndarray, H: int, W: int, mode: str):
    """Which pixels (flat index [n, k]) a sample at (u, v) reads, with what weights ([n, k])."""
    if mode == "nearest":
        return (row * W + col)[:, None], np.ones((len(u), 1), np.float32)
    x, y = u - 0.5, v - 0.5  # pixel centres sit at integer + 0.5
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    fx, fy = x - x0, y - y0
    xs = np.clip(np.stack([x0, x0 + 1, x0, x0 + 1], 1), 0, W - 1)
    ys = np.clip(np.stack([y0, y0, y0 + 1, y0 + 1], 1), 0, H - 1)
    tw = np.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], 1).astype(np.float32)
    return ys * W + xs, tw


def _features_for(source: FeatureSource, i: int, frame: Frame) -> np.ndarray:
    fmap = source(i, frame) if callable(source) else source[i]
    H, W = frame.camera.height, frame.camera.width
    if fmap.ndim != 3 or fmap.shape[:2] != (H, W):
        raise ValueError(f"features of frame {frame.name!r}: expected [{H}, {W}, C], got {fmap.shape}")
    return fmap


def _semantics_for(frame: Frame, segmenter) -> np.ndarray | None:
    if frame.semantic is not None:
        sem = frame.semantic
        if sem.size and sem.max() >= NUM_CLASSES:
            raise ValueError(f"frame {frame.name!r}: semantic map holds class {sem.max()} >= {NUM_CLASSES}")
        return sem
    return None if segmenter is None else segment(segmenter, frame.rgb, frame.name)


class _Accumulator:
    """Running weighted sums per group. Each frame's observations become a sparse matrix
    (groups x pixels) applied to the feature map, so features are read once per pixel tap."""

    def __init__(self, num_groups: int, channels: int, num_points: int, num_frames: int, num_view_groups: int):
        self.feat = np.zeros((num_groups, channels), np.float32)
        self.weight = np.zeros(num_groups, np.float64)
        self.count = np.zeros(num_groups, np.int64)
        self.votes = np.zeros((num_groups, NUM_CLASSES), np.float32)
        self.point_obs = np.zeros(num_points, np.int32)
        self.frame_hits = np.zeros((num_frames, num_view_groups), np.int64)

    def add(
        self, g: np.ndarray, w: np.ndarray, pix: np.ndarray, tw: np.ndarray, fmap: np.ndarray, cls: np.ndarray | None
    ) -> None:
        """Observations: groups ``g`` [n], view weights ``w`` [n], pixel taps ``pix`` / ``tw`` [n, k]
        into ``fmap`` [H*W, C], classes ``cls`` [n] or None."""
        if len(g) > 1 and (g[1:] < g[:-1]).any():
            o = np.argsort(g, kind="stable")
            g, w, pix, tw = g[o], w[o], pix[o], tw[o]
            cls = None if cls is None else cls[o]
        lo, hi = int(g[0]), int(g[-1]) + 1
        if hi - lo <= 2 * len(g):  # the usual case (points ordered by group): update one contiguous block
            rows, block = g - lo, slice(lo, hi)
        else:
            first = np.r_[True, g[1:] != g[:-1]]
            rows, block = np.cumsum(first) - 1, g[first]
        R = int(rows[-1]) + 1
        k = pix.shape[1]
        indptr = np.r_[0, np.cumsum(np.bincount(rows, minlength=R))] * k
        values = (w[:, None] * tw).ravel().astype(np.float32)
        if fmap.dtype == np.float32:  # the whole map is ready: address pixels directly
            M = sp.csr_matrix((values, pix.ravel(), indptr), shape=(R, len(fmap)))
            self.feat[block] += M @ fmap
        else:  # convert only the pixels this chunk reads
            used, cols = np.unique(pix.ravel(), return_inverse=True)
            M = sp.csr_matrix((values, cols.ravel(), indptr), shape=(R, len(used)))
            self.feat[block] += M @ fmap[used].astype(np.float32)
        self.weight[block] += np.bincount(rows, weights=w, minlength=R)
        self.count[block] += np.bincount(rows, minlength=R)
        if cls is not None:  # few (group, class) pairs among R x 25: scatter them directly
            group = rows + lo if isinstance(block, slice) else block[rows]
            np.add.at(self.votes.reshape(-1), group.astype(np.int64) * NUM_CLASSES + cls, w.astype(np.float32))


def aggregate(
    points: np.ndarray,
    normals: np.ndarray,
    frames: Sequence[Frame],
    features: FeatureSource,
    cfg: AggregationConfig | None = None,
    groups: np.ndarray | None = None,
    num_groups: int | None = None,
    view_groups: np.ndarray | None = None,
    num_view_groups: int = 1,
    layout: dict[str, slice] | None = None,
) -> Aggregate:
    """Aggregate ``features`` (per frame [H, W, C]: a sequence, or a callable ``(i, frame)``) onto
    ``points`` [N, 3] with ``normals`` [N, 3].

    ``groups`` [N] (ints < ``num_groups``) pools points, e.g. by voxel; default one group per point.
    ``view_groups`` [N] (ints < ``num_view_groups``) only splits ``frame_hits``, e.g. by tile.
    With ``layout``, the ``f_n`` slice is renormalised to unit length after averaging.
    """
    cfg = cfg or AggregationConfig()
    points = np.asarray(points, dtype=np.float64)
    normals = np.asarray(normals, dtype=np.float32)
    n = len(points)
    if points.shape != (n, 3) or normals.shape != (n, 3):
        raise ValueError(f"aggregate: points {points.shape} and normals {normals.shape} must both be [N, 3]")
    if groups is None:
        groups, num_groups = np.arange(n, dtype=np.int64), n
    groups = np.asarray(groups)  # any integer dtype (int32 halves the memory of big batches)
    num_groups = int(groups.max()) + 1 if num_groups is None and n else int(num_groups or 0)
    bad_groups = not np.issubdtype(groups.dtype, np.integer) or groups.shape != (n,)
    if bad_groups or (n and (groups.min() < 0 or groups.max() >= num_groups)):
        raise ValueError(f"aggregate: groups must be [N] ints in [0, {num_groups}), got {groups.dtype} {groups.shape}")
    view_groups = np.zeros(n, np.int32) if view_groups is None else np.asarray(view_groups)
    if not np.issubdtype(view_groups.dtype, np.integer) or view_groups.shape != (n,):
        raise ValueError(f"aggregate: view_groups must be [N] ints, got {view_groups.dtype} {view_groups.shape}")
    segmenter = get_segmenter(cfg.segmenter) if cfg.segmenter else None

    # Chunk bounding boxes let a frame skip chunks it cannot see (points given in spatial order cull best).
    starts = range(0, n, cfg.chunk_points)
    boxes = [(points[s : s + cfg.chunk_points].min(0), points[s : s + cfg.chunk_points].max(0)) for s in starts]

    acc: _Accumulator | None = None
    skipped: list[tuple[str, str]] = []
    unlabeled = 0
    for i, frame in enumerate(tqdm(frames, desc="aggregate", leave=False, disable=not cfg.progress)):
        problem = frame_problem(frame)
        if problem:
            skipped.append((frame.name, problem))
            log.warning("aggregate: skipping frame %r: %s", frame.name, problem)
            continue
        fmap = _features_for(features, i, frame)
        if acc is None:
            acc = _Accumulator(num_groups, fmap.shape[2], n, len(frames), num_view_groups)
        elif fmap.shape[2] != acc.feat.shape[1]:
            raise ValueError(
                f"features of frame {frame.name!r}: {fmap.shape[2]} channels, expected {acc.feat.shape[1]}"
            )
        sem = _semantics_for(frame, segmenter)
        unlabeled += sem is None
        flat = fmap.reshape(-1, fmap.shape[2])
        if flat.dtype != np.float32 and n >= len(flat) and flat.size * 4 <= FLOAT32_MAP_BYTES:
            flat = flat.astype(np.float32)  # points outnumber pixels: convert once, not per chunk
        for s, (lo, hi) in zip(starts, boxes):
            if not _box_may_be_visible(frame.camera, lo, hi):
                continue
            _aggregate_chunk(acc, i, frame, flat, sem, points, normals, groups, view_groups, s, cfg)

    if acc is None:  # no usable frame: everything unseen, zero features
        channels = max((s.stop for s in layout.values()), default=0) if layout else 0
        acc = _Accumulator(num_groups, channels, n, len(frames), num_view_groups)
    return _finish(acc, [f.name for f in frames], skipped, unlabeled, layout)


def _box_may_be_visible(cam: Camera, lo: np.ndarray, hi: np.ndarray) -> bool:
    """False only when the axis-aligned box [lo, hi] surely projects outside the image."""
    corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    c = corners @ cam.world_to_camera[:3, :3].T + cam.world_to_camera[:3, 3]
    if (c[:, 2] <= 1e-6).all():
        return False
    if (c[:, 2] <= 1e-6).any():
        return True  # straddles the camera plane: keep (conservative)
    u = c[:, 0] / c[:, 2] * cam.K[0, 0] + cam.K[0, 2]
    v = c[:, 1] / c[:, 2] * cam.K[1, 1] + cam.K[1, 2]
    return not ((u < 0).all() or (u >= cam.width).all() or (v < 0).all() or (v >= cam.height).all())


def _aggregate_chunk(acc, i, frame, fmap, sem, points, normals, groups, view_groups, s, cfg) -> None:
    cam = frame.camera
    H, W = cam.height, cam.width
    p = points[s : s + cfg.chunk_points]
    R, t = cam.world_to_camera[:3, :3], cam.world_to_camera[:3, 3]
    pc = np.einsum("ij,kj->ik", p, R) + t  # einsum: skinny BLAS matmuls thrash threads
    z = pc[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = pc[:, 0] / z * cam.K[0, 0] + cam.K[0, 2]
        v = pc[:, 1] / z * cam.K[1, 1] + cam.K[1, 2]
    idx = np.flatnonzero((z > 1e-6) & (u >= 0) & (u < W) & (v >= 0) & (v < H))
    if not len(idx):
        return
    u, v, z = u[idx], v[idx], z[idx]
    col = np.minimum(u.astype(np.int64), W - 1)
    row = np.minimum(v.astype(np.int64), H - 1)
    residual = z - frame.depth[row, col]
    tol = cfg.depth_rel_tol * z + cfg.depth_abs_tol
    vis = np.abs(residual) <= tol  # inf depth (sky) fails
    ray = p[idx] - cam.center
    dist = np.linalg.norm(ray, axis=1)
    cos = np.abs(np.einsum("ij,ij->i", normals[s + idx], ray)) / np.maximum(dist, 1e-12)
    border = np.minimum.reduce([u, W - u, v, H - v])
    w = view_weights(cos, dist, border, residual, tol, cfg)
    keep = vis & (w > 0)
    if not keep.any():
        return
    idx, u, v, row, col, w = idx[keep], u[keep], v[keep], row[keep], col[keep], w[keep]
    pix, tw = _pixel_taps(u, v, row, col, H, W, cfg.sampling)
    cls = None if sem is None else sem[row, col].astype(np.int64)
    acc.add(groups[s + idx], w, pix, tw, fmap, cls)
    acc.point_obs[s + idx] += 1  # idx is unique within a chunk
    acc.frame_hits[i] += np.bincount(view_groups[s + idx], minlength=acc.frame_hits.shape[1])


def _finish(acc: _Accumulator, names, skipped, unlabeled, layout) -> Aggregate:
    weight = acc.weight
    seen = weight > 0
    feats = acc.feat  # normalised in place: unseen rows are already 0
    feats[seen] /= weight[seen, None].astype(np.float32)
    if layout and "f_n" in layout:
        nrm = feats[:, layout["f_n"]]
        length = np.linalg.norm(nrm, axis=1, keepdims=True)
        feats[:, layout["f_n"]] = np.where(length > 1e-8, nrm / np.maximum(length, 1e-8), 0.0)
    votes = acc.votes
    total = votes.sum(axis=1)
    semantic = votes.argmax(axis=1).astype(np.uint8)
    confidence = np.zeros(len(total), np.float32)
    voted = total > 0
    confidence[voted] = votes[voted].max(axis=1) / total[voted]
    semantic[~voted] = 0
    return Aggregate(
        feats=feats,
        semantic=semantic,
        confidence=confidence,
        weight=weight.astype(np.float32),
        num_obs=acc.count,
        point_obs=acc.point_obs,
        frame_hits=acc.frame_hits,
        frame_names=list(names),
        skipped_frames=skipped,
        frames_without_semantics=unlabeled,
    )
