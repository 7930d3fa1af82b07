"""A voxel structure with no attributes (a generated scene's occupancy), as Parquet.

One row per occupied voxel, columns ``x, y, z`` (uint16, index in the L^3 grid); file metadata
(JSON values) ``format``, ``scene_id``, ``L``, ``voxel_size_m`` and ``source`` (a dict saying where
the structure came from: for a generated scene its layout tile, seed and models). Voxel tiles (:mod:`earthcrafter.io.tiles`) carry
features and semantics that a generated structure does not have, hence this separate format.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from earthcrafter.io.parquet import fail, read_checked_table, read_json_meta, write_table_with_meta, xyz_columns, xyz_values

STRUCTURE_FORMAT = "earthcrafter.structure/1"
STRUCTURE_KEYS = ("format", "scene_id", "L", "voxel_size_m", "source")


def write_structure(path: str | Path, coords: np.ndarray, meta: dict) -> Path:
    """Write int voxel coords [N, 3] with ``meta`` (must hold scene_id, L, voxel_size_m, source) atomically."""
    coords = np.asarray(coords).reshape(-1, 3)
    meta = {**meta, "format": STRUCTURE_FORMAT}
    missing = [k for k in STRUCTURE_KEYS if k not in meta]
    if missing:
        raise ValueError(f"structure {path}: meta lacks {missing}")
    if len(coords) and (coords.min() < 0 or coords.max() >= meta["L"]):
        raise ValueError(f"structure {path}: coords outside [0, L = {meta['L']})")
    return write_table_with_meta(path, pa.table(xyz_columns(coords)), meta)


def read_structure(path: str | Path) -> tuple[np.ndarray, dict]:
    """(coords [N, 3] int32, meta); a malformed file raises TileFormatError naming file and field."""
    meta = read_json_meta(path, STRUCTURE_KEYS, "voxel structure")
    if meta["format"] != STRUCTURE_FORMAT:
        fail(path, "format", f"expected {STRUCTURE_FORMAT!r}, got {meta['format']!r}")
    if not isinstance(meta["L"], int) or meta["L"] < 1:
        fail(path, "L", f"expected a positive int, got {meta['L']!r}")
    coords = xyz_values(read_checked_table(path, {"x": pa.uint16(), "y": pa.uint16(), "z": pa.uint16()}))
    if len(coords) and coords.max() >= meta["L"]:
        fail(path, "x/y/z", f"voxel index {coords.max()} >= L = {meta['L']}")
    return coords, meta
