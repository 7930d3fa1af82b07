"""Voxel training tiles on disk: one Parquet file per tile, a views NPZ beside it, a manifest.

``<tile_id>.parquet`` (pyarrow), one row per occupied voxel:

============  =====================================  ==========================================
column        type                                   meaning
============  =====================================  ==========================================
x, y, z       uint16                                 voxel index in the tile's L^3 grid
feats         fixed_size_list<float16>[C]            aggregated features (layout in metadata)
semantic      uint8                                  class (:mod:`earthcrafter.semantics`)
confidence    float16                                winning vote share; 0 = no labelled view
============  =====================================  ==========================================

File key-value metadata (each value JSON): ``format``, ``tile_id``, ``scene_id``, ``biome``, ``L``,
``voxel_size_m``, ``origin_m`` (world xyz of the grid corner; voxel ijk has its centre at
``origin_m + (ijk + 0.5) * voxel_size_m``), ``feature_layout`` ({name: [start, stop]}), ``counts``
and ``extra`` (free-form).

``<tile_id>.views.npz``: ground-truth views of the tile for texture training: ``rgb`` uint8
[V, h, w, 3], ``mask`` bool [V, h, w] (pixel's surface point lies inside the tile's box),
``depth`` float32 [V, h, w] (camera z, inf = nothing), ``K`` [V, 3, 3] (pixels, rescaled to h x w),
``world_to_camera`` [V, 4, 4] in the TILE-LOCAL metric frame (origin at the grid corner, so voxel
centres are at ``(ijk + 0.5) * voxel_size_m``), ``names`` [V] source frame names.

The manifest (Parquet) has one row per tile; the train/val split is by scene.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, model_validator

from earthcrafter.features.layout import layout_channels, layout_from_json, layout_to_json
from earthcrafter.io.atomic import atomic_path
from earthcrafter.io.parquet import (
    TileFormatError,
    fail as _fail,
    fixed_list,
    fixed_list_values,
    read_checked_table,
    read_json_meta,
    write_table_with_meta,
    xyz_columns,
    xyz_values,
)
from earthcrafter.semantics import CLASS_NAMES, NUM_CLASSES

TILE_FORMAT = "earthcrafter.voxel_tile/1"
META_KEYS = (
    "format", "tile_id", "scene_id", "biome", "L", "voxel_size_m", "origin_m", "feature_layout", "counts", "extra"
)
COLUMNS = ("x", "y", "z", "feats", "semantic", "confidence")


# --------------------------------------------------------------------------- tiles

@dataclass
class VoxelTile:
    """One voxelized tile. ``meta`` holds L, voxel_size_m, origin_m, feature_layout, scene_id, ..."""

    tile_id: str
    coords: np.ndarray  # [N, 3] int32, voxel ijk in [0, L)
    feats: np.ndarray  # [N, C] float16
    semantic: np.ndarray  # [N] uint8
    confidence: np.ndarray  # [N] float16
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.coords = np.asarray(self.coords).astype(np.int32, copy=False)
        self.feats = np.asarray(self.feats).astype(np.float16, copy=False)
        self.semantic = np.asarray(self.semantic).astype(np.uint8, copy=False)
        self.confidence = np.asarray(self.confidence).astype(np.float16, copy=False)
        n = len(self.coords)
        if self.coords.shape != (n, 3) or self.feats.ndim != 2 or len(self.feats) != n:
            raise ValueError(
                f"tile {self.tile_id}: coords {self.coords.shape} / feats {self.feats.shape} must be [N, 3] / [N, C]"
            )
        if self.semantic.shape != (n,) or self.confidence.shape != (n,):
            raise ValueError(
                f"tile {self.tile_id}: semantic {self.semantic.shape} / confidence {self.confidence.shape} "
                f"must be [{n}]"
            )

    def __len__(self) -> int:
        return len(self.coords)

    @property
    def L(self) -> int:
        return int(self.meta["L"])

    @property
    def voxel_size(self) -> float:
        return float(self.meta["voxel_size_m"])

    @property
    def origin(self) -> np.ndarray:
        return np.asarray(self.meta["origin_m"], dtype=np.float64)

    @property
    def georef(self) -> dict | None:
        """The scene's CRS and origin (earthcrafter.io.georef) for a tile of an imported scene, else None."""
        return self.meta.get("extra", {}).get("georef")

    @property
    def layout(self) -> dict[str, slice]:
        lay = self.meta["feature_layout"]
        return layout_from_json(lay) if isinstance(lay, str) else {k: slice(*v) for k, v in lay.items()}

    def centers_local(self) -> np.ndarray:
        """Voxel centres [N, 3] in the tile-local metric frame."""
        return (self.coords + 0.5) * self.voxel_size

    def centers_world(self) -> np.ndarray:
        return self.centers_local() + self.origin


def _full_meta(tile: VoxelTile) -> dict:
    meta = {"format": TILE_FORMAT, "tile_id": tile.tile_id, "extra": {}, **tile.meta}
    lay = meta.get("feature_layout")
    if isinstance(lay, dict):
        meta["feature_layout"] = layout_to_json({k: v if isinstance(v, slice) else slice(*v) for k, v in lay.items()})
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise ValueError(f"tile {tile.tile_id}: meta lacks {missing}")
    return meta


def write_tile(path: str | Path, tile: VoxelTile) -> Path:
    """Write ``tile`` to ``path`` atomically."""
    meta = _full_meta(tile)
    L = int(tile.meta["L"])
    if len(tile) and (tile.coords.min() < 0 or tile.coords.max() >= L):
        raise ValueError(f"tile {tile.tile_id}: coords outside [0, {L})")
    columns = {**xyz_columns(tile.coords), "feats": fixed_list(tile.feats), "semantic": pa.array(tile.semantic),
               "confidence": pa.array(tile.confidence)}  # fmt: skip
    return write_table_with_meta(path, pa.table(columns), meta)


def read_tile_meta(path: str | Path) -> dict:
    """The tile's metadata (validated), without reading the rows."""
    path = Path(path)
    meta = read_json_meta(path, META_KEYS, "voxel tile")
    if meta["format"] != TILE_FORMAT:
        _fail(path, "format", f"expected {TILE_FORMAT!r}, got {meta['format']!r}")
    if not isinstance(meta["L"], int) or not 1 <= meta["L"] <= 65535:
        _fail(path, "L", f"expected an int in [1, 65535], got {meta['L']!r}")
    if not isinstance(meta["voxel_size_m"], (int, float)) or not meta["voxel_size_m"] > 0:
        _fail(path, "voxel_size_m", f"expected a positive number, got {meta['voxel_size_m']!r}")
    o = meta["origin_m"]
    if not (isinstance(o, list) and len(o) == 3 and all(isinstance(v, (int, float)) for v in o)):
        _fail(path, "origin_m", f"expected [x, y, z], got {o!r}")
    try:
        layout = layout_from_json(meta["feature_layout"]) if isinstance(meta["feature_layout"], str) else None
    except ValueError as e:
        _fail(path, "feature_layout", str(e))
    if layout is None:
        _fail(path, "feature_layout", "expected a JSON string of {name: [start, stop]}")
    return meta


def read_tile(path: str | Path, features: bool = True) -> VoxelTile:
    """Read and validate a tile; any problem raises :class:`TileFormatError` naming file and field.

    ``features=False`` skips the feature column (most of the file; the flows' conditions need only
    the voxels and their classes): ``feats`` then has no channels.
    """
    path = Path(path)
    meta = read_tile_meta(path)
    C = layout_channels(layout_from_json(meta["feature_layout"]))
    expected = {"x": pa.uint16(), "y": pa.uint16(), "z": pa.uint16(), "feats": pa.list_(pa.float16(), C),
                "semantic": pa.uint8(), "confidence": pa.float16()}  # fmt: skip
    if not features:
        del expected["feats"]
    table = read_checked_table(path, expected, only_expected=not features)
    coords = xyz_values(table)
    feats = fixed_list_values(table, "feats", C, path) if features else np.zeros((len(coords), 0), np.float16)
    semantic = table.column("semantic").to_numpy()
    confidence = table.column("confidence").to_numpy()
    L = meta["L"]
    if len(coords) and coords.max() >= L:
        _fail(path, "x/y/z", f"voxel index {coords.max()} >= L={L}")
    keys = (coords[:, 0].astype(np.int64) * L + coords[:, 1]) * L + coords[:, 2]
    if not (np.diff(keys) > 0).all():  # tiles are written in (x, y, z) order: one pass, no sort
        duplicates = int((np.diff(np.sort(keys)) == 0).sum())
        if duplicates:
            _fail(path, "x/y/z", f"{duplicates} duplicate voxels")
    if not np.isfinite(feats).all():
        _fail(path, "feats", "non-finite values")
    if len(semantic) and semantic.max() >= NUM_CLASSES:
        _fail(path, "semantic", f"class {semantic.max()} >= {NUM_CLASSES}")
    if len(confidence) and not ((confidence >= 0) & (confidence <= 1)).all():
        _fail(path, "confidence", "values outside [0, 1]")
    tile_id = meta.pop("tile_id")
    meta.pop("format")
    return VoxelTile(tile_id, coords, feats, semantic, confidence, meta)


def read_tile_coords(path: str | Path) -> tuple[np.ndarray, dict]:
    """Occupancy-only view (StructVAE): voxel coords [N, 3] int32 and the metadata."""
    path = Path(path)
    meta = read_tile_meta(path)
    coords = xyz_values(pq.read_table(path, columns=["x", "y", "z"]))
    if len(coords) and coords.max() >= meta["L"]:
        _fail(path, "x/y/z", f"voxel index {coords.max()} >= L={meta['L']}")
    return coords, meta


# --------------------------------------------------------------------------- views

@dataclass
class TileViews:
    rgb: np.ndarray  # [V, h, w, 3] uint8
    mask: np.ndarray  # [V, h, w] bool
    depth: np.ndarray  # [V, h, w] float32
    K: np.ndarray  # [V, 3, 3] float64
    world_to_camera: np.ndarray  # [V, 4, 4] float64, tile-local frame
    names: list[str]

    def __post_init__(self) -> None:
        V = len(self.names)
        h, w = self.rgb.shape[1:3] if self.rgb.ndim == 4 else (0, 0)
        shapes = {
            "rgb": (self.rgb.shape, (V, h, w, 3)),
            "mask": (self.mask.shape, (V, h, w)),
            "depth": (self.depth.shape, (V, h, w)),
            "K": (self.K.shape, (V, 3, 3)),
            "world_to_camera": (self.world_to_camera.shape, (V, 4, 4)),
        }
        for name, (got, want) in shapes.items():
            if got != want:
                raise ValueError(f"TileViews.{name}: shape {got}, expected {want}")

    def __len__(self) -> int:
        return len(self.names)

    @classmethod
    def empty(cls, height: int, width: int) -> "TileViews":
        return cls(
            np.zeros((0, height, width, 3), np.uint8),
            np.zeros((0, height, width), bool),
            np.zeros((0, height, width), np.float32),
            np.zeros((0, 3, 3)),
            np.zeros((0, 4, 4)),
            [],
        )


def tile_views_path(tile_path: str | Path, tile_id: str) -> Path:
    """Where a tile's views live: ``<tile_id>.views.npz`` beside its Parquet file."""
    return Path(tile_path).with_name(f"{tile_id}.views.npz")


def write_views(path: str | Path, views: TileViews) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(
            fh,
            rgb=views.rgb.astype(np.uint8),
            mask=views.mask.astype(bool),
            depth=views.depth.astype(np.float32),
            K=views.K.astype(np.float64),
            world_to_camera=views.world_to_camera.astype(np.float64),
            names=np.array(views.names, dtype=str),
        )
    return path


def read_views(path: str | Path) -> TileViews:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tile views not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as e:
        raise TileFormatError(f"{path}: not a readable NPZ file ({e})") from e
    dtypes = {"rgb": np.uint8, "mask": np.bool_, "depth": np.float32, "K": np.float64, "world_to_camera": np.float64}
    for name, dt in dtypes.items():
        if name not in data:
            _fail(path, name, "array missing")
        if data[name].dtype != dt:
            _fail(path, name, f"expected dtype {np.dtype(dt)}, got {data[name].dtype}")
    if "names" not in data:
        _fail(path, "names", "array missing")
    try:
        names = [str(n) for n in data["names"]]
        return TileViews(data["rgb"], data["mask"], data["depth"], data["K"], data["world_to_camera"], names)
    except ValueError as e:
        raise TileFormatError(f"{path}: {e}") from e


# --------------------------------------------------------------------------- manifest and split

class SplitConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    val_fraction: float = Field(0.1, ge=0, le=1)
    seed: int = 0
    by: Literal["scene", "block"] = Field(
        "scene", description="scene: all tiles of a scene share a split (scenes are far apart: no tile of one "
        "overlaps another's). block: squares of block_size_m inside each scene, each split by its own hash, for "
        "a few large surveys (one scene cannot be split by scene); training tiles that overlap a validation "
        "tile become split 'buffer' (kept in the manifest, used by neither)")
    block_size_m: float = Field(600.0, gt=0, description="edge of the blocks of split.by = block (metres)")
    stratify_by: Literal["biome"] | None = Field(
        None, description="biome: every biome with >= 2 scenes sends round(val_fraction x n) of them (at least 1) "
        "to val and keeps at least 1 in train; a biome with one scene trains. None: each scene by its own hash")

    @model_validator(mode="after")
    def _check(self) -> SplitConfig:
        if self.by == "block" and self.stratify_by is not None:
            raise ValueError("split.stratify_by works on scenes: use it with split.by = scene")
        return self


def _scene_hash(scene_id: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}/{scene_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_for_scene(scene_id: str, val_fraction: float, seed: int = 0) -> str:
    """'train' or 'val' from a seeded hash of the scene id: all tiles of a scene share a split,
    and a scene keeps its split when other scenes are added or removed."""
    return "val" if _scene_hash(scene_id, seed) < val_fraction else "train"


def block_splits(tiles: pd.DataFrame, val_fraction: float, block_size_m: float, seed: int = 0) -> pd.Series:
    """Split per block: each tile goes with the ``block_size_m`` square (of its scene) that holds its
    centre, 'val' or 'train' by the block's seeded hash (stable when tiles or scenes are added). A
    training tile whose footprint overlaps a validation tile's (tiles overlap when the stride is
    below the tile size) becomes 'buffer': it would show validation ground to the model.
    ``tiles``: columns scene_id, x0, y0, extent_m (tile corner and edge, scene-local metres)."""
    missing = [c for c in ("scene_id", "x0", "y0", "extent_m") if c not in tiles.columns]
    if missing:
        raise ValueError(f"split.by = block needs the manifest columns {missing} (tile corners and edges, written "
                         "by voxelization): re-run `kedro run --pipelines=voxelization`")  # fmt: skip
    if tiles.empty:
        return pd.Series([], index=tiles.index, dtype=object)
    cx = ((tiles["x0"] + tiles["extent_m"] / 2) // block_size_m).astype(int)
    cy = ((tiles["y0"] + tiles["extent_m"] / 2) // block_size_m).astype(int)
    split = pd.Series([split_for_scene(f"{sc}/block_{i}_{j}", val_fraction, seed)
                       for sc, i, j in zip(tiles["scene_id"], cx, cy)], index=tiles.index)  # fmt: skip
    for _, t in tiles.groupby("scene_id"):
        val, train = t[split[t.index] == "val"], t[split[t.index] == "train"]
        if val.empty or train.empty:
            continue
        lo = train[["x0", "y0"]].to_numpy()[:, None]
        hi = lo + train["extent_m"].to_numpy()[:, None, None]
        vlo = val[["x0", "y0"]].to_numpy()[None]
        vhi = vlo + val["extent_m"].to_numpy()[None, :, None]
        overlaps = ((lo < vhi) & (vlo < hi)).all(-1).any(1)  # open intervals: tiles that only touch do not overlap
        split[train.index[overlaps]] = "buffer"
    return split


def stratified_splits(scene_biomes: dict[str, str], val_fraction: float, seed: int = 0) -> dict[str, str]:
    """Scene -> split with validation scenes drawn per biome (lowest seeded hashes first), so that
    validation holds only biomes the training split also has. A scene's split can change when
    scenes of its biome are added or removed."""
    by_biome: dict[str, list[str]] = {}
    for scene, biome in scene_biomes.items():
        by_biome.setdefault(biome, []).append(scene)
    out = {}
    for scenes in by_biome.values():
        ranked = sorted(scenes, key=lambda sc: _scene_hash(sc, seed))
        n_val = 0 if len(ranked) < 2 or val_fraction == 0 else min(max(1, round(val_fraction * len(ranked))), len(ranked) - 1)
        out.update({sc: "val" if i < n_val else "train" for i, sc in enumerate(ranked)})
    return out


def class_histogram(semantic: np.ndarray) -> dict[str, int]:
    counts = np.bincount(semantic, minlength=NUM_CLASSES)
    return {CLASS_NAMES[i]: int(c) for i, c in enumerate(counts) if c}


def manifest_row(tile: VoxelTile, tile_path, views_path, num_views: int) -> dict:
    counts = tile.meta.get("counts", {})
    hist = class_histogram(tile.semantic)
    return {
        "tile_id": tile.tile_id,
        "scene_id": tile.meta["scene_id"],
        "biome": tile.meta.get("biome", "unknown"),
        "num_voxels": len(tile),
        "path": str(tile_path),
        "views_path": str(views_path),
        "num_views": int(num_views),
        "x0": float(tile.origin[0]),
        "y0": float(tile.origin[1]),
        "z0": float(tile.origin[2]),
        "extent_m": float(tile.L * tile.voxel_size),
        "clipped_fraction": float(counts.get("clipped_fraction", 0.0)),
        "unseen_fraction": float(counts.get("unseen_fraction", 0.0)),
        "dominant_class": max(hist, key=hist.get) if hist else CLASS_NAMES[0],
        "class_hist": json.dumps(hist),
    }


def build_manifest(rows: list[dict], split: SplitConfig | None = None) -> pd.DataFrame:
    """Manifest table from :func:`manifest_row` rows, with the ``split`` column (by scene, or by
    block within scenes: :class:`SplitConfig`)."""
    split = split or SplitConfig()
    df = pd.DataFrame(rows, columns=list(rows[0]) if rows else ["tile_id", "scene_id", "num_voxels"])
    if df["tile_id"].duplicated().any():
        raise ValueError(f"manifest: duplicate tile ids {df['tile_id'][df['tile_id'].duplicated()].tolist()[:5]}")
    if split.by == "block":
        df["split"] = block_splits(df, split.val_fraction, split.block_size_m, split.seed)
    elif split.stratify_by == "biome":
        biome = df["biome"] if "biome" in df else pd.Series("unknown", index=df.index)
        splits = stratified_splits(dict(zip(df["scene_id"], biome, strict=True)), split.val_fraction, split.seed)
        df["split"] = df["scene_id"].map(splits)
    else:
        df["split"] = [split_for_scene(s, split.val_fraction, split.seed) for s in df["scene_id"]]
    return df.sort_values("tile_id").reset_index(drop=True)


SKIPPED_COLUMNS = ["scene_id", "scope", "item", "reason"]


def skipped_table(records: list[dict]) -> pd.DataFrame:
    """Skipped scenes / tiles / frames: columns scene_id, scope, item, reason."""
    return pd.DataFrame(records, columns=SKIPPED_COLUMNS)


def write_table(path: str | Path, df: pd.DataFrame) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)
    return path


def write_scene_tiles(out_dir: str | Path, tiles: list[VoxelTile], views: list[TileViews]) -> list[dict]:
    """Write ``<tile_id>.parquet`` and ``<tile_id>.views.npz`` per tile; returns manifest rows."""
    out_dir = Path(out_dir)
    rows = []
    for tile, v in zip(tiles, views, strict=True):
        tp = write_tile(out_dir / f"{tile.tile_id}.parquet", tile)
        vp = write_views(tile_views_path(tp, tile.tile_id), v)
        rows.append(manifest_row(tile, tp, vp, len(v)))
    return rows

