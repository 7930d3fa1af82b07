"""Builders of synthetic input files for the importer tests (LAS written with laspy)."""

from __future__ import annotations

from pathlib import Path

import laspy
import numpy as np
import pyproj


def geokey(key_id: int, value: int, location: int = 0, count: int = 1):
    entry = laspy.vlrs.known.GeoKeyEntryStruct()
    entry.id, entry.tiff_tag_location, entry.count, entry.value_offset = key_id, location, count, value
    return entry


def geokey_directory(keys: list) -> laspy.vlrs.known.GeoKeyDirectoryVlr:
    """A GeoKey directory VLR holding ``keys`` (GeoKeyEntryStruct) and nothing else."""
    vlr = laspy.vlrs.known.GeoKeyDirectoryVlr()
    vlr.geo_keys_header.key_directory_version = 1
    vlr.geo_keys_header.key_revision = 1
    vlr.geo_keys_header.number_of_keys = len(keys)
    vlr.geo_keys = list(keys)
    return vlr


def write_las(
    path: Path,
    xyz: np.ndarray,
    *,
    classes: np.ndarray | None = None,
    rgb: np.ndarray | None = None,
    crs: str | None = "EPSG:32610",
    vlrs: list | None = None,
    point_format: int = 3,
    version: str = "1.2",
    scale: float = 0.01,
    withheld: np.ndarray | None = None,
    overlap: np.ndarray | None = None,
) -> Path:
    """Write a LAS file with the given points (source CRS units) and optional classes / RGB / CRS."""
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    header = laspy.LasHeader(point_format=point_format, version=version)
    header.scales = np.full(3, scale)
    header.offsets = np.floor(xyz.min(axis=0)) if len(xyz) else np.zeros(3)
    if crs is not None:
        header.add_crs(pyproj.CRS(crs))
    for vlr in vlrs or []:
        header.vlrs.append(vlr)
    las = laspy.LasData(header)
    las.x, las.y, las.z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    if classes is not None:
        las.classification = np.asarray(classes, dtype=np.uint8)
    if rgb is not None:
        rgb = np.asarray(rgb, dtype=np.uint16)
        las.red, las.green, las.blue = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    if withheld is not None:
        las.withheld = np.asarray(withheld, dtype=bool)
    if overlap is not None:  # point formats 6-10
        las.overlap = np.asarray(overlap, dtype=bool)
    las.write(str(path))
    return path


def grid_points(n: int = 400, size: float = 100.0, x0: float = 500_000.0, y0: float = 4_000_000.0, seed: int = 0):
    """n points on a random patch [x0, x0 + size] x [y0, y0 + size] with z in [100, 120], 0.01 quantised."""
    rng = np.random.default_rng(seed)
    xyz = np.stack(
        [x0 + rng.uniform(0, size, n), y0 + rng.uniform(0, size, n), 100 + rng.uniform(0, 20, n)], axis=1
    )
    return np.round(xyz, 2)


def write_glb(path: Path, vertices, faces, colors=None, node: dict | None = None) -> Path:
    """A minimal binary glTF 2.0 file: one mesh, POSITION (+ COLOR_0 floats), uint32 indices."""
    import json
    import struct

    blobs = [np.asarray(vertices, "<f4").tobytes()]
    attributes = {"POSITION": 0}
    accessors = [{"bufferView": 0, "componentType": 5126, "count": len(vertices), "type": "VEC3",
                  "min": np.min(vertices, 0).tolist(), "max": np.max(vertices, 0).tolist()}]
    if colors is not None:
        blobs.append(np.asarray(colors, "<f4").tobytes())
        attributes["COLOR_0"] = 1
        accessors.append({"bufferView": 1, "componentType": 5126, "count": len(vertices), "type": "VEC3"})
    blobs.append(np.asarray(faces, "<u4").tobytes())
    accessors.append({"bufferView": len(blobs) - 1, "componentType": 5125, "count": int(np.size(faces)), "type": "SCALAR"})
    offsets = np.cumsum([0] + [len(b) for b in blobs])
    binary = b"".join(blobs)
    binary += b"\0" * (-len(binary) % 4)
    gltf = {
        "asset": {"version": "2.0"}, "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0, **(node or {})}],
        "meshes": [{"primitives": [{"attributes": attributes, "indices": len(blobs) - 1, "mode": 4}]}],
        "buffers": [{"byteLength": len(binary)}],
        "bufferViews": [{"buffer": 0, "byteOffset": int(offsets[i]), "byteLength": len(b)} for i, b in enumerate(blobs)],
        "accessors": accessors,
    }
    text = json.dumps(gltf).encode()
    text += b" " * (-len(text) % 4)
    total = 12 + 8 + len(text) + 8 + len(binary)
    Path(path).write_bytes(
        struct.pack("<III", 0x46546C67, 2, total) + struct.pack("<II", len(text), 0x4E4F534A) + text
        + struct.pack("<II", len(binary), 0x004E4942) + binary
    )
    return Path(path)
