"""Shared pieces of the importers: the error type, units, the local metric frame, checks.

Every importer returns a scene in a *local metric frame*: metres, right-handed, z up,
with ``metadata["origin"]`` recording the offset back to the source coordinates::

    local = R @ (source * metres_per_unit) - origin["metres"]
    origin["metres"] = R @ (origin["source_units"] * metres_per_unit)

``R`` is the up-axis rotation (identity for z-up sources such as LiDAR) and
``metres_per_unit`` may differ per axis (horizontal vs vertical units of a CRS).
"""

from __future__ import annotations

import difflib
import logging
import re
from pathlib import Path

import numpy as np

from earthcrafter.semantics import CLASS_NAMES, NUM_CLASSES

log = logging.getLogger(__name__)

# A scene wider than this is taken for a unit or CRS mistake, not for real data.
MAX_EXTENT_M = 100_000.0
# A scene narrower than this is suspicious (coordinates in the wrong unit?): warned about.
MIN_PLAUSIBLE_SIZE_M = 1.0
# Over this share of unlabeled points (faces, pixels), a scene's tiles are mostly "unlabeled": warned about.
MAX_UNLABELED_SHARE = 0.5
# What the class histogram of each source counts.
HISTOGRAM_ITEMS = {"lidar": "points", "mesh": "faces", "frames": "semantic pixels"}
# Scene ids: lower-case letters, digits, "_" and "-", starting with a letter or digit.
SCENE_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"

# Linear units a caller may name. The two feet differ by 2 ppm: 6 mm over 3 km.
INTERNATIONAL_FOOT_M = 0.3048
US_SURVEY_FOOT_M = 1200.0 / 3937.0
UNIT_METRES: dict[str, float] = {
    "m": 1.0,
    "metre": 1.0,
    "metres": 1.0,
    "meter": 1.0,
    "meters": 1.0,
    "cm": 0.01,
    "mm": 0.001,
    "km": 1000.0,
    "ft": INTERNATIONAL_FOOT_M,
    "foot": INTERNATIONAL_FOOT_M,
    "feet": INTERNATIONAL_FOOT_M,
    "international_foot": INTERNATIONAL_FOOT_M,
    "international_feet": INTERNATIONAL_FOOT_M,
    "us_ft": US_SURVEY_FOOT_M,
    "us-ft": US_SURVEY_FOOT_M,
    "ftus": US_SURVEY_FOOT_M,
    "us_foot": US_SURVEY_FOOT_M,
    "us_feet": US_SURVEY_FOOT_M,
    "us_survey_foot": US_SURVEY_FOOT_M,
    "us_survey_feet": US_SURVEY_FOOT_M,
    "us survey foot": US_SURVEY_FOOT_M,
    "us survey feet": US_SURVEY_FOOT_M,
}


class DataImportError(ValueError):
    """Input data that cannot be imported; the message names the file and the problem."""


def import_error(path: str | Path, problem: str) -> DataImportError:
    return DataImportError(f"{path}: {problem}")


def metres_per_unit(units: str | float, what: str = "units") -> float:
    """Metres per unit for a unit name (see ``UNIT_METRES``) or a positive number of metres."""
    if isinstance(units, (int, float)) and not isinstance(units, bool):
        factor = float(units)
    elif isinstance(units, str) and units.strip().lower() in UNIT_METRES:
        factor = UNIT_METRES[units.strip().lower()]
    else:
        raise ValueError(
            f"{what}={units!r}: expected one of {sorted(UNIT_METRES)} or metres per unit as a number"
        )
    if not (np.isfinite(factor) and factor > 0):
        raise ValueError(f"{what}={units!r}: metres per unit must be a positive finite number")
    return factor


def up_axis_rotation(up_axis: str) -> np.ndarray:
    """Proper rotation [3, 3] taking a source whose up axis is ``up_axis`` to z up.

    y up (glTF): (x, y, z) -> (x, -z, y), so the source's +y becomes +z and its +z
    (glTF's "front") becomes -y. x up: (x, y, z) -> (y, z, x) (cyclic, det +1).
    """
    rotations = {
        "z": np.eye(3),
        "y": np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]]),
        "x": np.array([[0.0, 1, 0], [0, 0, 1], [1, 0, 0]]),
    }
    if up_axis not in rotations:
        raise ValueError(f"up_axis={up_axis!r}: expected one of {sorted(rotations)}")
    return rotations[up_axis]


def column_bounds(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column (min, max) of [N, C]; column by column, which numpy does far faster than axis=0."""
    a = np.asarray(a)
    return (np.array([a[:, i].min() for i in range(a.shape[1])]),
            np.array([a[:, i].max() for i in range(a.shape[1])]))


def check_coordinates(path: str | Path, xyz_m: np.ndarray, what: str = "coordinates") -> None:
    """Fail on non-finite coordinates or an extent over ``MAX_EXTENT_M`` on any axis.

    ``xyz_m`` is [N, 3] in metres (any origin); the message names the file and the extent.
    """
    xyz_m = np.asarray(xyz_m, dtype=np.float64)
    finite = np.isfinite(xyz_m).all(axis=1)
    if not finite.all():
        raise import_error(path, f"{int((~finite).sum())} {what} are not finite (NaN or inf)")
    if len(xyz_m):
        check_extent(path, *column_bounds(xyz_m), what)


def check_extent(path: str | Path, lo_m: np.ndarray, hi_m: np.ndarray, what: str = "coordinates") -> None:
    """Fail when the box [lo_m, hi_m] (metres) is wider than ``MAX_EXTENT_M`` on any axis."""
    extent = np.asarray(hi_m, dtype=np.float64) - np.asarray(lo_m, dtype=np.float64)
    if (extent > MAX_EXTENT_M).any():
        raise import_error(
            path,
            f"{what} span {np.round(extent, 1).tolist()} m (x, y, z), over the {MAX_EXTENT_M / 1000:.0f} km "
            "limit: wrong units or CRS, or stray outliers (crop the input)",
        )


def floor_origin(xyz_src: np.ndarray) -> np.ndarray:
    """The local frame's origin in source units: the bounding-box minimum rounded down to a whole unit.

    Whole numbers keep the offset exact and easy to read back; the local frame then
    starts within one source unit of zero on every axis.
    """
    return np.floor(column_bounds(np.asarray(xyz_src, dtype=np.float64))[0])


def origin_metadata(
    origin_src: np.ndarray,
    metres_per_unit_xyz: np.ndarray,
    rotation: np.ndarray | None = None,
    units: dict | None = None,
) -> dict:
    """``metadata["origin"]``: the offset back to the source frame, in source units and in metres."""
    R = np.eye(3) if rotation is None else rotation
    origin_src = np.asarray(origin_src, dtype=np.float64)
    f = np.asarray(metres_per_unit_xyz, dtype=np.float64)
    return {
        "source_units": origin_src.tolist(),
        "metres": (R @ (origin_src * f)).tolist(),
        "metres_per_unit": f.tolist(),
        "rotation": R.tolist(),
        "units": units or {},
        "to_source": "source = R^T @ (local + metres) / metres_per_unit (element-wise)",
    }


def class_histogram(labels: np.ndarray) -> dict[str, int]:
    """Counts per earthcrafter class name, all 25 names, in class order."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64).ravel(), minlength=NUM_CLASSES)
    return {name: int(counts[i]) for i, name in enumerate(CLASS_NAMES)}


def unlabeled_share(hist: dict[str, int]) -> float | None:
    """The share of class ``unlabeled`` in a class histogram; None when it counts nothing."""
    total = sum(hist.values())
    return float(hist.get(CLASS_NAMES[0], 0) / total) if total else None


def record_unlabeled_share(path: str | Path, scene_id: str, metadata: dict) -> float | None:
    """The share of class ``unlabeled`` in ``metadata["class_histogram"]`` (None when it counts nothing).

    Warns once, with the counts per class (and per ASPRS code for LiDAR), when it is over
    ``MAX_UNLABELED_SHARE``: unclassified LiDAR (ASPRS 1) or a mesh without face classes imports
    fine, but its tiles teach the semantic heads little besides "unlabeled".
    """
    hist = metadata.get("class_histogram") or {}
    share = unlabeled_share(hist)
    if share is None:
        return None
    if share > MAX_UNLABELED_SHARE:
        unlabeled, total = hist.get(CLASS_NAMES[0], 0), sum(hist.values())
        items = HISTOGRAM_ITEMS.get(metadata.get("source"), "items")
        counts = {name: n for name, n in hist.items() if n}
        asprs = metadata.get("asprs_histogram")
        log.warning(
            "%s (scene %s): %.1f %% of its %s are class %r (%s of %s), over %.0f %%; classes %s%s. Its tiles will be "
            "mostly unlabeled: classify the source first if its semantics matter",
            path, scene_id, 100 * share, items, CLASS_NAMES[0], f"{unlabeled:,}", f"{total:,}",
            100 * MAX_UNLABELED_SHARE, counts, f", ASPRS codes {asprs}" if asprs else "",
        )
    return share


def extent_metadata(xyz_local: np.ndarray | None = None, lo: np.ndarray | None = None, hi: np.ndarray | None = None) -> dict:
    """``extent_m`` [x, y] (metres) of local points [N, 3] (or of their bounds lo, hi), and
    ``size_m``: the larger side, a scalar like a synthetic site's side.
    """
    if xyz_local is not None:
        xy = np.asarray(xyz_local)[:, :2]
        lo, hi = column_bounds(xy) if len(xy) else (np.zeros(2), np.zeros(2))
    extent = (np.asarray(hi)[:2] - np.asarray(lo)[:2]).tolist()
    return {"size_m": float(max(extent)), "extent_m": extent}


def some_names(names, n: int = 5) -> str:
    """``a, b, c and 7 more``: the first ``n`` of ``names`` for a message (the log or summary has them all)."""
    names = [str(x) for x in names]
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def close_name_hint(name, names) -> str:
    """``'nmae' (did you mean 'name'?)`` for a name that is not among ``names``, or just ``'nmae'``."""
    close = difflib.get_close_matches(str(name), list(names), n=1)
    return f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")


def check_scene_id(scene_id: str) -> str:
    """``scene_id`` if it matches ``SCENE_ID_PATTERN`` (it names a folder), else ``ValueError``."""
    if not isinstance(scene_id, str) or not re.fullmatch(SCENE_ID_PATTERN, scene_id):
        raise ValueError(
            f"scene_id={scene_id!r}: expected lower-case letters, digits, '_' and '-', "
            f"starting with a letter or digit ({SCENE_ID_PATTERN})"
        )
    return scene_id


def check_scene_size(path: str | Path, size_m: float, what: str = "scene") -> None:
    """Warn when an imported scene spans less than ``MIN_PLAUSIBLE_SIZE_M`` across (units mistake?)."""
    if size_m < MIN_PLAUSIBLE_SIZE_M:
        log.warning(
            "%s: the %s spans only %.3g m across (under %g m): are the coordinates in the unit you said?",
            path, what, size_m, MIN_PLAUSIBLE_SIZE_M,
        )


def scene_id_from_path(path: str | Path) -> str:
    """A filesystem- and URL-safe id from a file or folder name: ``Autzen Trim.copc.laz`` -> ``autzen_trim``."""
    name = Path(path).name
    for suffix in (".copc.laz", ".laz", ".las", ".ply", ".obj", ".glb", ".gltf", ".json"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    sid = re.sub(r"[^a-z0-9_-]+", "_", name.lower()).strip("_-")
    if not sid:
        raise ValueError(f"cannot derive a scene id from {path!s}; pass scene_id=")
    return sid


def log_drops(path: str | Path, dropped: dict[str, int], kept: int, what: str) -> None:
    """Log what an importer dropped (warning when anything was), with the reasons."""
    lost = {k: v for k, v in dropped.items() if v}
    if lost:
        log.warning("%s: kept %d %s, dropped %s", path, kept, what, lost)
    else:
        log.info("%s: kept all %d %s", path, kept, what)
