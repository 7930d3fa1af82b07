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
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from earthcrafter.io.parquet import (
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
        if self.logvar.shape != self.mean.shape:
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


def write_latent_tile(path: str | Path, tile: LatentTile) -> Path:
    """Write ``tile`` to ``path`` atomically."""
    meta = {**tile.meta, "format": LATENT_FORMAT, "tile_id": tile.tile_id, "kind": tile.kind,
            "channels": tile.channels}  # fmt: skip
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise ValueError(f"latent tile {tile.tile_id}: meta lacks {missing}")
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


def read_latent_tile(path: str | Path) -> LatentTile:
    """Read and validate; any problem raises :class:`~earthcrafter.io.parquet.TileFormatError`
    naming the file and field."""
    path = Path(path)
    meta = read_latent_meta(path)
    C = meta["channels"]
    table = read_checked_table(path, {"x": pa.uint16(), "y": pa.uint16(), "z": pa.uint16(),
                                      "mean": pa.list_(pa.float32(), C),
                                      "logvar": pa.list_(pa.float32(), C)})  # fmt: skip
    coords = xyz_values(table)
    arrays = {name: fixed_list_values(table, name, C, path) for name in ("mean", "logvar")}
    for name, values in arrays.items():
        if not np.isfinite(values).all():
            fail(path, name, "non-finite values")
    cells = -(-meta["L"] // meta["stride"])
    if len(coords) and coords.max() >= cells:
        fail(path, "x/y/z", f"latent index {coords.max()} >= L/stride = {cells}")
    tile_id, kind = meta.pop("tile_id"), meta.pop("kind")
    meta.pop("format")
    meta.pop("channels")
    return LatentTile(tile_id, kind, coords, arrays["mean"], arrays["logvar"], meta)
