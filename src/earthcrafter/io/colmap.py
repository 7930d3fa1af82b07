"""A COLMAP reconstruction -> a folder of posed frames that ``import_frames`` reads (``kind: frames``).

Usage, from the photos to a frames folder::

    colmap image_undistorter --image_path photos --input_path sparse/0 --output_path dense
    colmap patch_match_stereo --workspace_path dense          # optional: dense depth maps
    earthcrafter colmap-to-frames dense/sparse dense/images frames/flight1 \\
        --depth-dir dense/stereo/depth_maps --units m --origin 500000 4100000 0 --crs EPSG:32610

or ``colmap_to_frames(model_dir, images_dir, out_dir, depth_dir=..., units=...)`` from Python. The
output folder holds ``cameras.json`` (convention "opencv", pixel_centers "half": COLMAP's pixel centres
are at +0.5 like earthcrafter's), ``images/`` (symlinks to the photos, or copies with ``link=False`` /
``--copy``), ``depth/<frame>.npy`` and ``semantic/<frame>.png`` when given.

- Model: a sparse model folder in TEXT (cameras.txt, images.txt) or BINARY (cameras.bin, images.bin)
  format; points3D is not read. Only distortion-free cameras (PINHOLE, SIMPLE_PINHOLE) are accepted:
  run ``colmap image_undistorter`` first; it writes PINHOLE cameras (dense/sparse) and the matching
  undistorted images (dense/images), which are the images to give.
- Images: ``images_dir/<COLMAP image name>``. Registered images whose file is missing are skipped,
  logged by name and listed in the summary; none found is an error.
- Depth (optional): ``depth_dir/<image name>.<depth_kind>.bin`` (``geometric`` or ``photometric``),
  COLMAP's dense depth maps (camera z, 0 = no depth), written as float32 ``.npy`` in COLMAP units with
  NaN for no depth; the importer scales them by ``units`` with the cameras. Depth maps must have the
  image's size (``patch_match_stereo`` with ``--PatchMatchStereo.max_image_size`` shrinks them).
- Semantic maps (optional): ``semantic_dir/<image name with .png>``, class ids as ``import_frames`` reads.
- Scale and orientation: a COLMAP model has an arbitrary scale, position and rotation unless it was
  geo-registered (``colmap model_aligner`` with reference positions of the images), and this converter
  cannot tell. Align the model first (then ``units="m"``, with ``origin`` for large UTM coordinates and
  ``crs``), or at least give a measured scale as ``units`` = metres per COLMAP unit (a 10 m distance
  spanning 2.5 model units: ``units=4.0``); an unaligned model also has no known up axis.

The whole output folder is written atomically: it appears complete or not at all.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from earthcrafter.io.atomic import atomic_path, replace_problem
from earthcrafter.io.frames_import import CAMERAS_FILE, check_frames
from earthcrafter.io.import_common import (
    DataImportError,
    import_error,
    metres_per_unit,
    some_names,
    up_axis_rotation,
)

log = logging.getLogger(__name__)

# COLMAP's camera model ids (colmap/sensor/models.h); a binary file stores only the id.
MODEL_NAMES = {
    0: "SIMPLE_PINHOLE", 1: "PINHOLE", 2: "SIMPLE_RADIAL", 3: "RADIAL", 4: "OPENCV", 5: "OPENCV_FISHEYE",
    6: "FULL_OPENCV", 7: "FOV", 8: "SIMPLE_RADIAL_FISHEYE", 9: "RADIAL_FISHEYE", 10: "THIN_PRISM_FISHEYE",
    11: "RAD_TAN_THIN_PRISM_FISHEYE", 12: "SIMPLE_DIVISION", 13: "DIVISION", 14: "SIMPLE_FISHEYE",
    15: "FISHEYE", 16: "EUCM", 17: "EQUIRECTANGULAR",
}  # fmt: skip
# The distortion-free models and their parameter counts: (f, cx, cy) and (fx, fy, cx, cy).
PINHOLE_PARAMS = {"SIMPLE_PINHOLE": 3, "PINHOLE": 4}
DEPTH_KINDS = ("geometric", "photometric")
UNDISTORT_HINT = (
    "earthcrafter needs undistorted pinhole images: run `colmap image_undistorter --image_path IMAGES "
    "--input_path MODEL --output_path DENSE` and convert DENSE/sparse with the images of DENSE/images"
)
MAX_NAME_BYTES = 4096  # a longer image name means a corrupt (or not a COLMAP) images.bin


@dataclass(frozen=True)
class ColmapCamera:
    """A distortion-free COLMAP camera; ``params`` as COLMAP orders them for ``model``."""

    camera_id: int
    model: str
    width: int
    height: int
    params: tuple[float, ...]

    @property
    def K(self) -> np.ndarray:
        if self.model == "SIMPLE_PINHOLE":
            f, cx, cy = self.params
            fx = fy = f
        else:
            fx, fy, cx, cy = self.params
        return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


@dataclass(frozen=True)
class ColmapImage:
    """A registered image: world-to-camera rotation (unit quaternion w, x, y, z) and translation."""

    image_id: int
    qvec: tuple[float, float, float, float]
    tvec: tuple[float, float, float]
    camera_id: int
    name: str

    @property
    def world_to_camera(self) -> np.ndarray:
        return world_to_camera(self.qvec, self.tvec)


@dataclass(frozen=True)
class ColmapModel:
    cameras: dict[int, ColmapCamera]
    images: dict[int, ColmapImage]
    format: str  # "text" or "binary"
    path: Path


# --------------------------------------------------------------------------- poses


def qvec_to_rotation(qvec) -> np.ndarray:
    """Hamilton quaternion (w, x, y, z), normalised (text files round it), -> 3x3 rotation."""
    q = np.asarray(qvec, dtype=np.float64)
    norm = np.linalg.norm(q)
    if q.shape != (4,) or not np.isfinite(q).all() or norm < 1e-6:
        raise ValueError(f"quaternion (QW, QX, QY, QZ) must be 4 finite numbers, not all 0, got {q.tolist()}")
    import torch

    from earthcrafter.render.gaussians import quat_to_rotmat  # the project's one quaternion convention (w first)

    return quat_to_rotmat(torch.from_numpy(q)).numpy()  # float64 in, float64 out


def world_to_camera(qvec, tvec) -> np.ndarray:
    """COLMAP's pose (x_cam = R(qvec) x_world + tvec, OpenCV camera axes) as a 4x4 matrix."""
    t = np.asarray(tvec, dtype=np.float64)
    if t.shape != (3,) or not np.isfinite(t).all():
        raise ValueError(f"translation (TX, TY, TZ) must be 3 finite numbers, got {t.tolist()}")
    E = np.eye(4)
    E[:3, :3] = qvec_to_rotation(qvec)
    E[:3, 3] = t
    return E


# --------------------------------------------------------------------------- model readers


def read_model(model_dir: str | Path) -> ColmapModel:
    """The cameras and registered images of a sparse model folder, binary preferred (as COLMAP does)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise import_error(model_dir, "COLMAP model folder not found")
    if (model_dir / "cameras.bin").is_file() and (model_dir / "images.bin").is_file():
        cameras = read_cameras_binary(model_dir / "cameras.bin")
        images, fmt = read_images_binary(model_dir / "images.bin"), "binary"
    elif (model_dir / "cameras.txt").is_file() and (model_dir / "images.txt").is_file():
        cameras = read_cameras_text(model_dir / "cameras.txt")
        images, fmt = read_images_text(model_dir / "images.txt"), "text"
    else:
        raise import_error(model_dir, "not a COLMAP sparse model: expected cameras.bin and images.bin, or "
                                      "cameras.txt and images.txt (e.g. sparse/0, or dense/sparse after undistortion)")
    for image in images.values():
        if image.camera_id not in cameras:
            raise import_error(model_dir, f"image {image.name!r} uses CAMERA_ID {image.camera_id}, "
                                          f"which the cameras file lacks (it has {sorted(cameras)[:10]})")
    return ColmapModel(cameras, images, fmt, model_dir)


def _pinhole_camera(where: str, camera_id: int, model: str, width: int, height: int, params) -> ColmapCamera:
    if model not in PINHOLE_PARAMS:
        known = "lens distortion" if model in MODEL_NAMES.values() else "an unknown camera model"
        raise DataImportError(f"{where}: camera {camera_id} uses model {model} ({known}); {UNDISTORT_HINT}")
    if len(params) != PINHOLE_PARAMS[model]:
        raise DataImportError(f"{where}: camera {camera_id}: model {model} takes {PINHOLE_PARAMS[model]} "
                              f"PARAMS, got {len(params)}")
    focal = params[:1] if model == "SIMPLE_PINHOLE" else params[:2]
    if not (np.isfinite(params).all() and min(focal) > 0):
        raise DataImportError(f"{where}: camera {camera_id}: PARAMS must be finite with focal length > 0, "
                              f"got {list(params)}")
    if width <= 0 or height <= 0:
        raise DataImportError(f"{where}: camera {camera_id}: WIDTH, HEIGHT must be positive, got {width}, {height}")
    return ColmapCamera(camera_id, model, int(width), int(height), tuple(float(p) for p in params))


def _add_unique(table: dict, key: int, value, where: str, what: str) -> None:
    if key in table:
        raise DataImportError(f"{where}: {what} {key} appears twice")
    table[key] = value


def _numbers(where: str, fields: list[str], names: list[str], kind=float) -> list:
    try:
        return [kind(v) for v in fields]
    except ValueError:
        bad = next(i for i, v in enumerate(fields) if not _parses(kind, v))
        raise DataImportError(f"{where}: {names[min(bad, len(names) - 1)]} must be a number, "
                              f"got {fields[bad]!r}") from None


def _parses(kind, text: str) -> bool:
    try:
        kind(text)
        return True
    except ValueError:
        return False


def _text_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as err:
        raise import_error(path, f"not a UTF-8 text file ({err}); a binary model is cameras.bin/images.bin") from None


def read_cameras_text(path: str | Path) -> dict[int, ColmapCamera]:
    """cameras.txt: one line per camera, ``CAMERA_ID MODEL WIDTH HEIGHT PARAMS[]``; '#' starts a comment."""
    path, cameras = Path(path), {}
    for lineno, raw in enumerate(_text_lines(path), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where, fields = f"{path}: line {lineno}", line.split()
        if len(fields) < 4:
            raise DataImportError(f"{where}: expected CAMERA_ID MODEL WIDTH HEIGHT PARAMS[], got {line!r}")
        camera_id, width, height = _numbers(where, [fields[0], *fields[2:4]], ["CAMERA_ID", "WIDTH", "HEIGHT"], int)
        params = _numbers(where, fields[4:], ["PARAMS"])
        _add_unique(cameras, camera_id, _pinhole_camera(where, camera_id, fields[1], width, height, params),
                    where, "CAMERA_ID")
    return cameras


IMAGE_FIELDS = ["IMAGE_ID", "QW", "QX", "QY", "QZ", "TX", "TY", "TZ", "CAMERA_ID"]


def read_images_text(path: str | Path) -> dict[int, ColmapImage]:
    """images.txt: two lines per image, ``IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME`` then the
    POINTS2D line (``X Y POINT3D_ID`` triplets, empty when the image has none), which is skipped."""
    path, images = Path(path), {}
    lines = _text_lines(path)
    i = 0
    while i < len(lines):
        line, lineno = lines[i].strip(), i + 1
        i += 1
        if not line or line.startswith("#"):
            continue
        image = _image_from_line(f"{path}: line {lineno}", line)
        points = lines[i].split() if i < len(lines) else []
        if len(points) % 3:  # a missing POINTS2D line would otherwise swallow the next image
            raise DataImportError(f"{path}: line {i + 1}: expected image {image.image_id}'s POINTS2D line "
                                  f"(X Y POINT3D_ID triplets, may be empty), got {lines[i][:80]!r}")
        i += 1
        _add_unique(images, image.image_id, image, f"{path}: line {lineno}", "IMAGE_ID")
    return images


def _image_from_line(where: str, line: str) -> ColmapImage:
    fields = line.split(maxsplit=9)  # the name is the rest of the line: it may hold spaces
    if len(fields) < 10:
        raise DataImportError(f"{where}: expected IMAGE_ID QW QX QY QZ TX TY TZ CAMERA_ID NAME, got {line[:120]!r}")
    image_id, camera_id = _numbers(where, [fields[0], fields[8]], ["IMAGE_ID", "CAMERA_ID"], int)
    pose = _numbers(where, fields[1:8], IMAGE_FIELDS[1:8])
    return _checked_image(where, image_id, pose[:4], pose[4:], camera_id, fields[9])


def _checked_image(where: str, image_id: int, qvec, tvec, camera_id: int, name: str) -> ColmapImage:
    try:
        world_to_camera(qvec, tvec)
    except ValueError as err:
        raise DataImportError(f"{where}: image {image_id} ({name!r}): {err}") from None
    parts = PurePosixPath(name).parts
    if not name or PurePosixPath(name).is_absolute() or ".." in parts:
        raise DataImportError(f"{where}: image {image_id}: NAME must be a relative path inside the images "
                              f"folder, got {name!r}")
    return ColmapImage(image_id, tuple(map(float, qvec)), tuple(map(float, tvec)), camera_id, name)


class _BinaryReader:
    """Little-endian fields of a COLMAP .bin file; running out of bytes names the file and the field."""

    def __init__(self, path: Path, stream):
        self.path, self.stream = path, stream
        self.size = os.fstat(stream.fileno()).st_size

    def unpack(self, fmt: str, what: str) -> tuple:
        n = struct.calcsize(fmt)
        data = self.stream.read(n)
        if len(data) < n:
            raise import_error(self.path, f"file ends early, in {what} (byte {self.stream.tell()} of {self.size})")
        return struct.unpack(fmt, data)

    def skip(self, n: int, what: str) -> None:
        end = self.stream.tell() + n
        if end > self.size:
            raise import_error(self.path, f"file ends early, in {what} ({n} bytes from byte {self.stream.tell()}, "
                                          f"file has {self.size})")
        self.stream.seek(end)

    def cstring(self, what: str) -> str:
        data = bytearray()
        while (byte := self.stream.read(1)) != b"\x00":
            if not byte or len(data) >= MAX_NAME_BYTES:
                raise import_error(self.path, f"{what}: no terminating NUL within {len(data)} bytes (corrupt file?)")
            data += byte
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise import_error(self.path, f"{what} is not UTF-8: {bytes(data)[:60]!r}") from None

    def expect_end(self, what: str) -> None:
        left = self.size - self.stream.tell()
        if left:
            raise import_error(self.path, f"{left} bytes follow the last {what}: not a COLMAP model file?")


def read_cameras_binary(path: str | Path) -> dict[int, ColmapCamera]:
    """cameras.bin: uint64 count, then per camera int32 CAMERA_ID, int32 model id, uint64 WIDTH, HEIGHT,
    float64 PARAMS (as many as the model takes)."""
    path, cameras = Path(path), {}
    with open(path, "rb") as stream:
        reader = _BinaryReader(path, stream)
        (count,) = reader.unpack("<Q", "num_cameras")
        for i in range(count):
            camera_id, model_id, width, height = reader.unpack("<iiQQ", f"camera #{i}")
            model = MODEL_NAMES.get(model_id, f"id {model_id}")
            if model not in PINHOLE_PARAMS:  # other models' parameter counts are not ours to know: stop here
                _pinhole_camera(str(path), camera_id, model, width, height, ())
            params = reader.unpack("<" + "d" * PINHOLE_PARAMS[model], f"camera {camera_id} PARAMS")
            _add_unique(cameras, camera_id, _pinhole_camera(str(path), camera_id, model, width, height, params),
                        str(path), "CAMERA_ID")
        reader.expect_end("camera")
    return cameras


def read_images_binary(path: str | Path) -> dict[int, ColmapImage]:
    """images.bin: uint64 count, then per image int32 IMAGE_ID, float64 QW QX QY QZ TX TY TZ, int32 CAMERA_ID,
    NUL-terminated NAME, uint64 num_points2D and that many (float64 X, float64 Y, int64 POINT3D_ID), skipped."""
    path, images = Path(path), {}
    with open(path, "rb") as stream:
        reader = _BinaryReader(path, stream)
        (count,) = reader.unpack("<Q", "num_reg_images")
        for i in range(count):
            image_id, *pose, camera_id = reader.unpack("<i7di", f"image #{i}")
            name = reader.cstring(f"image {image_id} NAME")
            (num_points,) = reader.unpack("<Q", f"image {image_id} num_points2D")
            reader.skip(24 * num_points, f"image {image_id} POINTS2D")
            image = _checked_image(str(path), image_id, pose[:4], pose[4:], camera_id, name)
            _add_unique(images, image_id, image, str(path), "IMAGE_ID")
        reader.expect_end("image")
    return images


# --------------------------------------------------------------------------- dense maps


def read_colmap_array(path: str | Path) -> np.ndarray:
    """A COLMAP dense map (depth_maps/*.bin, normal_maps/*.bin) -> float32 [H, W, C].

    The file is a text header ``width&height&channels&`` then little-endian float32s; COLMAP's
    ``mvs::Mat`` stores element (row, col, channel) at ``channel * W * H + row * W + col``.
    """
    path = Path(path)
    if not path.is_file():
        raise import_error(path, "COLMAP dense map not found")
    data = path.read_bytes()
    width, height, channels, offset = _array_header(path, data)
    expected = width * height * channels * 4
    if len(data) - offset != expected:
        raise import_error(path, f"header says {width}x{height}x{channels} (WxHxC) float32 = {expected} bytes, "
                                 f"but {len(data) - offset} bytes follow")
    flat = np.frombuffer(data, dtype="<f4", offset=offset)
    return flat.reshape(channels, height, width).transpose(1, 2, 0).astype(np.float32)


def _array_header(path: Path, data: bytes) -> tuple[int, int, int, int]:
    """(width, height, channels, offset of the first float) of a dense map's ``W&H&C&`` header."""
    fields, start = [], 0
    for _ in range(3):
        end = data.find(b"&", start, start + 20)
        if end < 0:
            break
        fields.append(data[start:end])
        start = end + 1
    try:
        width, height, channels = (int(f.decode("ascii")) for f in fields)
    except (ValueError, UnicodeDecodeError):
        raise import_error(path, f"not a COLMAP dense map: header 'width&height&channels&' missing "
                                 f"(file starts {data[:24]!r})") from None
    if min(width, height, channels) <= 0:
        raise import_error(path, f"dense map header gives size {width}x{height}x{channels}")
    return width, height, channels, start


def read_depth_map(path: str | Path) -> np.ndarray:
    """A COLMAP depth map -> float32 [H, W] camera z in model units; 0 where COLMAP found no depth."""
    array = read_colmap_array(path)
    if array.shape[2] != 1:
        raise import_error(path, f"has {array.shape[2]} channels, a depth map 1 (a normal map?)")
    return array[..., 0]


# --------------------------------------------------------------------------- conversion


def colmap_to_frames(
    model_dir: str | Path,
    images_dir: str | Path,
    out_dir: str | Path,
    *,
    depth_dir: str | Path | None = None,
    depth_kind: str = "geometric",
    semantic_dir: str | Path | None = None,
    units: str | float = "m",
    origin=None,
    up_axis: str = "z",
    crs: str | None = None,
    link: bool = True,
) -> dict:
    """Write ``out_dir`` as a frames folder (``cameras.json``, images, depth) of a COLMAP model.

    ``units``, ``origin`` (model units), ``up_axis`` and ``crs`` go to cameras.json as the frames format
    defines them; ``link`` symlinks the images (else copies them). Returns a summary: frames written,
    skipped frames by reason, cameras used, frames with depth / semantic maps.
    """
    model_dir, images_dir, out_dir = Path(model_dir), Path(images_dir), Path(out_dir)
    depth_dir = None if depth_dir is None else Path(depth_dir)
    semantic_dir = None if semantic_dir is None else Path(semantic_dir)
    top = _top_level(units, origin, up_axis, crs)
    if depth_kind not in DEPTH_KINDS:
        raise ValueError(f"depth_kind={depth_kind!r}: expected one of {DEPTH_KINDS}")
    _check_folders(out_dir, {"images": images_dir, "model": model_dir, "depth": depth_dir, "semantic": semantic_dir})
    model = read_model(model_dir)
    present, missing = _split_missing(model, images_dir)
    names = _frame_names(present)
    sources = {"images": images_dir, "depth": depth_dir, "kind": depth_kind, "semantic": semantic_dir}
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        records = [_write_frame(tmp, image, model.cameras[image.camera_id], names[image.image_id], sources, link)
                   for image in present]
        _check_found(records, present, sources)
        (tmp / CAMERAS_FILE).write_text(json.dumps({**top, "frames": records}, indent=1) + "\n")
        try:  # what import_frames will check, before the folder appears
            check_frames(tmp)
        except DataImportError as err:  # name the folder the user asked for, not the staging one
            raise DataImportError(str(err).replace(str(tmp), str(out_dir))) from None
    summary = {
        "out_dir": str(out_dir),
        "model_format": model.format,
        "frames": len(records),
        "cameras": len({image.camera_id for image in present}),
        "with_depth": sum("depth" in r for r in records),
        "with_semantic": sum("semantic" in r for r in records),
        "skipped": {"missing_image": missing} if missing else {},
        "units": units,
    }
    log.info("%s: %d frames from COLMAP model %s (%d skipped, %d with depth)", out_dir, len(records), model_dir,
             len(missing), summary["with_depth"])
    return summary


def _top_level(units, origin, up_axis: str, crs: str | None) -> dict:
    """cameras.json's top-level fields, checked now so a bad option fails before any file is read."""
    metres_per_unit(units, "units")
    up_axis_rotation(up_axis)
    top = {"convention": "opencv", "pixel_centers": "half", "units": units, "up_axis": up_axis}
    if origin is not None:
        o = np.asarray(origin, dtype=np.float64)
        if o.shape != (3,) or not np.isfinite(o).all():
            raise ValueError(f"origin={origin!r}: expected 3 finite numbers (model units)")
        top["origin"] = o.tolist()
    if crs is not None:
        top["crs"] = str(crs)
    return top


def _check_folders(out_dir: Path, inputs: dict[str, Path | None]) -> None:
    """Inputs exist and lie outside ``out_dir``, which is new, empty or an earlier output (it is replaced whole)."""
    for what, folder in inputs.items():
        if folder is None:
            continue
        if not folder.is_dir():
            raise import_error(folder, f"{what} folder not found")
        if folder.resolve().is_relative_to(out_dir.resolve()):
            raise import_error(out_dir, f"the output folder holds the {what} folder {folder}; it is replaced "
                                        "whole, so choose another output folder")
    problem = replace_problem(out_dir, CAMERAS_FILE, "a frames folder")
    if problem:
        raise import_error(out_dir, problem)


def _split_missing(model: ColmapModel, images_dir: Path) -> tuple[list[ColmapImage], list[str]]:
    """(images whose file is in ``images_dir``, by IMAGE_ID; names of those that are not)."""
    images = [model.images[i] for i in sorted(model.images)]
    found = [(images_dir / im.name).is_file() for im in images]
    present = [im for im, ok in zip(images, found) if ok]
    missing = [im.name for im, ok in zip(images, found) if not ok]
    if not images:
        raise import_error(model.path, "the model has no registered images")
    if not present:
        raise import_error(images_dir, f"none of the model's {len(images)} image files is here "
                                       f"(e.g. {missing[:3]}); give the folder the model's image names are relative to")
    if missing:
        log.warning("%s: %d of %d images of the COLMAP model are missing, skipped: %s", images_dir, len(missing),
                    len(images), some_names(missing, 20))
    return present, missing


def _frame_names(images: list[ColmapImage]) -> dict[int, str]:
    """IMAGE_ID -> a unique frame name of ``[A-Za-z0-9_.-]`` (the image path without its extension)."""
    base = {im.image_id: re.sub(r"[^A-Za-z0-9_.-]", "_", "_".join(PurePosixPath(im.name).with_suffix("").parts))
            for im in images}
    counts: dict[str, int] = {}
    for name in base.values():
        counts[name] = counts.get(name, 0) + 1
    taken = {name for name in base.values() if counts[name] == 1}  # unique names stay as they are
    out = {}
    for i, name in base.items():
        if counts[name] > 1:  # a.jpg and a.png: a_<id>, and further suffixes while that is taken (a_1.jpg)
            candidate, k = f"{name}_{i}", 1
            while candidate in taken:
                candidate, k = f"{name}_{i}_{k}", k + 1
            name = candidate
        taken.add(name)
        out[i] = name
    return out


def _write_frame(out: Path, image: ColmapImage, camera: ColmapCamera, name: str, sources: dict, link: bool) -> dict:
    """Place one frame's files under ``out``; its cameras.json record."""
    rgb = sources["images"] / image.name
    _check_image_size(rgb, camera)
    record = {"name": name, "rgb": f"images/{image.name}", "K": camera.K.tolist(),
              "world_to_camera": image.world_to_camera.tolist(), "width": camera.width, "height": camera.height}
    _place(rgb, out / record["rgb"], link)
    if sources["depth"] is not None:
        depth_path = sources["depth"] / f"{image.name}.{sources['kind']}.bin"
        if depth_path.is_file():
            record["depth"] = f"depth/{name}.npy"
            (out / "depth").mkdir(exist_ok=True)
            np.save(out / record["depth"], _depth_for_frames(depth_path, camera))
    if sources["semantic"] is not None:
        semantic_path = sources["semantic"] / PurePosixPath(image.name).with_suffix(".png")
        if semantic_path.is_file():
            record["semantic"] = f"semantic/{name}.png"
            _place(semantic_path, out / record["semantic"], link)
    return record


def _check_image_size(path: Path, camera: ColmapCamera) -> None:
    """Fail early on the common mix-up: the original photos given with the undistorted model."""
    try:
        with Image.open(path) as im:  # reads the header only
            size = im.size
    except Exception as err:  # PIL raises many types on unreadable files
        raise import_error(path, f"not a readable image ({err})") from None
    if size != (camera.width, camera.height):
        raise import_error(path, f"image is {size[0]}x{size[1]} (WxH), its COLMAP camera {camera.camera_id} says "
                                 f"{camera.width}x{camera.height}: give the images the model was made with "
                                 "(after image_undistorter: its output's images folder)")


def _place(src: Path, dst: Path, link: bool) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if link:
        os.symlink(src.resolve(), dst)
    else:
        shutil.copy2(src, dst)


def _depth_for_frames(path: Path, camera: ColmapCamera) -> np.ndarray:
    """COLMAP depth (model units, 0 = none) -> float32 [H, W] in model units with NaN for none."""
    depth = read_depth_map(path)
    if depth.shape != (camera.height, camera.width):
        raise import_error(path, f"depth map is {depth.shape[1]}x{depth.shape[0]} (WxH), the image "
                                 f"{camera.width}x{camera.height}: run patch_match_stereo without max_image_size")
    return np.where(np.isfinite(depth) & (depth > 0), depth, np.nan).astype(np.float32)


def _check_found(records: list[dict], images: list[ColmapImage], sources: dict) -> None:
    """A depth or semantic folder that matches no image is a wrong path, not a model without depth."""
    for key, suffix in (("depth", f".{sources['kind']}.bin"), ("semantic", ".png")):
        if sources[key] is None:
            continue
        lacking = [image.name for image, record in zip(images, records) if key not in record]
        if not lacking:
            continue
        first = lacking[0]
        expected = f"{first}{suffix}" if key == "depth" else str(PurePosixPath(first).with_suffix(suffix))
        if len(lacking) == len(records):
            hint = " (the dense workspace's stereo/depth_maps; or depth_kind)" if key == "depth" else ""
            raise import_error(sources[key], f"no {key} map of any frame here, e.g. {expected}{hint}")
        log.warning("%s: %d of %d frames have no %s map (e.g. no %s)", sources[key], len(lacking), len(records),
                    key, expected)
