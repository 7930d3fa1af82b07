"""Placing local outputs back on the map.

Every scene lives in a local metric frame (metres, z up); an imported scene's ``metadata["origin"]``
says how it maps to the source's CRS (docs/data_import.md)::

    source = R^T @ (local + metres) / metres_per_unit        (element-wise per axis)

A voxel tile of such a scene records that origin and the CRS in ``meta["extra"]["georef"]``; its
own frame is the scene's shifted by the tile's corner ``origin_m``. :func:`local_to_source` turns
both into one 4 x 4 matrix, and :func:`write_georef` writes it beside a tile's exports (and a
generated scene's files), with the CRS, for GIS tools or a point-cloud library to apply.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from earthcrafter.io.atomic import atomic_write_text

GEOREF_FILE = "georef.json"
ORIGIN_KEYS = ("metres", "metres_per_unit", "rotation", "source_units")


def scene_georef(metadata: dict) -> dict | None:
    """``{"crs", "origin"}`` of an imported scene (what a tile records), None for a scene without a
    source CRS frame (a synthetic site)."""
    origin = metadata.get("origin")
    if not isinstance(origin, dict) or not all(k in origin for k in ORIGIN_KEYS):
        return None
    return {"crs": _crs_record(metadata.get("crs")), "origin": {k: origin[k] for k in ORIGIN_KEYS}}


def _crs_record(crs) -> dict:
    """``{"name", "epsg", "wkt"}``: LiDAR imports store that; meshes and frames the string the user
    gave (``crs="EPSG:32610"``), kept as the name (and the EPSG code when it is one)."""
    if isinstance(crs, dict):
        return {k: crs.get(k) for k in ("name", "epsg", "wkt")}
    if crs is None:
        return {"name": None, "epsg": None, "wkt": None}
    text = str(crs)
    code = text.split(":", 1)[1] if text.upper().startswith("EPSG:") else None
    return {"name": text, "epsg": int(code) if code and code.isdigit() else None, "wkt": None}


def local_to_source(georef: dict, offset_m=(0.0, 0.0, 0.0)) -> np.ndarray:
    """[4, 4]: source CRS coordinates (in its units) = M @ (x, y, z, 1) for a point in a frame whose
    origin sits at ``offset_m`` in the scene's local frame (a tile's ``origin_m``; 0: the scene)."""
    origin = georef["origin"]
    scale = np.diag(1.0 / np.asarray(origin["metres_per_unit"], dtype=np.float64))
    linear = scale @ np.asarray(origin["rotation"], dtype=np.float64).T
    shift = np.asarray(offset_m, dtype=np.float64) + np.asarray(origin["metres"], dtype=np.float64)
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = linear, linear @ shift
    return m


def write_georef(out_dir: str | Path, georef: dict | None, offset_m, frame: str) -> Path | None:
    """``out_dir/georef.json`` for outputs in a frame at ``offset_m`` of the scene's (None without a
    georef). ``frame`` says which outputs it covers."""
    if georef is None:
        return None
    crs = _crs_record(georef.get("crs"))
    doc = {
        "frame": frame,
        "local_to_source": local_to_source(georef, offset_m).tolist(),
        "convention": "source = local_to_source @ (x, y, z, 1); source in the CRS's own units",
        "crs": crs,
    }
    path = Path(out_dir) / GEOREF_FILE
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")
    return path
