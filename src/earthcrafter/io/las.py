"""Aerial LiDAR (LAS / LAZ) -> an earthcrafter scene holding a coloured, classified point cloud.

Per point: position (converted from the CRS's linear units to metres, into the local
frame of ``earthcrafter.io.import_common``), colour (LAS RGB or a georeferenced
orthophoto) and class (ASPRS code mapped by ``earthcrafter.semantics.ASPRS_TO_CLASS``).
Dropped: ASPRS noise (``ASPRS_NOISE``), withheld points, overlap points (LAS 1.4 flag),
points outside ``crop``, points beyond ``max_points`` (uniform random subsample), points off
the orthophoto or on its transparent / nodata pixels when colouring from it, and, under
``unknown_class="drop"``, unknown codes. All are counted in
``metadata["dropped"]`` and logged. The file is streamed in chunks, so memory is bounded
by the points kept, not by the file.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import laspy
import numpy as np
from tqdm.auto import tqdm

from earthcrafter.io.crs_units import LinearUnit, geographic_crs, same_unit, units_from_crs, units_from_geokeys
from earthcrafter.io.import_common import (
    check_extent,
    check_scene_id,
    check_scene_size,
    class_histogram,
    column_bounds,
    extent_metadata,
    import_error,
    log_drops,
    metres_per_unit,
    origin_metadata,
    scene_id_from_path,
)
from earthcrafter.io.imported_scene import ImportedScene
from earthcrafter.io.orthophoto import (
    Orthophoto,
    check_nodata,
    check_orthophoto,
    check_same_crs,
    read_orthophoto,
    scale_16_to_8,
)
from earthcrafter.io.scene import Points
from earthcrafter.semantics import ASPRS_NOISE, ASPRS_TO_CLASS

log = logging.getLogger(__name__)

COLOR_SOURCES = ("auto", "las", "orthophoto")
UNKNOWN_CLASS_POLICIES = ("unlabeled", "drop", "error")
RGB_POINT_FORMATS = frozenset({2, 3, 5, 7, 8, 10})
MIN_ORTHO_COVERAGE = 0.5  # below this the orthophoto is likely in another CRS: warn
BLACK_POINTS_WARN_SHARE = 0.01  # more points than this left with LAS colour (0, 0, 0): warn

# ASPRS code (0..255) -> earthcrafter class, with -1 for codes the table does not know.
_ASPRS_LUT = np.full(256, -1, dtype=np.int16)
for _code, _cls in ASPRS_TO_CLASS.items():
    _ASPRS_LUT[_code] = _cls
_NOISE_LUT = np.zeros(256, dtype=bool)
_NOISE_LUT[list(ASPRS_NOISE)] = True


def import_las(
    path: str | Path,
    *,
    orthophoto: str | Path | Orthophoto | None = None,
    world_file: str | Path | None = None,
    orthophoto_nodata: int | tuple[int, int, int] | None = None,
    max_points: int | None = None,
    crop: tuple[float, float, float, float] | None = None,
    color_source: str = "auto",
    unknown_class: str = "unlabeled",
    units: str | float | None = None,
    vertical_units: str | float | None = None,
    force_units: bool = False,
    drop_withheld: bool = True,
    drop_overlap: bool = True,
    scene_id: str | None = None,
    chunk_size: int = 1_000_000,
    seed: int = 0,
) -> ImportedScene:
    """Import a LAS/LAZ file as a scene with ``points`` (no mesh, no frames).

    Args:
        orthophoto: image path (``world_file``, else a world file next to it, else its GeoTIFF tags)
            or an ``Orthophoto``, in the LAS file's CRS. Used for colour per ``color_source``; its crop
            to the scene is kept as ``ImportedScene.orthophoto`` (local metres); ``write_imported_scene``
            stores it.
        orthophoto_nodata: pixel value (or (R, G, B) triple) that marks "no image" in the orthophoto
            file, like alpha 0; points on such pixels are dropped when colouring from it.
        max_points: keep at most this many points, a uniform random subsample (``seed``).
        crop: (xmin, ymin, xmax, ymax) in the file's CRS units; points outside are dropped. A crop
            that misses the header's bounds is an error before any point is read.
        drop_withheld / drop_overlap: drop points flagged withheld / overlap (the overlap flag
            exists in point formats 6-10).
        color_source: "las" (LAS RGB), "orthophoto", or "auto" (LAS RGB when present and
            not all zero, else the orthophoto).
        unknown_class: ASPRS codes absent from ``ASPRS_TO_CLASS``: "unlabeled" (class 0),
            "drop", or "error". Counted in ``metadata["unknown_classes"]`` in every case.
        units / vertical_units: the horizontal / vertical linear unit ("m", "ft", "us_ft", ... or
            metres per unit) for files whose CRS records give none (or disagree). z follows
            ``vertical_units``, else the CRS's vertical unit, else the horizontal unit. A value that
            contradicts the CRS records is an error unless ``force_units=True`` (records known wrong;
            then ``units`` sets z too, unless ``vertical_units`` is given). A geographic (degree) CRS
            is always refused.
    """
    path = Path(path)
    scene_id = check_scene_id(scene_id) if scene_id is not None else None
    crop = _check_las_options(path, color_source, unknown_class, max_points, crop, units, vertical_units, chunk_size)
    _check_nodata_option(path, orthophoto, orthophoto_nodata)
    if not path.is_file():
        raise import_error(path, "LAS/LAZ file not found")

    with laspy_log_folded(path), _open_las(path) as reader:
        header = reader.header
        _check_header(path, header)
        crs = _parse_crs(path, header)
        horizontal, vertical = _linear_units(path, header, crs, units, vertical_units, force_units)
        _check_crop_meets_header(path, header, crop, horizontal)
        has_rgb = header.point_format.id in RGB_POINT_FORMATS
        drops = {"withheld": drop_withheld, "overlap": drop_overlap}
        stream = _read_points(path, reader, has_rgb, crop, drops, unknown_class, max_points, chunk_size, seed)

    unknown_counts, dropped = stream["unknown_codes"], stream["dropped"]
    if unknown_counts and unknown_class == "error":
        raise import_error(
            path, f"ASPRS class codes not in the class map: {unknown_counts} (code: points); "
            "use unknown_class='unlabeled' or 'drop' to import anyway"
        )
    if unknown_counts:
        log.warning("%s: unknown ASPRS codes %s (code: points) -> %s", path, unknown_counts, unknown_class)
    xyz, codes, rgb16 = stream["xyz"], stream["codes"], stream["rgb"]
    if len(xyz) == 0:
        raise import_error(path, f"no points left after filtering (dropped {dropped})")
    f = np.array([horizontal.metres, horizontal.metres, vertical.metres])
    # scaled integers are finite (the header check saw finite scales): only the extent can be absurd
    check_extent(path, stream["lo"] * f, stream["hi"] * f, "point coordinates")
    semantic = np.maximum(_ASPRS_LUT[codes], 0).astype(np.uint8)  # unknown (-1) -> unlabeled

    ortho = _load_orthophoto(orthophoto, world_file, orthophoto_nodata)
    if ortho is not None:
        check_same_crs(ortho.crs_epsg, _horizontal_epsg(crs), ortho.source or "orthophoto", path)
    source = _choose_color_source(path, color_source, has_rgb, stream["rgb_max"], ortho)
    colour_gaps = {}
    if source == "las":
        rgb = _las_rgb_to_8bit(rgb16, stream["rgb_max"])
        colour_gaps = _fill_black_points(path, rgb, rgb16, xyz, ortho if color_source == "auto" else None)
    else:
        rgb, on_image, coloured = _orthophoto_colors(path, ortho, xyz)
        dropped["outside_orthophoto_points"] = int((~on_image).sum())
        dropped["orthophoto_nodata_points"] = int((on_image & ~coloured).sum())
        xyz, rgb, semantic, codes = xyz[coloured], rgb[coloured], semantic[coloured], codes[coloured]
        if len(xyz) == 0:
            raise import_error(path, f"no points left after filtering (dropped {dropped})")
    lo, hi = (stream["lo"], stream["hi"]) if source == "las" else column_bounds(xyz)
    origin = np.floor(lo)  # whole source units: the local frame starts within one unit of zero
    local = (xyz - origin) * f
    lo_m, hi_m = (lo - origin) * f, (hi - origin) * f
    log_drops(path, dropped, len(local), "points")
    check_scene_size(path, float(max(hi_m[:2] - lo_m[:2])), "point cloud")

    ortho_crop = None
    if ortho is not None:
        ortho_crop = ortho.crop(lo[0], lo[1], hi[0], hi[1]).to_local(origin[:2], horizontal.metres)

    metadata = {
        "source": "lidar",
        "source_files": _source_files(path, ortho),
        "crs": _crs_metadata(crs),
        "origin": origin_metadata(
            origin, f, units={"horizontal": horizontal.as_dict(), "vertical": vertical.as_dict()}
        ),
        **extent_metadata(lo=lo_m, hi=hi_m),
        "bounds_m": {"min": lo_m.tolist(), "max": hi_m.tolist()},
        "num_points": int(len(local)),
        "class_histogram": class_histogram(semantic),
        "asprs_histogram": {str(c): int(n) for c, n in enumerate(np.bincount(codes, minlength=256)) if n},
        "dropped": dropped,
        "unknown_classes": {"policy": unknown_class, "points": int(sum(unknown_counts.values())),
                            "codes": unknown_counts},
        "color_source": source,
        **colour_gaps,
        "color_bit_depth": (8 if stream["rgb_max"] <= 255 else 16) if has_rgb else None,
        "las": _header_metadata(header),
    }
    return ImportedScene(
        scene_id or scene_id_from_path(path),
        metadata,
        points=Points(local, rgb, semantic),
        orthophoto=ortho_crop,
    )


def check_las(
    path: str | Path,
    *,
    orthophoto: str | Path | Orthophoto | None = None,
    world_file: str | Path | None = None,
    max_points: int | None = None,
    crop: tuple[float, float, float, float] | None = None,
    color_source: str = "auto",
    unknown_class: str = "unlabeled",
    units: str | float | None = None,
    vertical_units: str | float | None = None,
    force_units: bool = False,
    chunk_size: int = 1_000_000,
    orthophoto_nodata: int | tuple[int, int, int] | None = None,
    **_other,
) -> None:
    """What ``import_las`` can find wrong without reading the points, in a fraction of a second:
    option values, the file and its header, the units, the crop against the header's bounds, the
    orthophoto's image header, pixel mode and georeferencing (world file or GeoTIFF tags), and
    whether the orthophoto covers the header's bounds. Raises like ``import_las``."""
    path = Path(path)
    crop = _check_las_options(path, color_source, unknown_class, max_points, crop, units, vertical_units, chunk_size)
    _check_nodata_option(path, orthophoto, orthophoto_nodata)
    if not path.is_file():
        raise import_error(path, "LAS/LAZ file not found")
    with laspy_log_folded(path), _open_las(path) as reader:
        header = reader.header
        _check_header(path, header)
        crs = _parse_crs(path, header)
        horizontal, _ = _linear_units(path, header, crs, units, vertical_units, force_units, quiet=True)
        _check_crop_meets_header(path, header, crop, horizontal)
        has_rgb = header.point_format.id in RGB_POINT_FORMATS
        bounds = np.concatenate([np.asarray(header.mins)[:2], np.asarray(header.maxs)[:2]])
        las_epsg = _horizontal_epsg(crs)
    if color_source == "las" and not has_rgb:
        raise import_error(path, f"color_source='las' but point format {header.point_format.id} has no RGB")
    if orthophoto is None:
        if color_source == "orthophoto" or (color_source == "auto" and not has_rgb):
            raise import_error(
                path, "no colour: the point format has no RGB and no orthophoto was given (orthophoto=...)"
            )
    elif not isinstance(orthophoto, Orthophoto):
        check_orthophoto(orthophoto, world_file, bounds=bounds, nodata=orthophoto_nodata, data_epsg=las_epsg,
                         data_path=path)


def _check_las_options(path, color_source, unknown_class, max_points, crop, units, vertical_units, chunk_size):
    """Plain ``ValueError`` naming the file for option values ``import_las`` cannot take; returns the crop box."""
    if color_source not in COLOR_SOURCES:
        raise ValueError(f"{path}: option color_source={color_source!r}: expected one of {COLOR_SOURCES}")
    if unknown_class not in UNKNOWN_CLASS_POLICIES:
        raise ValueError(f"{path}: option unknown_class={unknown_class!r}: expected one of {UNKNOWN_CLASS_POLICIES}")
    if max_points is not None and max_points <= 0:
        raise ValueError(f"{path}: option max_points={max_points}: must be positive")
    if chunk_size <= 0:
        raise ValueError(f"{path}: option chunk_size={chunk_size}: must be positive")
    for name, value in (("units", units), ("vertical_units", vertical_units)):
        if value is not None:
            try:
                metres_per_unit(value, name)
            except ValueError as err:
                raise ValueError(f"{path}: option {err}") from None
    return _check_crop(path, crop)


def _check_nodata_option(path: Path, orthophoto, nodata) -> None:
    """``orthophoto_nodata`` must be a pixel value and needs an orthophoto file to apply to."""
    check_nodata(nodata, path, "orthophoto_nodata")
    if nodata is not None and isinstance(orthophoto, Orthophoto):
        # an Orthophoto is already 8-bit: the file's raw values are gone
        raise ValueError(
            f"{path}: option orthophoto_nodata={nodata!r} applies to an orthophoto read from a file; for an "
            "Orthophoto object pass nodata= to read_orthophoto, or set its valid mask"
        )


# --------------------------------------------------------------------------- reading


@contextlib.contextmanager
def laspy_log_folded(path: Path) -> Iterator[None]:
    """Hold back laspy's own ERROR log lines (a LAZ backend that fails logs one per backend tried,
    then raises): the error we raise carries the message. They are re-logged at DEBUG level."""
    logger = logging.getLogger("laspy.lasreader")
    held: list[logging.LogRecord] = []

    def hold(record: logging.LogRecord) -> bool:
        held.append(record)
        return False

    logger.addFilter(hold)
    try:
        yield
    finally:
        logger.removeFilter(hold)
        for record in held:
            log.debug("%s: laspy: %s", path, record.getMessage())


def _open_las(path: Path) -> laspy.LasReader:
    try:
        return laspy.open(path)
    except laspy.errors.LazError as err:
        raise import_error(path, f"cannot decompress LAZ ({err}); install the 'lazrs' package") from None
    except Exception as err:  # laspy raises many types on a corrupt header
        raise import_error(path, f"not a readable LAS/LAZ file: corrupt or truncated header ({err})") from None


def _check_header(path: Path, header: laspy.LasHeader) -> None:
    if header.point_count == 0:
        raise import_error(path, "the file holds zero points")
    if not header.are_points_compressed:  # LAZ chunk sizes vary; there the reader finds the cut
        record = header.point_format.size
        available = path.stat().st_size - header.offset_to_point_data
        if available < header.point_count * record:
            raise import_error(
                path, f"truncated: header says {header.point_count} points, the file holds "
                f"{max(available, 0) // record} ({max(available, 0)} bytes of {record}-byte records)"
            )
    scales, offsets = np.asarray(header.scales), np.asarray(header.offsets)
    if not (np.isfinite(scales).all() and (scales != 0).all() and np.isfinite(offsets).all()):
        raise import_error(path, f"header scale {scales.tolist()} / offset {offsets.tolist()} not finite and non-zero")


def _read_points(
    path: Path,
    reader: laspy.LasReader,
    has_rgb: bool,
    crop: np.ndarray | None,
    drops: dict[str, bool],
    unknown_class: str,
    max_points: int | None,
    chunk_size: int,
    seed: int,
) -> dict:
    """Stream the points through the filters (in the order noise, withheld, overlap, crop, unknown
    class; ``drops`` says whether withheld / overlap points go) and keep a uniform random
    ``max_points`` subsample of the rest.

    The subsample gives each kept point a random key and keeps the smallest keys, which
    is exact and needs memory for ``2 * max_points`` points only.
    """
    rng = np.random.default_rng(seed)
    dropped = {"noise_points": 0, "withheld_points": 0, "overlap_points": 0, "outside_crop_points": 0,
               "unknown_class_points": 0, "subsampled_points": 0, "outside_orthophoto_points": 0,
               "orthophoto_nodata_points": 0}
    unknown_codes: dict[str, int] = {}
    parts: dict[str, list[np.ndarray]] = {"xyz": [], "codes": [], "rgb": [], "key": []}
    held = n_read = rgb_max = 0
    total = reader.header.point_count
    bar = tqdm(total=total, desc=f"read {path.name}", unit="pt", disable=total < 5 * chunk_size)
    for chunk in _chunks(path, reader, chunk_size, lambda: n_read):
        n_read += len(chunk)
        bar.update(len(chunk))
        xyz = np.stack([np.asarray(chunk.x), np.asarray(chunk.y), np.asarray(chunk.z)], axis=1)
        codes = np.asarray(chunk.classification, dtype=np.uint8)
        rgb = np.stack([chunk.red, chunk.green, chunk.blue], axis=1).astype(np.uint16) if has_rgb else None
        if has_rgb and len(rgb):
            rgb_max = max(rgb_max, int(rgb.max()))
        keep = _keep_mask(chunk, xyz, codes, crop, drops, unknown_class, dropped, unknown_codes)
        parts["xyz"].append(xyz[keep])
        parts["codes"].append(codes[keep])
        if has_rgb:
            parts["rgb"].append(rgb[keep])
        held += int(keep.sum())
        if max_points is not None:
            parts["key"].append(rng.random(int(keep.sum())))
            if held > 2 * max_points:
                held, lost = _keep_smallest_keys(parts, max_points)
                dropped["subsampled_points"] += lost
    bar.close()
    if n_read != total:
        raise import_error(path, f"truncated: header says {total} points, the file holds {n_read}")
    if max_points is not None and held > max_points:
        held, lost = _keep_smallest_keys(parts, max_points)
        dropped["subsampled_points"] += lost
    xyz = np.concatenate(parts["xyz"]) if parts["xyz"] else np.zeros((0, 3))
    return {
        "xyz": xyz,
        **dict(zip(("lo", "hi"), column_bounds(xyz) if len(xyz) else (np.zeros(3), np.zeros(3)))),
        "codes": np.concatenate(parts["codes"]) if parts["codes"] else np.zeros(0, np.uint8),
        "rgb": np.concatenate(parts["rgb"]) if has_rgb and parts["rgb"] else None,
        "rgb_max": rgb_max,
        "dropped": dropped,
        "unknown_codes": unknown_codes,
    }


def _keep_mask(chunk, xyz, codes, crop, drops: dict, unknown_class, dropped: dict, unknown_codes: dict) -> np.ndarray:
    """[n] bool: the chunk's points that pass the filters; counts what each filter removes."""
    keep = ~_NOISE_LUT[codes]
    dropped["noise_points"] += int((~keep).sum())
    # the overlap flag exists in point formats 6-10 only (older formats have no such bit)
    for flag in ("withheld", "overlap"):
        if drops[flag] and flag in chunk.point_format.dimension_names:
            flagged = np.asarray(getattr(chunk, flag), dtype=bool) & keep
            dropped[f"{flag}_points"] += int(flagged.sum())
            keep &= ~flagged
    if crop is not None:
        outside = keep & ~_in_box(xyz, crop)
        dropped["outside_crop_points"] += int(outside.sum())
        keep &= ~outside
    unknown = keep & (_ASPRS_LUT[codes] < 0)
    if unknown.any():
        for code, n in zip(*np.unique(codes[unknown], return_counts=True)):
            unknown_codes[str(code)] = unknown_codes.get(str(code), 0) + int(n)
        if unknown_class == "drop":
            dropped["unknown_class_points"] += int(unknown.sum())
            keep &= ~unknown
    return keep


def _chunks(path: Path, reader: laspy.LasReader, chunk_size: int, n_read):
    """The reader's chunks; a read failure (a cut file, bad LAZ data) becomes a ``DataImportError``."""
    chunks = reader.chunk_iterator(chunk_size)
    while True:
        try:
            chunk = next(chunks)
        except StopIteration:
            return
        except Exception as err:  # laspy / the LAZ backend raise many types
            total = reader.header.point_count
            raise import_error(path, f"point data unreadable after {n_read()} of {total} points ({err})") from None
        yield chunk


def _keep_smallest_keys(parts: dict[str, list[np.ndarray]], k: int) -> tuple[int, int]:
    """Compact ``parts`` in place to the ``k`` rows with the smallest keys; returns (held, dropped)."""
    key = np.concatenate(parts["key"])
    order = np.sort(np.argpartition(key, k - 1)[:k]) if len(key) > k else np.arange(len(key))
    for name, arrays in parts.items():
        if arrays:
            parts[name] = [np.concatenate(arrays)[order]]
    return len(order), len(key) - len(order)


def _check_crop(path: Path, crop) -> np.ndarray | None:
    if crop is None:
        return None
    box = np.asarray(crop, dtype=np.float64)
    if box.shape != (4,) or not np.isfinite(box).all() or box[0] >= box[2] or box[1] >= box[3]:
        raise ValueError(f"{path}: option crop={crop!r}: expected finite (xmin, ymin, xmax, ymax) with min < max")
    return box


def _check_crop_meets_header(path: Path, header: laspy.LasHeader, crop: np.ndarray | None, unit: LinearUnit) -> None:
    """A crop box that misses the header's x/y bounds would only fail after reading every point."""
    if crop is None:
        return
    lo, hi = np.asarray(header.mins, dtype=np.float64)[:2], np.asarray(header.maxs, dtype=np.float64)[:2]
    if not (lo.any() or hi.any()):
        return  # all-zero bounds: a writer that never filled them in; the points decide
    if (crop[2:] < lo).any() or (crop[:2] > hi).any():
        raise import_error(
            path, f"crop {tuple(crop.tolist())} (xmin, ymin, xmax, ymax) misses the header's bounds "
            f"x {lo[0]:.2f}..{hi[0]:.2f}, y {lo[1]:.2f}..{hi[1]:.2f}: crop is in the file's CRS units "
            f"({unit.name}, {unit.metres:.10g} m), not local metres"
        )


def _in_box(xyz: np.ndarray, box: np.ndarray) -> np.ndarray:
    x, y = xyz[:, 0], xyz[:, 1]
    return (x >= box[0]) & (x <= box[2]) & (y >= box[1]) & (y <= box[3])


# --------------------------------------------------------------------------- units and CRS


def _linear_units(
    path: Path,
    header: laspy.LasHeader,
    crs,
    units: str | float | None,
    vertical_units: str | float | None,
    force_units: bool = False,
    quiet: bool = False,
) -> tuple[LinearUnit, LinearUnit]:
    """(horizontal, vertical) units from the CRS records (``crs``: the header's, parsed by ``_parse_crs``),
    or from the arguments where the records give none or disagree; an argument that contradicts the
    records needs ``force_units``."""
    geographic = geographic_crs(crs, header)
    if geographic:
        raise import_error(path, f"{geographic}; reproject to a projected CRS first (units= cannot replace that)")
    h_crs, v_crs, problem = units_from_crs(crs)
    h_geo, v_geo = units_from_geokeys(header)
    horizontal = _choose_unit(path, "units", units, (h_crs, h_geo), force_units)
    if horizontal is None:
        if problem:
            raise import_error(path, f"{problem}; pass units= to say what the coordinates are in")
        raise import_error(
            path,
            "the header's CRS records (GeoKey / WKT VLRs) give no linear unit; "
            "pass units= (e.g. 'm', 'ft', 'us_ft') to say what the coordinates are in",
        )
    if force_units and units is not None and vertical_units is None:
        vertical_units = units  # records declared wrong do not decide z either
    vertical = _choose_unit(path, "vertical_units", vertical_units, (v_crs, v_geo), force_units)
    if vertical is None and units is not None:
        vertical = LinearUnit(horizontal.name, horizontal.metres, "argument: units= (the CRS gives no vertical unit)")
    if vertical is None:
        vertical = LinearUnit(horizontal.name, horizontal.metres, "assumed: no vertical unit in the CRS, z in the horizontal unit")
        if not quiet:
            log.info("%s: CRS gives no vertical unit; taking z in %s (%g m), pass vertical_units= to override",
                     path, horizontal.name, horizontal.metres)
    return horizontal, vertical


def _choose_unit(
    path: Path, name: str, given: str | float | None, recorded: tuple[LinearUnit | None, ...], force: bool
) -> LinearUnit | None:
    """One axis's unit: the records' (which must agree), or ``given`` (which must agree with them)."""
    records = [u for u in recorded if u is not None]
    said = _describe_units(records)
    if given is None:
        if len(records) == 2 and not same_unit(*records):
            axis = "vertical" if name.startswith("vertical") else "horizontal"
            a, b = records
            raise import_error(
                path, f"{axis} unit disagrees between the CRS ({a.name}, {a.metres:.10g} m) and the GeoKeys "
                f"({b.name}, {b.metres:.10g} m); pass {name}= to choose"
            )
        return records[0] if records else None
    unit = LinearUnit(str(given), metres_per_unit(given, name), "argument")
    if records and not any(same_unit(unit, u) for u in records):
        if not force:
            raise import_error(
                path,
                f"{name}={given!r} ({unit.metres:.10g} m) contradicts the file's CRS records: {said}. "
                f"Drop {name}= to use the records, or pass force_units=True if the records are wrong",
            )
        log.warning("%s: %s=%r overrides the CRS records (%s) because force_units=True", path, name, given, said)
        unit = LinearUnit(str(given), unit.metres, f"argument, overriding the CRS records ({said})")
    return unit


def _describe_units(records: list[LinearUnit]) -> str:
    """``foot (0.3048 m, in the CRS and the GeoKeys)`` for messages."""
    where = {"crs": "CRS", "geokeys": "GeoKeys"}
    if len(records) == 2 and same_unit(*records):
        u = records[0]
        return f"{u.name} ({u.metres:.10g} m, in the CRS and the GeoKeys)"
    return " and ".join(f"{u.name} ({u.metres:.10g} m, in the {where.get(u.source, u.source)})" for u in records)


def _parse_crs(path: Path, header: laspy.LasHeader):
    """The header's CRS (pyproj), None when it has none or its records are unreadable (warned)."""
    try:
        return header.parse_crs()
    except Exception as err:  # malformed WKT or GeoKeys
        log.warning("%s: CRS records unreadable (%s); falling back to raw GeoKeys", path, err)
        return None


def _crs_metadata(crs) -> dict | None:
    if crs is None:
        return None
    return {"name": crs.name, "epsg": crs.to_epsg(min_confidence=100), "wkt": crs.to_wkt()}


def _horizontal_epsg(crs) -> int | None:
    """EPSG code of a file's horizontal CRS (of a compound CRS, its horizontal part); None when unknown."""
    if crs is not None and crs.is_compound:
        crs = crs.sub_crs_list[0]
    return crs.to_epsg(min_confidence=100) if crs is not None else None


def _header_metadata(header: laspy.LasHeader) -> dict:
    return {
        "version": str(header.version),
        "point_format": int(header.point_format.id),
        "header_point_count": int(header.point_count),
        "scales": np.asarray(header.scales).tolist(),
        "offsets": np.asarray(header.offsets).tolist(),
        "header_mins": np.asarray(header.mins).tolist(),
        "header_maxs": np.asarray(header.maxs).tolist(),
        "system_identifier": str(header.system_identifier),
        "generating_software": str(header.generating_software),
    }


# --------------------------------------------------------------------------- classes and colour


def _load_orthophoto(orthophoto, world_file, nodata) -> Orthophoto | None:
    if orthophoto is None or isinstance(orthophoto, Orthophoto):
        return orthophoto
    return read_orthophoto(orthophoto, world_file, nodata)


def _source_files(path: Path, ortho: Orthophoto | None) -> list[str]:
    """Absolute paths of the LAS file, the orthophoto and the file its georeferencing came from."""
    files = [str(path.resolve())]
    for name in (ortho.source, ortho.georef_file) if ortho is not None else ():
        if name and str(Path(name).resolve()) not in files:
            files.append(str(Path(name).resolve()))
    return files


def _choose_color_source(path: Path, policy: str, has_rgb: bool, rgb_max: int, ortho: Orthophoto | None) -> str:
    las_ok = has_rgb and rgb_max > 0
    why_not_las = "the point format has no RGB" if not has_rgb else "its RGB is all zero"
    if policy == "las" and not las_ok:
        raise import_error(path, f"color_source='las' but {why_not_las}")
    if policy == "orthophoto" and ortho is None:
        raise import_error(path, "color_source='orthophoto' but no orthophoto was given")
    if policy == "auto" and not las_ok and ortho is None:
        raise import_error(path, f"no colour: {why_not_las} and no orthophoto was given (orthophoto=...)")
    if policy == "auto":
        return "las" if las_ok else "orthophoto"
    return policy


def _fill_black_points(path: Path, rgb: np.ndarray, rgb16: np.ndarray, xyz: np.ndarray,
                       ortho: Orthophoto | None) -> dict:
    """Points whose LAS colour is exactly (0, 0, 0) — what vendors write where their colouring imagery
    did not reach — get the orthophoto's colour when one is given (``rgb`` is filled in place).
    Returns the counts for the scene metadata: {} when no point is black."""
    black = (rgb16 == 0).all(1)
    n = int(black.sum())
    if n == 0:
        return {}
    filled = 0
    if ortho is not None:
        sampled = ortho.sample(xyz[black, :2])
        ok = np.isfinite(sampled[:, 0])
        idx = np.flatnonzero(black)[ok]
        rgb[idx] = np.clip(np.round(sampled[ok]), 0, 255).astype(np.uint8)
        filled = int(ok.sum())
    share = n / max(len(rgb), 1)
    if n - filled and share > BLACK_POINTS_WARN_SHARE:
        hint = "an orthophoto with color_source='auto' colours them" if ortho is None else "off the orthophoto"
        log.warning("%s: %d points (%.0f%%) have LAS colour (0, 0, 0), probably not reached by the colouring "
                    "imagery; %d were filled from the orthophoto, %d stay black (%s)",
                    path, n, 100 * share, filled, n - filled, hint)  # fmt: skip
    elif filled:
        log.info("%s: %d points with LAS colour (0, 0, 0) coloured from the orthophoto", path, filled)
    return {"black_color_points": n, "black_color_filled_from_orthophoto": filled}


def _las_rgb_to_8bit(rgb16: np.ndarray, rgb_max: int) -> np.ndarray:
    """LAS RGB (16-bit fields) -> uint8. Files whose values never exceed 255 hold 8-bit values."""
    if rgb_max <= 255:
        return rgb16.astype(np.uint8)
    return scale_16_to_8(rgb16)


def _orthophoto_colors(path: Path, ortho: Orthophoto, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear orthophoto colour per point -> (rgb uint8 [N, 3], on-image mask [N], coloured mask [N]).

    Coloured points are on the image and on a valid pixel (not transparent, not nodata)."""
    sampled = ortho.sample(xyz[:, :2])
    coloured = np.isfinite(sampled[:, 0])
    on_image = ortho.contains(xyz[:, :2]) if ortho.valid is not None else coloured
    if not on_image.any():
        raise import_error(path, f"no point lies on the orthophoto {ortho.source} (different CRS or area?)")
    if not coloured.any():
        raise import_error(
            path, f"every point on the orthophoto {ortho.source} lies on transparent (alpha 0) or nodata pixels"
        )
    coverage = float(coloured.mean())
    if coverage < MIN_ORTHO_COVERAGE:
        log.warning("%s: only %.0f%% of points lie on orthophoto %s (%d off the image, %d on transparent or "
                    "nodata pixels)", path, 100 * coverage, ortho.source, int((~on_image).sum()),
                    int((on_image & ~coloured).sum()))
    rgb = np.zeros((len(xyz), 3), dtype=np.uint8)
    rgb[coloured] = np.clip(np.round(sampled[coloured]), 0, 255).astype(np.uint8)
    return rgb, on_image, coloured
