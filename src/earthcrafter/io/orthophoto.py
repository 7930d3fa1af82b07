"""Georeferenced orthophotos: an RGB image plus an ESRI world file affine.

World file (``.wld``, ``.jgw``, ``.pgw``, ``.tfw``, ...): six numbers, one a line,
``A, D, B, E, C, F``, mapping the 0-based pixel index (col, row) of a pixel's *centre*
to map coordinates::

    x = A * col + B * row + C
    y = D * col + E * row + F

so (C, F) is the centre of the top-left pixel. ``Orthophoto.affine`` is the 2x3 matrix
``[[A, B, C], [D, E, F]]`` with that same pixel-centre convention, in whatever frame the
orthophoto lives (source CRS units when read, local metres once ``to_local`` is applied).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from earthcrafter.io.import_common import import_error

# Orthophotos are legitimately huge; PIL's decompression-bomb guard is for untrusted web images.
MAX_ORTHOPHOTO_PIXELS = 1_000_000_000
_SAMPLE_CHUNK = 1 << 20


@dataclass(frozen=True)
class Orthophoto:
    image: np.ndarray  # [H, W, 3] uint8
    affine: np.ndarray  # [2, 3]: (x, y) = affine @ (col, row, 1), pixel centres
    source: str = ""  # file it came from, for messages and metadata

    def __post_init__(self) -> None:
        image = np.asarray(self.image)
        affine = np.asarray(self.affine, dtype=np.float64)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"Orthophoto image must be [H, W, 3] uint8, got {image.shape} {image.dtype}")
        if affine.shape != (2, 3) or not np.isfinite(affine).all():
            raise ValueError(f"Orthophoto affine must be a finite 2x3 matrix, got {affine.tolist()}")
        if abs(np.linalg.det(affine[:, :2])) < 1e-15:
            raise ValueError(f"Orthophoto affine is singular: {affine.tolist()}")
        object.__setattr__(self, "image", image)
        object.__setattr__(self, "affine", affine)

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
        """Bilinear RGB at frame points xy [N, 2] -> float32 [N, 3] in [0, 255], NaN off the image.

        Interpolates between the four nearest pixel centres; within half a pixel of the
        border the edge pixels are used (that band is still on the image).
        """
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        out = np.full((len(xy), 3), np.nan, dtype=np.float32)
        for start in range(0, len(xy), _SAMPLE_CHUNK):
            cr = self.xy_to_pixel(xy[start : start + _SAMPLE_CHUNK])
            inside = self._on_image(cr)
            cr = cr[inside] if not inside.all() else cr
            out[start : start + len(inside)][inside] = bilinear(self.image, cr[:, 0], cr[:, 1])
        return out

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
        return Orthophoto(self.image[r0:r1, c0:c1].copy(), affine, self.source)

    def to_local(self, origin_xy: np.ndarray, metres_per_unit: float) -> "Orthophoto":
        """The same image in a local metric frame: ``local = (xy - origin_xy) * metres_per_unit``."""
        affine = self.affine * metres_per_unit
        affine[:, 2] = (self.affine[:, 2] - np.asarray(origin_xy, dtype=np.float64)) * metres_per_unit
        return Orthophoto(self.image, affine, self.source)


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
    image_path = Path(image_path)
    ext = image_path.suffix.lstrip(".")
    candidates = [image_path.with_suffix(".wld")]
    if ext:
        candidates += [image_path.with_suffix(f".{ext[0]}{ext[-1]}w"), image_path.with_suffix(f".{ext}w")]
    for cand in candidates:
        for variant in (cand, cand.with_suffix(cand.suffix.upper())):
            if variant.is_file():
                return variant
    raise import_error(image_path, f"no world file found (looked for {[c.name for c in candidates]}); pass world_file=")


def read_orthophoto(image_path: str | Path, world_file: str | Path | None = None) -> Orthophoto:
    """Read an RGB image and its world file (found next to the image when not given)."""
    image_path, affine = _image_and_world_file(image_path, world_file)
    image = _read_image(image_path, lambda im: np.asarray(im.convert("RGB")))
    return Orthophoto(image, affine, str(image_path))


def _image_and_world_file(image_path: str | Path, world_file: str | Path | None) -> tuple[Path, np.ndarray]:
    image_path = Path(image_path)
    if not image_path.is_file():
        raise import_error(image_path, "orthophoto image not found")
    return image_path, read_world_file(world_file if world_file is not None else find_world_file(image_path))


def _read_image(image_path: Path, read):
    """``read(PIL image)`` under the orthophoto pixel limit; unreadable images raise naming the file."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = MAX_ORTHOPHOTO_PIXELS
    try:
        with Image.open(image_path) as im:
            return read(im)
    except Exception as err:  # PIL raises many types for unreadable images
        raise import_error(image_path, f"not a readable image ({err})") from None
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def check_orthophoto(
    image_path: str | Path, world_file: str | Path | None = None, bounds: np.ndarray | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """What ``read_orthophoto`` can find wrong without decoding the image: the files, the world file,
    the image header. With ``bounds`` (xmin, ymin, xmax, ymax, same CRS), also that the image's
    footprint overlaps them. Returns (affine [2, 3], (width, height))."""
    image_path, affine = _image_and_world_file(image_path, world_file)
    size = _read_image(image_path, lambda im: im.size)
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

