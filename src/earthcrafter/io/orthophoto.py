"""Georeferenced orthophotos: an RGB image plus an affine from an ESRI world file or GeoTIFF tags.

World file (``.wld``, ``.jgw``, ``.pgw``, ``.tfw``, ...): six numbers, one a line,
``A, D, B, E, C, F``, mapping the 0-based pixel index (col, row) of a pixel's *centre*
to map coordinates::

    x = A * col + B * row + C
    y = D * col + E * row + F

so (C, F) is the centre of the top-left pixel. ``Orthophoto.affine`` is the 2x3 matrix
``[[A, B, C], [D, E, F]]`` with that same pixel-centre convention, in whatever frame the
orthophoto lives (source CRS units when read, local metres once ``to_local`` is applied).

Without a world file, a TIFF's GeoTIFF tags give the affine: ModelTransformation (34264, any
affine, rotated or sheared), else ModelPixelScale (33550) + one ModelTiepoint (33922), north up.
A world file next to the image wins over the tags. The GeoTIFF keys' EPSG code (ProjectedCSTypeGeoKey,
else GeographicTypeGeoKey) is kept as ``Orthophoto.crs_epsg`` for ``check_same_crs``; a world file carries none.

Pixels that are fully transparent (alpha 0) or equal the ``nodata`` value hold no image: the
``valid`` mask marks the others. 16-bit pixels (one band, or RGB(A) TIFF read with tifffile at their
stored values) are scaled to 8 bit over the full 16-bit range.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from earthcrafter.io.import_common import DataImportError, import_error

log = logging.getLogger(__name__)

# Orthophotos are legitimately huge, but one this large would not fit in memory once decoded; PIL's own
# decompression-bomb guard is replaced by a check that says what to do (see _check_size).
MAX_ORTHOPHOTO_PIXELS = 1_000_000_000
_SAMPLE_CHUNK = 1 << 20
# PIL modes holding one 16-bit (or wider integer) channel; scaled to 8 bit over 0..65535.
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
# float pixels have no agreed scale to 8-bit colour (PIL would clip them to 0..255)
UNSUPPORTED_MODES = frozenset({"F"})
ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa"})
LOW_RANGE_16BIT = 4096  # 16-bit pixels all below this are likely 12-bit or less: warn, they come out dark
# GeoTIFF tags (GeoTIFF 1.0 spec, section 2.6) and the GeoKey saying where a tiepoint lies in a pixel.
TAG_PIXEL_SCALE, TAG_TIEPOINT, TAG_TRANSFORMATION, TAG_GEOKEYS = 33550, 33922, 34264, 34735
GEOKEY_RASTER_TYPE, RASTER_PIXEL_IS_POINT = 1025, 2
# GeoKeys naming the CRS: GTModelTypeGeoKey (1 projected, 2 geographic), ProjectedCSTypeGeoKey, GeographicTypeGeoKey
GEOKEY_MODEL_TYPE, MODEL_PROJECTED, MODEL_GEOGRAPHIC = 1024, 1, 2
GEOKEY_PROJECTED_CRS, GEOKEY_GEOGRAPHIC_CRS = 3072, 2048
USER_DEFINED_GEOKEY = 32767  # a CRS described by other keys, no EPSG code
# TIFF BitsPerSample and ExtraSamples (1: associated, i.e. premultiplied, alpha)
TAG_BITS_PER_SAMPLE, TAG_EXTRA_SAMPLES, EXTRA_SAMPLE_ASSOCIATED_ALPHA = 258, 338, 1


@dataclass(frozen=True)
class Orthophoto:
    image: np.ndarray  # [H, W, 3] uint8
    affine: np.ndarray  # [2, 3]: (x, y) = affine @ (col, row, 1), pixel centres
    source: str = ""  # file it came from, for messages and metadata
    valid: np.ndarray | None = None  # [H, W] bool: pixels holding image (not transparent / nodata); None: all
    georef_file: str = ""  # file the affine was read from (world file, or the GeoTIFF itself)
    crs_epsg: int | None = None  # EPSG code of the source file's CRS (GeoTIFF keys); None: unknown

    def __post_init__(self) -> None:
        image = np.asarray(self.image)
        affine = np.asarray(self.affine, dtype=np.float64)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"Orthophoto image must be [H, W, 3] uint8, got {image.shape} {image.dtype}")
        if affine.shape != (2, 3) or not np.isfinite(affine).all():
            raise ValueError(f"Orthophoto affine must be a finite 2x3 matrix, got {affine.tolist()}")
        if abs(np.linalg.det(affine[:, :2])) < 1e-15:
            raise ValueError(f"Orthophoto affine is singular: {affine.tolist()}")
        valid = self.valid
        if valid is not None:
            valid = np.asarray(valid)
            if valid.shape != image.shape[:2] or valid.dtype != bool:
                raise ValueError(f"Orthophoto valid mask must be [H, W] bool, got {valid.shape} {valid.dtype}")
            if valid.all():
                valid = None
            elif (image[~valid] != 0).any():
                # black under invalid pixels: the bilinear sum then weighs valid pixels only (see sample)
                image = image.copy()
                image[~valid] = 0
        object.__setattr__(self, "image", image)
        object.__setattr__(self, "affine", affine)
        object.__setattr__(self, "valid", valid)

    @property
    def width(self) -> int:
        return self.image.shape[1]

    @property
    def height(self) -> int:
        return self.image.shape[0]

    @property
    def pixel_size(self) -> tuple[float, float]:
        """Ground size of one pixel along columns and rows (frame units)."""
        return float(np.linalg.norm(self.affine[:, 0])), float(np.linalg.norm(self.affine[:, 1]))

    def pixel_to_xy(self, colrow: np.ndarray) -> np.ndarray:
        """Pixel coordinates [N, 2] (col, row; integers are pixel centres) -> frame xy [N, 2]."""
        colrow = np.asarray(colrow, dtype=np.float64)
        return colrow @ self.affine[:, :2].T + self.affine[:, 2]

    def xy_to_pixel(self, xy: np.ndarray) -> np.ndarray:
        """Frame xy [N, 2] -> fractional pixel coordinates [N, 2] (col, row)."""
        xy = np.asarray(xy, dtype=np.float64)
        return (xy - self.affine[:, 2]) @ np.linalg.inv(self.affine[:, :2]).T

    def corners(self) -> np.ndarray:
        """Frame xy [4, 2] of the image footprint's outer corners (pixel edges, not centres)."""
        w, h = self.width - 0.5, self.height - 0.5
        return self.pixel_to_xy(np.array([[-0.5, -0.5], [w, -0.5], [w, h], [-0.5, h]]))

    def contains(self, xy: np.ndarray) -> np.ndarray:
        """[N] bool: the point lies on the image footprint."""
        return self._on_image(self.xy_to_pixel(xy))

    def _on_image(self, cr: np.ndarray) -> np.ndarray:
        col, row = cr[:, 0], cr[:, 1]
        return (col >= -0.5) & (col <= self.width - 0.5) & (row >= -0.5) & (row <= self.height - 0.5)

    def sample(self, xy: np.ndarray) -> np.ndarray:
        """Bilinear RGB at frame points xy [N, 2] -> float32 [N, 3] in [0, 255], NaN off the image
        and on invalid (transparent / nodata) pixels.

        Interpolates between the four nearest pixel centres; within half a pixel of the
        border the edge pixels are used (that band is still on the image). A point is invalid when
        the pixel it lies on is; next to invalid pixels only the valid neighbours are averaged, so
        no nodata colour bleeds in.
        """
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        out = np.full((len(xy), 3), np.nan, dtype=np.float32)
        for start in range(0, len(xy), _SAMPLE_CHUNK):
            cr = self.xy_to_pixel(xy[start : start + _SAMPLE_CHUNK])
            inside = self._on_image(cr)
            if self.valid is not None:
                inside[inside] = self._valid_at(cr[inside])
            cr = cr[inside] if not inside.all() else cr
            rgb = bilinear(self.image, cr[:, 0], cr[:, 1])
            if self.valid is not None:
                # invalid pixels are black, so rgb sums weight * colour over valid pixels only; the
                # pixel under the point is valid, so the valid weight is at least 1/4
                rgb /= bilinear(self.valid.view(np.uint8)[:, :, None], cr[:, 0], cr[:, 1])
            out[start : start + len(inside)][inside] = rgb
        return out

    def _valid_at(self, cr: np.ndarray) -> np.ndarray:
        """[N] bool: the pixel each on-image point (col, row) lies on is valid."""
        col = np.clip(np.floor(cr[:, 0] + 0.5).astype(np.int64), 0, self.width - 1)
        row = np.clip(np.floor(cr[:, 1] + 0.5).astype(np.int64), 0, self.height - 1)
        return self.valid[row, col]

    def crop(self, xmin: float, ymin: float, xmax: float, ymax: float, margin_px: int = 2) -> "Orthophoto":
        """The part of the image covering the box (plus ``margin_px`` pixels), affine adjusted.

        Fails when the box does not overlap the image.
        """
        box = np.array([[xmin, ymin], [xmax, ymin], [xmax, ymax], [xmin, ymax]], dtype=np.float64)
        cr = self.xy_to_pixel(box)
        c0 = max(int(np.floor(cr[:, 0].min())) - margin_px, 0)
        r0 = max(int(np.floor(cr[:, 1].min())) - margin_px, 0)
        c1 = min(int(np.ceil(cr[:, 0].max())) + margin_px + 1, self.width)
        r1 = min(int(np.ceil(cr[:, 1].max())) + margin_px + 1, self.height)
        if c0 >= c1 or r0 >= r1:
            raise import_error(self.source or "orthophoto", f"does not overlap the box {box[0].tolist()}-{box[2].tolist()}")
        affine = self.affine.copy()
        affine[:, 2] = self.pixel_to_xy(np.array([[c0, r0]]))[0]
        valid = None if self.valid is None else self.valid[r0:r1, c0:c1].copy()
        return replace(self, image=self.image[r0:r1, c0:c1].copy(), affine=affine, valid=valid)

    def to_local(self, origin_xy: np.ndarray, metres_per_unit: float) -> "Orthophoto":
        """The same image in a local metric frame: ``local = (xy - origin_xy) * metres_per_unit``."""
        affine = self.affine * metres_per_unit
        affine[:, 2] = (self.affine[:, 2] - np.asarray(origin_xy, dtype=np.float64)) * metres_per_unit
        return replace(self, affine=affine)


def bilinear(image: np.ndarray, col: np.ndarray, row: np.ndarray) -> np.ndarray:
    """Bilinear lookup of ``image`` [H, W, C] at fractional pixel-centre coordinates -> [N, C] float32.

    Coordinates are clamped to the outer pixel centres. Gathers go through the flattened image
    (one linear index per corner), about twice as fast as 2D fancy indexing.
    """
    if image.shape[0] < 2 or image.shape[1] < 2:  # give every pixel a right and a lower neighbour
        image = np.pad(image, ((0, image.shape[0] < 2), (0, image.shape[1] < 2), (0, 0)), mode="edge")
    h, w = image.shape[:2]
    col = np.clip(col, 0, w - 1)
    row = np.clip(row, 0, h - 1)
    c0 = np.minimum(col.astype(np.int64), w - 2)  # on the last centre: c0 = w - 2 with weight 1
    r0 = np.minimum(row.astype(np.int64), h - 2)
    fc = (col - c0).astype(np.float32)[:, None]
    fr = (row - r0).astype(np.float32)[:, None]
    flat = image.reshape(h * w, -1)
    i00 = r0 * w + c0
    p00, p01 = flat[i00].astype(np.float32), flat[i00 + 1].astype(np.float32)
    p10, p11 = flat[i00 + w].astype(np.float32), flat[i00 + w + 1].astype(np.float32)
    top = p00 + (p01 - p00) * fc
    bottom = p10 + (p11 - p10) * fc
    return top + (bottom - top) * fr


def read_world_file(path: str | Path) -> np.ndarray:
    """ESRI world file -> affine [2, 3] ``[[A, B, C], [D, E, F]]`` (pixel-centre convention)."""
    path = Path(path)
    if not path.is_file():
        raise import_error(path, "world file not found")
    lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    if len(lines) != 6:
        raise import_error(path, f"a world file holds 6 numbers (A, D, B, E, C, F), found {len(lines)} lines")
    try:
        a, d, b, e, c, f = (float(ln) for ln in lines)
    except ValueError as err:
        raise import_error(path, f"world file line is not a number ({err})") from None
    affine = np.array([[a, b, c], [d, e, f]])
    if not np.isfinite(affine).all() or abs(a * e - b * d) < 1e-15:
        raise import_error(path, f"world file affine is not finite and invertible: {affine.tolist()}")
    return affine


def find_world_file(image_path: str | Path) -> Path:
    """The world file next to an image: ``x.wld``, ``x.jgw`` (first+last letter + w), or ``x.jpgw``."""
    found = _world_file_next_to(image_path)
    if found is None:
        names = [c.name for c in _world_file_candidates(image_path)]
        raise import_error(image_path, f"no world file found (looked for {names}); pass world_file=")
    return found


def _world_file_candidates(image_path: str | Path) -> list[Path]:
    image_path = Path(image_path)
    ext = image_path.suffix.lstrip(".")
    candidates = [image_path.with_suffix(".wld")]
    if ext:
        candidates += [image_path.with_suffix(f".{ext[0]}{ext[-1]}w"), image_path.with_suffix(f".{ext}w")]
    return candidates


def _world_file_next_to(image_path: str | Path) -> Path | None:
    for cand in _world_file_candidates(image_path):
        for variant in (cand, cand.with_suffix(cand.suffix.upper())):
            if variant.is_file():
                return variant
    return None


def geotiff_affine(image_path: str | Path, tags) -> np.ndarray | None:
    """The pixel-centre affine [2, 3] from a TIFF's GeoTIFF tags (PIL's ``im.tag_v2``); None without them.

    ModelTransformation (any affine, rotation and shear included) wins over ModelPixelScale +
    ModelTiepoint (north up). Several tiepoints are ground control points, not an affine: refused.
    """
    if tags is None:
        return None
    scale, ties, matrix = (tags.get(t) for t in (TAG_PIXEL_SCALE, TAG_TIEPOINT, TAG_TRANSFORMATION))
    if scale is None and ties is None and matrix is None:
        return None
    # raster space puts pixel (col, row)'s top-left corner at (col, row) under PixelIsArea (the
    # default) and its centre there under PixelIsPoint; the affine here maps pixel centres
    half = 0.0 if _raster_type(tags) == RASTER_PIXEL_IS_POINT else 0.5
    if matrix is not None:
        m = np.asarray(matrix, dtype=np.float64).ravel()
        if m.size != 16:
            raise import_error(image_path, f"GeoTIFF ModelTransformation holds {m.size} numbers, expected 16")
        m = m.reshape(4, 4)
        affine = np.column_stack([m[:2, :2], m[:2, :2] @ [half, half] + m[:2, 3]])
    else:
        affine = _scale_and_tiepoint_affine(image_path, scale, ties, half)
    if not np.isfinite(affine).all() or abs(np.linalg.det(affine[:, :2])) < 1e-15:
        raise import_error(image_path, f"GeoTIFF georeferencing is not finite and invertible: {affine.tolist()}")
    return affine


def _scale_and_tiepoint_affine(image_path, scale, ties, half: float) -> np.ndarray:
    if scale is None or ties is None:
        given, missing = ("ModelPixelScale", "ModelTiepoint") if ties is None else ("ModelTiepoint", "ModelPixelScale")
        raise import_error(
            image_path, f"GeoTIFF has {given} but no {missing} (nor ModelTransformation): no affine to place "
            "the image; give a world file (world_file=)"
        )
    ties = np.asarray(ties, dtype=np.float64).ravel()
    scale = np.asarray(scale, dtype=np.float64).ravel()
    if ties.size != 6 or scale.size < 2:
        raise import_error(
            image_path, f"GeoTIFF holds {ties.size // 6} tiepoints and {scale.size} pixel scales: ground control "
            "points, not a north-up affine; warp the image (e.g. gdalwarp) or give a world file (world_file=)"
        )
    i, j, _, x, y, _ = ties
    sx, sy = scale[:2]
    # y grows north while rows grow down: a positive ScaleY is a north-up image
    return np.array([[sx, 0.0, x + (half - i) * sx], [0.0, -sy, y - (half - j) * sy]])


def _raster_type(tags) -> int:
    """GTRasterTypeGeoKey from the GeoKey directory: 1 PixelIsArea (also when absent), 2 PixelIsPoint."""
    return _geokeys(tags).get(GEOKEY_RASTER_TYPE, 1)


def _geokeys(tags) -> dict[int, int]:
    """The GeoKey directory's keys held in the directory itself (location 0: one SHORT value) -> {key: value}."""
    keys = np.asarray((tags.get(TAG_GEOKEYS) if tags is not None else None) or (), dtype=np.int64).ravel()
    if keys.size < 8:
        return {}
    entries = keys[4 : 4 + 4 * int(keys[3])]
    entries = entries[: entries.size // 4 * 4].reshape(-1, 4)
    return {int(key_id): int(value) for key_id, location, _count, value in entries if location == 0}


def geotiff_epsg(tags) -> int | None:
    """The EPSG code of a GeoTIFF's CRS (PIL's ``im.tag_v2``): ProjectedCSTypeGeoKey, or GeographicTypeGeoKey for a
    geographic model; None without GeoKeys or for a user-defined CRS."""
    keys = _geokeys(tags)
    model = keys.get(GEOKEY_MODEL_TYPE)
    code = keys.get(GEOKEY_PROJECTED_CRS) if model != MODEL_GEOGRAPHIC else None
    if code is None and model != MODEL_PROJECTED:
        # in a projected model GeographicTypeGeoKey is only the base of a (user-defined) projection
        code = keys.get(GEOKEY_GEOGRAPHIC_CRS)
    return code if code is not None and 0 < code < USER_DEFINED_GEOKEY else None


def check_same_crs(
    ortho_epsg: int | None, data_epsg: int | None, ortho_path: str | Path, data_path: str | Path
) -> None:
    """Fail when the orthophoto's CRS (its GeoTIFF keys) and the point cloud's differ, naming both files and codes.

    Codes are compared as CRSs (pyproj), so two codes for one definition pass. Unknown on either side
    (a world file, a GeoTIFF or LAS file without an EPSG code): nothing to compare, logged at INFO.
    """
    if ortho_epsg is None or data_epsg is None:
        log.info("%s: CRS not checked against %s (orthophoto EPSG %s, point cloud EPSG %s): they must match",
                 ortho_path, data_path, ortho_epsg or "unknown", data_epsg or "unknown")
        return
    ortho_crs, data_crs = _epsg_crs(ortho_epsg), _epsg_crs(data_epsg)
    if ortho_epsg == data_epsg or (ortho_crs and data_crs and ortho_crs.equals(data_crs, ignore_axis_order=True)):
        return
    raise import_error(
        ortho_path, f"GeoTIFF CRS EPSG:{ortho_epsg}{_crs_name(ortho_crs)} differs from the CRS of {data_path}, "
        f"EPSG:{data_epsg}{_crs_name(data_crs)}: reproject the orthophoto (e.g. gdalwarp -t_srs EPSG:{data_epsg})"
    )


def _epsg_crs(code: int):
    """pyproj's CRS for an EPSG code; None for a code it does not know."""
    import pyproj  # lazily, as in crs_units: only a CRS comparison needs it

    try:
        return pyproj.CRS.from_epsg(code)
    except pyproj.exceptions.CRSError:
        return None


def _crs_name(crs) -> str:
    return f" ({crs.name})" if crs is not None else ""


def check_nodata(value, path: str | Path, name: str = "nodata") -> tuple[int, int, int] | None:
    """A nodata option -> (R, G, B) ints (one value v means (v, v, v)); ``ValueError`` naming the file."""
    if value is None:
        return None
    values = np.atleast_1d(np.asarray(value, dtype=object)).ravel()
    ok = len(values) in (1, 3) and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= v <= 65535 for v in values
    )
    if not ok:
        raise ValueError(f"{path}: option {name}={value!r}: expected one pixel value or an (R, G, B) triple, "
                         "integers 0..65535")
    values = [int(v) for v in values]
    return tuple(values * 3 if len(values) == 1 else values)


def read_orthophoto(
    image_path: str | Path, world_file: str | Path | None = None, nodata: int | tuple[int, int, int] | None = None
) -> Orthophoto:
    """Read an image and its georeferencing: ``world_file``, else a world file next to the image, else
    the image's GeoTIFF tags (and their EPSG code, as ``crs_epsg``). Pixels with alpha 0 or equal to
    ``nodata`` (compared with the stored values, before any scaling) are marked invalid; 16-bit pixels
    are scaled to 8 bit over 0..65535."""
    nodata = check_nodata(nodata, image_path)
    image_path = _existing_image(image_path)
    world = Path(world_file) if world_file is not None else _world_file_next_to(image_path)

    def read(im):
        affine, georef, epsg = _georeference(image_path, im, world)
        return affine, georef, epsg, *_decode(image_path, im, nodata)

    affine, georef, epsg, rgb, valid = _read_image(image_path, read)
    if valid is not None and not valid.all():
        log.info("%s: %d of %d pixels hold no image (alpha 0 or nodata=%s)", image_path, int((~valid).sum()),
                 valid.size, nodata)
    return Orthophoto(rgb, affine, str(image_path.resolve()), valid, str(georef.resolve()), epsg)


def _existing_image(image_path: str | Path) -> Path:
    image_path = Path(image_path)
    if not image_path.is_file():
        raise import_error(image_path, "orthophoto image not found")
    return image_path


def _georeference(image_path: Path, im, world: Path | None) -> tuple[np.ndarray, Path, int | None]:
    """(affine, the file it came from, EPSG code or None): the world file when there is one, else the GeoTIFF tags.

    With a world file the GeoTIFF's CRS still counts when the image has GeoKeys but no affine tags
    (a TIFF + TFW pair); when the world file overrides the image's affine tags, their CRS goes too.
    """
    tags = getattr(im, "tag_v2", None)  # TIFF only
    if world is not None:
        if tags is not None and any(t in tags for t in (TAG_TIEPOINT, TAG_TRANSFORMATION)):
            log.info("%s: world file %s used; the image's GeoTIFF tags are ignored", image_path, world)
            return read_world_file(world), world, None
        return read_world_file(world), world, geotiff_epsg(tags)
    affine = geotiff_affine(image_path, tags)
    if affine is None:
        names = [c.name for c in _world_file_candidates(image_path)]
        raise import_error(
            image_path, f"no world file found (looked for {names}) and no GeoTIFF georeferencing tags "
            "(ModelPixelScale + ModelTiepoint, or ModelTransformation); pass world_file="
        )
    return affine, image_path, geotiff_epsg(tags)


def _is_16bit_rgb_tiff(im) -> bool:
    """A TIFF of 16-bit RGB(A) samples: PIL keeps only their high byte, so tifffile reads them (_decode_16bit_rgb)."""
    bits = getattr(im, "tag_v2", {}).get(TAG_BITS_PER_SAMPLE)
    return im.mode in ("RGB", "RGBA") and bits is not None and set(np.atleast_1d(bits).tolist()) == {16}


def _check_mode(image_path: Path, im, nodata: tuple[int, int, int] | None) -> None:
    """Refuse pixel modes (and nodata values) that cannot give 8-bit RGB, from the header alone."""
    if im.mode in UNSUPPORTED_MODES:
        raise import_error(
            image_path, f"pixel mode {im.mode!r} (floating point) has no defined 8-bit colour; "
            "convert the image to 8-bit RGB(A) or 8/16-bit greyscale"
        )
    if nodata is None:
        return
    if im.mode in SIXTEEN_BIT_MODES and len(set(nodata)) > 1:
        raise import_error(image_path, f"nodata={nodata} differs per band, but mode {im.mode!r} has one band")
    if im.mode not in SIXTEEN_BIT_MODES and not _is_16bit_rgb_tiff(im) and max(nodata) > 255:
        raise import_error(image_path, f"nodata={nodata} exceeds 255, but mode {im.mode!r} holds 8-bit values")


def _decode(image_path: Path, im, nodata: tuple[int, int, int] | None) -> tuple[np.ndarray, np.ndarray | None]:
    """PIL image -> (RGB uint8 [H, W, 3], valid [H, W] bool, or None when no pixel can be invalid)."""
    _check_mode(image_path, im, nodata)
    if im.mode in SIXTEEN_BIT_MODES:
        return _decode_16bit(image_path, im, nodata)
    if _is_16bit_rgb_tiff(im):
        return _decode_16bit_rgb(image_path, im, nodata)
    im.load()  # decoding errors are "not a readable image"; conversion errors below name the mode
    try:
        has_alpha = im.mode in ALPHA_MODES or "transparency" in im.info
        pixels = np.asarray(im.convert("RGBA" if has_alpha else "RGB"))
    except ValueError as err:
        raise import_error(image_path, f"pixel mode {im.mode!r} cannot be converted to RGB ({err})") from None
    rgb = pixels[..., :3]
    valid = pixels[..., 3] != 0 if has_alpha else None
    return rgb, _without_nodata(rgb, valid, nodata)


def _without_nodata(rgb: np.ndarray, valid: np.ndarray | None, nodata: tuple[int, int, int] | None):
    """``valid`` less the pixels whose three bands equal ``nodata`` (same scale as ``rgb``)."""
    if nodata is None:
        return valid
    is_nodata = (rgb[..., 0] == nodata[0]) & (rgb[..., 1] == nodata[1]) & (rgb[..., 2] == nodata[2])
    return ~is_nodata if valid is None else valid & ~is_nodata


def _decode_16bit(image_path: Path, im, nodata: tuple[int, int, int] | None) -> tuple[np.ndarray, np.ndarray | None]:
    """One 16-bit (or 32-bit integer) channel -> grey RGB, scaled over the full 16-bit range."""
    grey = np.asarray(im)
    lo, hi = int(grey.min()), int(grey.max())
    if lo < 0 or hi > 65535:
        raise import_error(
            image_path, f"pixel mode {im.mode!r} holds values {lo}..{hi}, outside 16 bit (0..65535); "
            "convert the image to 8-bit RGB or 16-bit greyscale"
        )
    invalid = np.zeros(grey.shape, dtype=bool)
    transparency = im.info.get("transparency")
    for value in (nodata[0] if nodata else None, transparency if isinstance(transparency, int) else None):
        if value is not None:
            invalid |= grey == value
    valid = ~invalid if invalid.any() else None
    grey8 = _16bit_to_8bit(image_path, grey, valid)
    return np.repeat(grey8[..., None], 3, axis=2), valid


def _decode_16bit_rgb(
    image_path: Path, im, nodata: tuple[int, int, int] | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """16-bit RGB(A) TIFF -> (RGB uint8, valid), nodata compared with the stored values, then scaled like grey."""
    with tifffile.TiffFile(image_path) as tif:
        page = tif.pages[0]  # the IFD PIL opened: the full-resolution image, not an overview
        pixels, axes = page.asarray(), page.axes
    if pixels.dtype.kind != "u" or pixels.dtype.itemsize != 2:
        raise import_error(image_path, f"16-bit samples of type {pixels.dtype}: expected unsigned integers; "
                           "convert the image to 8-bit RGB or unsigned 16-bit RGB")
    if "S" in axes:  # planar (band-sequential) files come as [bands, H, W]
        pixels = np.moveaxis(pixels, axes.index("S"), -1)
    rgb = pixels[..., :3]
    valid = None
    if im.mode == "RGBA":  # PIL's reading of ExtraSamples: a 4th band that is alpha (not unspecified, e.g. NIR)
        alpha = pixels[..., 3]
        valid = alpha != 0
        if EXTRA_SAMPLE_ASSOCIATED_ALPHA in np.atleast_1d(im.tag_v2.get(TAG_EXTRA_SAMPLES, ())).tolist()[:1]:
            rgb = _unpremultiply(rgb, alpha)  # premultiplied colour: undo, as PIL does for 8-bit
    valid = _without_nodata(pixels[..., :3], valid, nodata)  # as stored, before premultiplication is undone
    return _16bit_to_8bit(image_path, rgb, valid), valid


def _unpremultiply(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = np.maximum(alpha, 1).astype(np.uint32)[..., None]
    return np.minimum((rgb.astype(np.uint32) * 65535 + a // 2) // a, 65535).astype(np.uint16)


def _16bit_to_8bit(image_path: Path, values: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    """16-bit pixel values [H, W] or [H, W, C] -> uint8 over the full 16-bit range, the same scale for every image
    (tiles of one survey keep their colours); warns when the valid pixels stay so low they come out dark."""
    shown = values if valid is None else values[valid]
    hi = int(shown.max()) if shown.size else 0
    if 0 < hi < LOW_RANGE_16BIT:
        log.warning("%s: 16-bit pixels reach only %d of 65535; scaled over the full 16-bit range they come out "
                    "dark: stretch the image to 8 bit first if that is not intended", image_path, hi)
    return scale_16_to_8(values)


def scale_16_to_8(values: np.ndarray) -> np.ndarray:
    """16-bit values -> uint8 ``round(v * 255 / 65535)`` in integers (65535 = 255 * 257: 65535 -> 255 exactly)."""
    return ((np.asarray(values).astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def _read_image(image_path: Path, read):
    """``read(PIL image)`` under the orthophoto pixel limit; unreadable images raise naming the file."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # _check_size guards instead, with a message that says what to do
    try:
        with Image.open(image_path) as im:
            _check_size(image_path, im)
            return read(im)
    except DataImportError:
        raise
    except Exception as err:  # PIL raises many types for unreadable images
        raise import_error(image_path, f"not a readable image ({err})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def _check_size(image_path: Path, im) -> None:
    """Refuse images over ``MAX_ORTHOPHOTO_PIXELS`` from the header, before any pixel is decoded."""
    width, height = im.size
    if width * height > MAX_ORTHOPHOTO_PIXELS:
        raise import_error(
            image_path, f"image size {width} x {height} = {width * height:,} pixels exceeds the orthophoto limit of "
            f"{MAX_ORTHOPHOTO_PIXELS:,} pixels; crop the orthophoto to the point cloud's extent first, e.g. "
            f"gdal_translate -projwin XMIN YMAX XMAX YMIN {image_path.name} cropped.tif"
        )


def check_orthophoto(
    image_path: str | Path,
    world_file: str | Path | None = None,
    bounds: np.ndarray | None = None,
    nodata: int | tuple[int, int, int] | None = None,
    data_epsg: int | None = None,
    data_path: str | Path | None = None,
) -> tuple[np.ndarray, tuple[int, int]]:
    """What ``read_orthophoto`` can find wrong without decoding the image: the files, the world file
    or GeoTIFF tags, the image header, size and pixel mode. With ``bounds`` (xmin, ymin, xmax, ymax, same
    CRS), also that the image's footprint overlaps them; with ``data_path`` (the point cloud, whose EPSG
    code ``data_epsg`` may be None), also ``check_same_crs``. Returns (affine [2, 3], (width, height))."""
    nodata = check_nodata(nodata, image_path)
    image_path = _existing_image(image_path)
    world = Path(world_file) if world_file is not None else _world_file_next_to(image_path)

    def read(im):
        _check_mode(image_path, im, nodata)
        affine, _, epsg = _georeference(image_path, im, world)
        return affine, epsg, im.size

    affine, epsg, size = _read_image(image_path, read)
    if data_path is not None:
        check_same_crs(epsg, data_epsg, image_path, data_path)
    if bounds is not None:
        w, h = size[0] - 0.5, size[1] - 0.5
        corners = np.array([[-0.5, -0.5], [w, -0.5], [w, h], [-0.5, h]]) @ affine[:, :2].T + affine[:, 2]
        lo, hi = corners.min(axis=0), corners.max(axis=0)
        b = np.asarray(bounds, dtype=np.float64)
        if (hi < b[:2]).any() or (lo > b[2:]).any():
            raise import_error(
                image_path,
                f"the image covers x {lo[0]:.1f}..{hi[0]:.1f}, y {lo[1]:.1f}..{hi[1]:.1f}, which misses the "
                f"data's x {b[0]:.1f}..{b[2]:.1f}, y {b[1]:.1f}..{b[3]:.1f}: world file in another CRS or unit, "
                "or another area?",
            )
    return affine, size
