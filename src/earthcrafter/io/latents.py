"""Cached VAE latents on disk: one Parquet file per tile and kind, a manifest, channel statistics.

``<kind>/<tile_id>.parquet`` (pyarrow), one row per latent voxel, ``kind`` = ``struct`` (StructVAE
posterior at L/8, c_s channels) or ``tex`` (TexVAE posterior on the tile's voxels, c_t channels):

============  ==================================  ==============================================
column        type                                meaning
============  ==================================  ==============================================
x, y, z       uint16                              index in the latent grid (fine voxel // stride)
mean          fixed_size_list<float32>[C]         posterior mean (what the flow models learn)
logvar        fixed_size_list<float32>[C]         posterior log-variance (to draw samples)
============  ==================================  ==============================================

File key-value metadata (each value JSON): ``format``, ``tile_id``, ``kind``, ``scene_id``,
``L`` (the tile's fine resolution), ``stride`` (fine voxels per latent cell edge: 8 for struct,
1 or 2 for tex), ``channels``, ``voxel_size_m``, ``origin_m`` (as in the voxel tile), ``model``
({"path", "sha256"} of the VAE weights that produced it) and ``source`` ({"path", "sha256", "size",
"mtime_ns"} of the voxel tile). The last two let a re-run keep files that are still valid.

``conditions/<tile_id>.npz``: the tile's condition rasters on the latent columns (float32
``semantic`` [G, G, classes], ``rgbd`` [G, G, 5] when the tile has views), with ``grid`` (G = L/8),
``version`` (:data:`earthcrafter.training.conditions.RASTERS_VERSION`) and ``views_stamp`` (size and
mtime of the views file the RGBD raster was lifted from). The flows read them
instead of the voxel tile and its views (computed the same way; docs/latents.md).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from earthcrafter.io.atomic import atomic_path
from earthcrafter.io.parquet import (
    TileFormatError,
    fail,
    fixed_list,
    fixed_list_values,
    read_checked_table,
    read_json_meta,
    write_table_with_meta,
    xyz_columns,
    xyz_values,
)

LATENT_FORMAT = "earthcrafter.latent_tile/1"
LATENT_KINDS = ("struct", "tex")
CONDITION_RASTERS = ("semantic", "rgbd")
META_KEYS = ("format", "tile_id", "kind", "scene_id", "L", "stride", "channels", "voxel_size_m", "origin_m",
             "model", "source")  # fmt: skip


@dataclass
class LatentTile:
    """The latents of one tile. ``meta`` holds scene_id, L, stride, voxel_size_m, origin_m, model, source."""

    tile_id: str
    kind: str
    coords: np.ndarray  # [N, 3] int32, latent-grid index
    mean: np.ndarray  # [N, C] float32
    logvar: np.ndarray  # [N, C] float32
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.coords = np.asarray(self.coords).astype(np.int32, copy=False)
        self.mean = np.asarray(self.mean).astype(np.float32, copy=False)
        self.logvar = np.asarray(self.logvar).astype(np.float32, copy=False)
        if self.kind not in LATENT_KINDS:
            raise ValueError(f"latent tile {self.tile_id}: kind {self.kind!r} not in {LATENT_KINDS}")
        n = len(self.coords)
        if self.coords.shape != (n, 3) or self.mean.ndim != 2 or len(self.mean) != n:
            raise ValueError(
                f"latent tile {self.tile_id}: coords {self.coords.shape} / mean {self.mean.shape} must be [N, 3] / [N, C]"
            )
        if self.logvar.shape not in (self.mean.shape, (n, 0)):  # (n, 0): read without it
            raise ValueError(f"latent tile {self.tile_id}: logvar {self.logvar.shape} != mean {self.mean.shape}")

    def __len__(self) -> int:
        return len(self.coords)

    @property
    def channels(self) -> int:
        return self.mean.shape[1]

    @property
    def stride(self) -> int:
        return int(self.meta["stride"])


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (model weights, voxel tiles)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def latent_path(root: str | Path, kind: str, tile_id: str) -> Path:
    return Path(root) / kind / f"{tile_id}.parquet"


def conditions_path(root: str | Path, tile_id: str) -> Path:
    return Path(root) / "conditions" / f"{tile_id}.npz"


def write_conditions(path: str | Path, grid: int, version: int, rasters: dict[str, np.ndarray],
                     views_stamp: list[int] | None = None) -> Path:
    """Write a tile's condition rasters (``{"semantic": ..., "rgbd": ...}``) atomically, with
    ``views_stamp`` ([size, mtime_ns] of the views file they were lifted from; [] for none)."""
    for name, raster in rasters.items():
        if name not in CONDITION_RASTERS or raster.ndim != 3 or raster.shape[:2] != (grid, grid):
            raise ValueError(f"{path}: raster {name!r} of shape {raster.shape} is not one of {CONDITION_RASTERS} "
                             f"on a {grid} x {grid} grid")  # fmt: skip
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:  # a file object: np.savez would append ".npz" to a path
            np.savez(fh, grid=np.int64(grid), version=np.int64(version),
                     views_stamp=np.asarray(views_stamp or [], np.int64),
                     **{k: v.astype(np.float32, copy=False) for k, v in rasters.items()})  # fmt: skip
    return Path(path)


def read_conditions(path: str | Path) -> tuple[int, int, dict[str, np.ndarray], list[int]]:
    """(grid, version, rasters, views stamp) of a conditions file; a bad file raises naming the file
    and field."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise
    except Exception as e:
        raise TileFormatError(f"{path}: not a readable NPZ file ({e})") from e
    for key in ("grid", "version", "semantic"):
        if key not in data:
            fail(path, key, "array missing")
    grid, version = int(data.pop("grid")), int(data.pop("version"))
    stamp = data.pop("views_stamp", None)
    for name, raster in data.items():
        if name not in CONDITION_RASTERS:
            fail(path, name, f"unknown raster (known: {CONDITION_RASTERS})")
        if raster.dtype != np.float32 or raster.ndim != 3 or raster.shape[:2] != (grid, grid):
            fail(path, name, f"expected float32 [{grid}, {grid}, C], got {raster.dtype} {list(raster.shape)}")
    return grid, version, data, [] if stamp is None else stamp.tolist()


def write_latent_tile(path: str | Path, tile: LatentTile) -> Path:
    """Write ``tile`` to ``path`` atomically."""
    meta = {**tile.meta, "format": LATENT_FORMAT, "tile_id": tile.tile_id, "kind": tile.kind,
            "channels": tile.channels}  # fmt: skip
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise ValueError(f"latent tile {tile.tile_id}: meta lacks {missing}")
    if tile.logvar.shape != tile.mean.shape:
        raise ValueError(f"latent tile {tile.tile_id}: no log-variance to write (read with logvar=False)")
    if len(tile) and (tile.coords.min() < 0 or tile.coords.max() > 65535):
        raise ValueError(f"latent tile {tile.tile_id}: coords outside [0, 65535]")
    columns = {**xyz_columns(tile.coords), "mean": fixed_list(tile.mean), "logvar": fixed_list(tile.logvar)}
    return write_table_with_meta(path, pa.table(columns), meta)


def read_latent_meta(path: str | Path) -> dict:
    """The file's metadata (validated), without reading the rows."""
    meta = read_json_meta(path, META_KEYS, "latent tile")
    if meta["format"] != LATENT_FORMAT:
        fail(path, "format", f"expected {LATENT_FORMAT!r}, got {meta['format']!r}")
    if meta["kind"] not in LATENT_KINDS:
        fail(path, "kind", f"expected one of {LATENT_KINDS}, got {meta['kind']!r}")
    for key in ("L", "stride", "channels"):
        if not isinstance(meta[key], int) or meta[key] < 1:
            fail(path, key, f"expected a positive int, got {meta[key]!r}")
    return meta


def read_latent_tile(path: str | Path, logvar: bool = True) -> LatentTile:
    """Read and validate; any problem raises :class:`~earthcrafter.io.parquet.TileFormatError`
    naming the file and field. ``logvar=False`` skips the log-variance column (the flows learn the
    mean; half the file): ``logvar`` is then empty ([N, 0])."""
    path = Path(path)
    meta = read_latent_meta(path)
    C = meta["channels"]
    names = ("mean", "logvar") if logvar else ("mean",)
    expected = {"x": pa.uint16(), "y": pa.uint16(), "z": pa.uint16(), **{n: pa.list_(pa.float32(), C) for n in names}}
    table = read_checked_table(path, expected, only_expected=not logvar)
    coords = xyz_values(table)
    arrays = {name: fixed_list_values(table, name, C, path) for name in names}
    for name, values in arrays.items():
        if not np.isfinite(values).all():
            fail(path, name, "non-finite values")
    cells = -(-meta["L"] // meta["stride"])
    if len(coords) and coords.max() >= cells:
        fail(path, "x/y/z", f"latent index {coords.max()} >= L/stride = {cells}")
    tile_id, kind = meta.pop("tile_id"), meta.pop("kind")
    meta.pop("format")
    meta.pop("channels")
    lv = arrays["logvar"] if logvar else np.zeros((len(coords), 0), np.float32)
    return LatentTile(tile_id, kind, coords, arrays["mean"], lv, meta)
