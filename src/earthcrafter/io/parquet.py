"""Parquet files with JSON key-value metadata, as the voxel and latent tiles store them.

Shared by :mod:`earthcrafter.io.tiles` and :mod:`earthcrafter.io.latents`: atomic zstd writes,
metadata read without the rows, fixed-size-list columns, and errors that name file and field.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from earthcrafter.io.atomic import atomic_path, json_default


class TileFormatError(ValueError):
    """A tile or views file does not follow the format; the message names the file and field."""


def fail(path, fieldname: str, problem: str):
    raise TileFormatError(f"{path}: field {fieldname!r}: {problem}")


def write_table_with_meta(path: str | Path, table: pa.Table, meta: dict) -> Path:
    """Write ``table`` with ``meta`` (each value JSON-encoded) atomically, zstd-compressed.

    Only integer columns are dictionary-encoded. Float columns (features, latents) are written plain:
    float16 values always fit a dictionary, and a paper-scale tile's 66-channel feature column made
    ``read_tile`` 3x slower than plain values do, and the file 3-9 % larger after zstd
    (``benchmarks/bench_texvae_data.py``). Readers need no change: the encoding is per column chunk.
    """
    table = table.replace_schema_metadata({k.encode(): json.dumps(v, default=json_default).encode()
                                           for k, v in meta.items()})  # fmt: skip
    path = Path(path)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", use_dictionary=dictionary_columns(table.schema))
    return path


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """The columns worth a dictionary: integer ones (coordinates, classes), which repeat."""
    return [f.name for f in schema if pa.types.is_integer(f.type)]


def read_json_meta(path: str | Path, keys: tuple[str, ...], what: str) -> dict:
    """The JSON values of ``keys`` from the file's metadata, without reading the rows."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        raw = pq.read_schema(path).metadata or {}
    except Exception as e:  # pyarrow raises several types on corrupt files
        raise TileFormatError(f"{path}: not a readable Parquet file ({e})") from e
    meta = {}
    for key in keys:
        if key.encode() not in raw:
            fail(path, key, "missing from the file metadata")
        try:
            meta[key] = json.loads(raw[key.encode()])
        except json.JSONDecodeError as e:
            fail(path, key, f"not valid JSON ({e})")
    return meta


def read_checked_table(path: str | Path, expected: dict[str, pa.DataType], only_expected: bool = False) -> pa.Table:
    """Read the rows and check every expected column is there with its type (``only_expected``:
    read no other column)."""
    try:
        names = pq.read_schema(path).names if only_expected else None
        table = pq.read_table(path, columns=[n for n in names if n in expected] if names is not None else None)
    except Exception as e:
        raise TileFormatError(f"{path}: not a readable Parquet file ({e})") from e
    for name, typ in expected.items():
        if name not in table.column_names:
            fail(path, name, "column missing")
        if table.schema.field(name).type != typ:
            fail(path, name, f"expected type {typ}, got {table.schema.field(name).type}")
    return table


def fixed_list(values: np.ndarray) -> pa.FixedSizeListArray:
    """[N, C] array -> a fixed_size_list<C> column."""
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


def fixed_list_values(table: pa.Table, name: str, channels: int, path) -> np.ndarray:
    """A fixed_size_list<C> column -> [N, C] (writable); fails on null rows."""
    col = table.column(name).combine_chunks()
    if col.null_count:
        fail(path, name, f"{col.null_count} null rows")
    return col.values.to_numpy(zero_copy_only=False).reshape(-1, channels).copy()


def xyz_columns(coords: np.ndarray) -> dict[str, pa.Array]:
    """Int coords [N, 3] -> uint16 columns x, y, z."""
    return {a: pa.array(coords[:, i].astype(np.uint16)) for i, a in enumerate("xyz")}


def xyz_values(table: pa.Table) -> np.ndarray:
    return np.stack([table.column(c).to_numpy() for c in ("x", "y", "z")], axis=1).astype(np.int32)
