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
A world file next to the image wins over the tags.

Pixels that are fully transparent (alpha 0) or equal the ``nodata`` value hold no image: the
``valid`` mask marks the others. 16-bit pixels are scaled to 8 bit over the full 16-bit range.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from earthcrafter.io.import_common import DataImportError, import_error

log = logging.getLogger(__name__)

# Orthophotos are legitimately huge; PIL's decompression-bomb guard is for untrusted web images.
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


@dataclass(frozen=True)
class Orthophoto:
    image: np.ndarray  # [H, W, 3] uint8
    affine: np.ndarray  # [2, 3]: (x, y) = affine @ (col, row, 1), pixel centres
    source: str = ""  # file it came from, for messages and metadata
    valid: np.ndarray | None = None  # [H, W] bool: pixels holding image (not transparent / nodata); None: all
    georef_file: str = ""  # file the affine was read from (world file, or the GeoTIFF itself)

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
    keys = np.asarray(tags.get(TAG_GEOKEYS) or (), dtype=np.int64).ravel()
    if keys.size < 8:
        return 1
    entries = keys[4 : 4 + 4 * int(keys[3])]
    for key_id, location, _count, value in entries[: entries.size // 4 * 4].reshape(-1, 4):
        if key_id == GEOKEY_RASTER_TYPE and location == 0:
            return int(value)
    return 1


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
    the image's GeoTIFF tags. Pixels with alpha 0 or equal to ``nodata`` (compared before any
    scaling) are marked invalid; 16-bit pixels are scaled to 8 bit over 0..65535."""
    nodata = check_nodata(nodata, image_path)
    image_path = _existing_image(image_path)
    world = Path(world_file) if world_file is not None else _world_file_next_to(image_path)

    def read(im):
        affine, georef = _georeference(image_path, im, world)
        return affine, georef, *_decode(image_path, im, nodata)

    affine, georef, rgb, valid = _read_image(image_path, read)
    if valid is not None and not valid.all():
        log.info("%s: %d of %d pixels hold no image (alpha 0 or nodata=%s)", image_path, int((~valid).sum()),
                 valid.size, nodata)
    return Orthophoto(rgb, affine, str(image_path.resolve()), valid, str(georef.resolve()))


def _existing_image(image_path: str | Path) -> Path:
    image_path = Path(image_path)
    if not image_path.is_file():
        raise import_error(image_path, "orthophoto image not found")
    return image_path


def _georeference(image_path: Path, im, world: Path | None) -> tuple[np.ndarray, Path]:
    """(affine, the file it came from): the world file when there is one, else the GeoTIFF tags."""
    tags = getattr(im, "tag_v2", None)  # TIFF only
    if world is not None:
        if tags is not None and any(t in tags for t in (TAG_TIEPOINT, TAG_TRANSFORMATION)):
            log.info("%s: world file %s used; the image's GeoTIFF tags are ignored", image_path, world)
        return read_world_file(world), world
    affine = geotiff_affine(image_path, tags)
    if affine is None:
        names = [c.name for c in _world_file_candidates(image_path)]
        raise import_error(
            image_path, f"no world file found (looked for {names}) and no GeoTIFF georeferencing tags "
            "(ModelPixelScale + ModelTiepoint, or ModelTransformation); pass world_file="
        )
    return affine, image_path


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
    if im.mode not in SIXTEEN_BIT_MODES and max(nodata) > 255:
        raise import_error(image_path, f"nodata={nodata} exceeds 255, but mode {im.mode!r} holds 8-bit values")


def _decode(image_path: Path, im, nodata: tuple[int, int, int] | None) -> tuple[np.ndarray, np.ndarray | None]:
    """PIL image -> (RGB uint8 [H, W, 3], valid [H, W] bool, or None when no pixel can be invalid)."""
    _check_mode(image_path, im, nodata)
    if im.mode in SIXTEEN_BIT_MODES:
        return _decode_16bit(image_path, im, nodata)
    im.load()  # decoding errors are "not a readable image"; conversion errors below name the mode
    try:
        has_alpha = im.mode in ALPHA_MODES or "transparency" in im.info
        pixels = np.asarray(im.convert("RGBA" if has_alpha else "RGB"))
    except ValueError as err:
        raise import_error(image_path, f"pixel mode {im.mode!r} cannot be converted to RGB ({err})") from None
    rgb = pixels[..., :3]
    valid = pixels[..., 3] != 0 if has_alpha else None
    if nodata is not None:
        is_nodata = (rgb[..., 0] == nodata[0]) & (rgb[..., 1] == nodata[1]) & (rgb[..., 2] == nodata[2])
        valid = ~is_nodata if valid is None else valid & ~is_nodata
    return rgb, valid


def _decode_16bit(image_path: Path, im, nodata: tuple[int, int, int] | None) -> tuple[np.ndarray, np.ndarray | None]:
    """One 16-bit (or 32-bit integer) channel -> grey RGB, scaled over the full 16-bit range."""
    grey = np.asarray(im)
    lo, hi = int(grey.min()), int(grey.max())
    if lo < 0 or hi > 65535:
        raise import_error(
            image_path, f"pixel mode {im.mode!r} holds values {lo}..{hi}, outside 16 bit (0..65535); "
            "convert the image to 8-bit RGB or 16-bit greyscale"
        )
    if 0 < hi < LOW_RANGE_16BIT:
        log.warning("%s: 16-bit pixels reach only %d of 65535; scaled over the full 16-bit range they come out "
                    "dark: stretch the image to 8 bit first if that is not intended", image_path, hi)
    invalid = np.zeros(grey.shape, dtype=bool)
    transparency = im.info.get("transparency")
    for value in (nodata[0] if nodata else None, transparency if isinstance(transparency, int) else None):
        if value is not None:
            invalid |= grey == value
    grey8 = scale_16_to_8(grey)
    return np.repeat(grey8[..., None], 3, axis=2), ~invalid if invalid.any() else None


def scale_16_to_8(values: np.ndarray) -> np.ndarray:
    """16-bit values -> uint8 ``round(v * 255 / 65535)`` in integers (65535 = 255 * 257: 65535 -> 255 exactly)."""
    return ((np.asarray(values).astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def _read_image(image_path: Path, read):
    """``read(PIL image)`` under the orthophoto pixel limit; unreadable images raise naming the file."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_ORTHOPHOTO_PIXELS
    try:
        with Image.open(image_path) as im:
            return read(im)
    except DataImportError:
        raise
    except Exception as err:  # PIL raises many types for unreadable images
        raise import_error(image_path, f"not a readable image ({err})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def check_orthophoto(
    image_path: str | Path,
    world_file: str | Path | None = None,
    bounds: np.ndarray | None = None,
    nodata: int | tuple[int, int, int] | None = None,
) -> tuple[np.ndarray, tuple[int, int]]:
    """What ``read_orthophoto`` can find wrong without decoding the image: the files, the world file
    or GeoTIFF tags, the image header and pixel mode. With ``bounds`` (xmin, ymin, xmax, ymax, same
    CRS), also that the image's footprint overlaps them. Returns (affine [2, 3], (width, height))."""
    nodata = check_nodata(nodata, image_path)
    image_path = _existing_image(image_path)
    world = Path(world_file) if world_file is not None else _world_file_next_to(image_path)

    def read(im):
        _check_mode(image_path, im, nodata)
        return _georeference(image_path, im, world)[0], im.size

    affine, size = _read_image(image_path, read)
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
