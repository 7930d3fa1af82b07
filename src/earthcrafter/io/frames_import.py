"""A folder of posed frames (RGB, optional depth and semantic maps) -> an earthcrafter scene.

The folder holds a ``cameras.json`` (format in docs/data_import.md) naming each frame's
files and camera. Cameras may be given world-to-camera or camera-to-world, in the
OpenCV or the OpenGL convention; they are converted to earthcrafter's one convention
(``earthcrafter.geometry.cameras``: OpenCV, world-to-camera, pixel centres at +0.5).
Without an ``origin`` the local frame starts at the bounding-box minimum of the camera
centres and depth points, as for LiDAR and meshes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from earthcrafter.geometry.cameras import Camera
from earthcrafter.io.import_common import (
    DataImportError,
    check_coordinates,
    check_scene_id,
    check_scene_size,
    close_name_hint,
    class_histogram,
    extent_metadata,
    floor_origin,
    import_error,
    metres_per_unit,
    origin_metadata,
    scene_id_from_path,
    some_names,
    up_axis_rotation,
)
from earthcrafter.io.scene import Frame, Scene
from earthcrafter.semantics import NUM_CLASSES

log = logging.getLogger(__name__)

CAMERAS_FILE = "cameras.json"
CONVENTIONS = ("opencv", "opengl")
# OpenGL camera axes (x right, y up, z backward) -> OpenCV (x right, y down, z forward).
GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])
FRAME_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
RIGID_TOL = 1e-4
# Skew below this share of fx is float noise from a conversion, not a sheared sensor: taken as 0.
SKEW_TOL = 1e-9
UNKNOWN_CLASS_POLICIES = ("unlabeled", "error")
# Every field cameras.json may hold: anything else is a typo ("unit" for "units") that would be ignored.
TOP_FIELDS = ("frames", "convention", "pixel_centers", "units", "up_axis", "origin", "crs")
FRAME_FIELDS = ("name", "rgb", "depth", "depth_type", "depth_scale", "semantic", "K", "world_to_camera",
                "camera_to_world", "width", "height", "convention", "pixel_centers")
# float32 (renders, TSDF fusion) steps exceed 1 mm beyond 2**14 m from the origin.
FAR_FROM_ORIGIN_M = 2.0**14
# Pose check: neighbouring frames are compared on up to this many pairs, each needing this many shared
# points; a point agrees when the other frame's depth is within this share of its own.
POSE_CHECK_PAIRS = 32
POSE_CHECK_MIN_SHARED = 100
DEPTH_AGREEMENT = 0.1
# Below this median share of agreeing points, neighbouring frames' depth maps contradict each other.
MIN_DEPTH_AGREEMENT = 0.5
# A frame with over this share of its depth points above the camera looks up: a flipped pose if most do.
# Not one half: a street-level view level with tall facades can see half its points above it.
ABOVE_SHARE = 0.75


def import_frames(
    folder: str | Path,
    *,
    cameras_file: str = CAMERAS_FILE,
    unknown_class: str = "unlabeled",
    scene_id: str | None = None,
) -> Scene:
    """Import a folder of posed frames as a scene with ``frames``.

    Args:
        cameras_file: the JSON file inside ``folder`` describing frames and cameras.
        unknown_class: semantic pixel values >= 25: "unlabeled" (class 0, counted) or "error".
    """
    folder = Path(folder)
    scene_id = check_scene_id(scene_id) if scene_id is not None else None
    spec_path, spec = _read_spec(folder, cameras_file, unknown_class)
    world = _world_transform(spec_path, spec)
    frames, unknown_pixels, without_semantic, saturated = [], 0, 0, {}
    records = spec["frames"]
    for i, record in enumerate(tqdm(records, desc=f"frames {folder.name}", unit="frame", disable=len(records) < 50)):
        frame, unknown, saturated[i] = _read_frame(folder, _frame_where(spec_path, i, record), record, spec, world,
                                                   unknown_class)
        frames.append(frame)
        unknown_pixels += unknown
        without_semantic += frame.semantic is None
    _check_unique_names(spec_path, [fr.name for fr in frames])
    frames, samples, points = _place(spec_path, spec, world, frames)
    centres = np.stack([fr.camera.center for fr in frames])
    _check_poses(spec_path, spec, frames, samples)
    dropped = _depth_report(spec_path, frames, {frames[i].name: n for i, n in saturated.items() if n})

    extent_points, extent_source = (points, "depth") if len(points) else (centres, "camera_centres")
    size = extent_metadata(extent_points)["size_m"]
    if len(frames) > 1 or len(points):
        check_scene_size(spec_path, size, "scene" if len(points) else "camera positions")
    labels = [fr.semantic.ravel() for fr in frames if fr.semantic is not None]
    if unknown_pixels:
        log.warning("%s: %d semantic pixels outside 0..%d set to unlabeled", spec_path, unknown_pixels, NUM_CLASSES - 1)

    metadata = {
        "source": "frames",
        "source_files": [str(spec_path.resolve())],
        "crs": spec.get("crs"),
        "origin": origin_metadata(world["origin_src"], np.full(3, world["f"]), world["R"],
                                  units={"linear": str(spec.get("units", "m")), "up_axis": world["up_axis"]}),
        **extent_metadata(extent_points),
        "size_source": extent_source,
        "num_frames_imported": len(frames),
        "class_histogram": class_histogram(np.concatenate(labels) if labels else np.zeros(0, np.int64)),
        "frames_without_semantic": int(without_semantic),
        "unknown_class_pixels": int(unknown_pixels),
        "saturated_depth_pixels": int(sum(saturated.values())),
        "dropped": dropped,
    }
    log.info("%s: imported %d frames (%d without semantic maps)", spec_path, len(frames), without_semantic)
    return Scene(scene_id or scene_id_from_path(folder), metadata, frames=frames)


def check_frames(
    folder: str | Path, *, cameras_file: str = CAMERAS_FILE, unknown_class: str = "unlabeled", **_other
) -> None:
    """What ``import_frames`` can find wrong without reading the images: the options, the folder,
    ``cameras.json`` (JSON, its fields, world frame, every camera, names, depth scales) and that every
    file it names exists. Warns, as the import does, when not every frame has a depth map."""
    folder = Path(folder)
    spec_path, spec = _read_spec(folder, cameras_file, unknown_class)
    _world_transform(spec_path, spec)
    names, without_depth = [], []
    for i, record in enumerate(spec["frames"]):
        name, _ = _check_record(_frame_where(spec_path, i, record), record, spec)
        for key, what in (("rgb", "image"), ("depth", "depth"), ("semantic", "image")):
            if record.get(key) is not None and not (folder / str(record[key])).is_file():
                raise import_error(folder / str(record[key]), f"{what} file not found")
        names.append(name)
        if record.get("depth") is None:
            without_depth.append(name)
    _check_unique_names(spec_path, names)
    _warn_missing_depth(spec_path, without_depth, len(names))


def _read_spec(folder: Path, cameras_file: str, unknown_class: str) -> tuple[Path, dict]:
    """(path, parsed object) of the cameras file, with its top-level shape and field names checked."""
    if unknown_class not in UNKNOWN_CLASS_POLICIES:
        raise ValueError(f"unknown_class={unknown_class!r}: expected one of {UNKNOWN_CLASS_POLICIES}")
    spec_path = folder / cameras_file
    if not folder.is_dir():
        raise import_error(folder, "frames folder not found")
    if not spec_path.is_file():
        raise import_error(spec_path, "cameras file not found")
    try:
        spec = json.loads(spec_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise import_error(spec_path, f"invalid JSON ({err})") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("frames"), list) or not spec["frames"]:
        raise import_error(spec_path, "expected an object with a non-empty list 'frames'")
    _check_fields(str(spec_path), spec, TOP_FIELDS, "top-level")
    return spec_path, spec


def _check_fields(where: str, record: dict, fields: tuple[str, ...], what: str) -> None:
    """Refuse fields the format does not have, naming the closest one (a misspelt field would be ignored)."""
    unknown = [key for key in record if key not in fields]
    if not unknown:
        return
    hints = [f"{key!r} (a frame field: set it in each frame)" if what == "top-level" and key in FRAME_FIELDS
             else close_name_hint(key, fields) for key in unknown]  # fmt: skip
    raise DataImportError(f"{where}: unknown {what} field(s) {', '.join(hints)}; the fields are {sorted(fields)}")


def _frame_where(spec_path: Path, i: int, record) -> str:
    """How errors name a frame: ``cameras.json: frame #3 ('img_0004')``, the name as soon as the record gives
    one (its ``name``, else its rgb file's stem)."""
    where = f"{spec_path}: frame #{i}"
    if not isinstance(record, dict) or ("name" not in record and "rgb" not in record):
        return where
    return f"{where} ({_record_name(record)!r})"


def _record_name(record: dict) -> str:
    """A frame's name: its ``name``, else its rgb file's stem."""
    return str(record.get("name", Path(str(record.get("rgb"))).stem))


def _check_record(where: str, record, spec: dict) -> tuple[str, Camera]:
    """A frame record's name and camera (in the file's world frame), every field but the files checked."""
    if not isinstance(record, dict):
        raise DataImportError(f"{where}: expected an object, got {type(record).__name__}")
    _check_fields(where, record, FRAME_FIELDS, "frame")
    if "rgb" not in record:
        raise DataImportError(f"{where}: missing field 'rgb' (image file name)")
    name = _record_name(record)
    if not FRAME_NAME.match(name):
        raise DataImportError(f"{where}: frame name must match {FRAME_NAME.pattern}")
    camera = _frame_camera(where, record, spec)
    if record.get("depth_type", "z") not in ("z", "ray"):
        raise DataImportError(f"{where}: depth_type must be 'z' or 'ray', got {record['depth_type']!r}")
    _depth_scale(where, record)
    return name, camera


def _depth_scale(where: str, record: dict) -> float | None:
    """The record's ``depth_scale`` (units per count of an integer depth image), None when not given."""
    if "depth_scale" not in record:
        return None
    scale = record["depth_scale"]
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (math.isfinite(scale) and scale > 0):
        raise DataImportError(
            f"{where}: depth_scale={scale!r}: expected a positive number, the depth units per count of an "
            "integer depth image (e.g. 0.001 for millimetres with units 'm')"
        )
    return float(scale)


# --------------------------------------------------------------------------- cameras


def _world_transform(spec_path: Path, spec: dict) -> dict:
    """The map from the file's world frame to the local metric frame: ``local = R @ ((p - origin) * f)``."""
    try:
        f = metres_per_unit(spec.get("units", "m"), "units")
        up_axis = spec.get("up_axis", "z")
        R = up_axis_rotation(up_axis)
        origin = np.asarray(spec.get("origin", [0.0, 0.0, 0.0]), dtype=np.float64)
    except (ValueError, TypeError) as err:
        raise import_error(spec_path, str(err)) from None
    if origin.shape != (3,) or not np.isfinite(origin).all():
        raise import_error(spec_path, f"'origin' must be 3 finite numbers, got {spec.get('origin')!r}")
    return {"f": f, "R": R, "origin_src": origin, "up_axis": up_axis}


def camera_from_record(record: dict, convention: str = "opencv", pixel_centers: str = "half") -> Camera:
    """A frame record (K, world_to_camera | camera_to_world, width, height) -> earthcrafter ``Camera``.

    ``convention`` "opengl" means camera axes x right, y up, z backward; ``pixel_centers``
    "integer" means K was calibrated with pixel centres at integers (OpenCV calibration),
    so +0.5 is added to the principal point. Raises ``ValueError`` naming the field.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention={convention!r}: expected one of {CONVENTIONS}")
    for key in ("K", "width", "height"):
        if key not in record:
            raise ValueError(f"missing field {key!r}")
    has_w2c, has_c2w = "world_to_camera" in record, "camera_to_world" in record
    if has_w2c == has_c2w:
        raise ValueError("give exactly one of 'world_to_camera' and 'camera_to_world'")
    pose = _matrix(record, "world_to_camera" if has_w2c else "camera_to_world", (4, 4))
    _check_rigid(pose, "world_to_camera" if has_w2c else "camera_to_world")
    w2c = pose if has_w2c else _rigid_inverse(pose)
    if convention == "opengl":
        w2c = GL_TO_CV @ w2c
    K = _matrix(record, "K", (3, 3))
    if not (K[0, 0] > 0 and K[1, 1] > 0 and np.allclose(K[2], [0, 0, 1]) and K[1, 0] == 0):
        raise ValueError(
            f"'K' must be pixel intrinsics [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0, got {K.tolist()}"
        )
    if abs(K[0, 1]) > SKEW_TOL * K[0, 0]:  # earthcrafter's cameras, renders and fusion have no skew term
        raise ValueError(
            f"'K' has skew s = K[0][1] = {float(K[0, 1])!r}; earthcrafter cameras are skew-free pinholes: "
            "undistort and rectify the images (e.g. colmap image_undistorter) and give their K"
        )
    K = K.copy()
    K[0, 1] = 0.0
    if pixel_centers == "integer":
        K[:2, 2] += 0.5
    elif pixel_centers != "half":
        raise ValueError(f"pixel_centers={pixel_centers!r}: expected 'half' or 'integer'")
    width, height = record["width"], record["height"]
    if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
        raise ValueError(f"'width'/'height' must be positive integers, got {width!r}, {height!r}")
    return Camera(K, w2c, width, height)


def _matrix(record: dict, key: str, shape: tuple[int, int]) -> np.ndarray:
    try:
        m = np.asarray(record[key], dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{key!r} is not a numeric matrix") from None
    if m.shape != shape or not np.isfinite(m).all():
        raise ValueError(f"{key!r} must be a finite {shape[0]}x{shape[1]} matrix, got shape {m.shape}")
    return m


def _check_rigid(pose: np.ndarray, key: str) -> None:
    R = pose[:3, :3]
    rigid = np.allclose(R @ R.T, np.eye(3), atol=RIGID_TOL) and np.linalg.det(R) > 0
    if not (rigid and np.allclose(pose[3], [0, 0, 0, 1])):
        raise ValueError(f"{key!r} is not a rigid transform (rotation must be orthonormal, det +1, last row 0 0 0 1)")


def _rigid_inverse(pose: np.ndarray) -> np.ndarray:
    inv = np.eye(4)
    inv[:3, :3] = pose[:3, :3].T
    inv[:3, 3] = -pose[:3, :3].T @ pose[:3, 3]
    return inv


def _to_local(camera: Camera, world: dict) -> Camera:
    """Re-express a camera of the file's world frame in the local metric frame.

    With p = R^T local / f + origin: cam_m = f * (E_R p + E_t) = E_R R^T local + f (E_R origin + E_t).
    """
    E, R, f = camera.world_to_camera, world["R"], world["f"]
    out = np.eye(4)
    out[:3, :3] = E[:3, :3] @ R.T
    out[:3, 3] = f * (E[:3, :3] @ world["origin_src"] + E[:3, 3])
    return Camera(camera.K, out, camera.width, camera.height)


# --------------------------------------------------------------------------- images


def _frame_camera(where: str, record: dict, spec: dict) -> Camera:
    try:
        return camera_from_record(
            record,
            record.get("convention", spec.get("convention", "opencv")),
            record.get("pixel_centers", spec.get("pixel_centers", "half")),
        )
    except ValueError as err:
        raise DataImportError(f"{where}: {err}") from None


def _read_frame(folder: Path, where: str, record, spec: dict, world: dict, policy: str) -> tuple[Frame, int, int]:
    """(frame in the local frame, semantic pixels outside the classes, depth pixels at the integer maximum)."""
    name, camera = _check_record(where, record, spec)
    camera = _to_local(camera, world)
    hw = (camera.height, camera.width)
    rgb = _read_rgb(folder / str(record["rgb"]), hw)
    depth, saturated = None, 0
    if record.get("depth") is not None:
        depth, saturated = _read_depth(folder / str(record["depth"]), hw, record, where)
        depth = depth * world["f"]
        if record.get("depth_type", "z") == "ray":
            depth = _ray_to_z(camera, depth)
    semantic, unknown = None, 0
    if record.get("semantic") is not None:
        semantic, unknown = _read_semantic(folder / str(record["semantic"]), hw, policy)
    return Frame(name, camera, rgb, depth, None, semantic), unknown, saturated


def _read_image(path: Path) -> np.ndarray:
    if not path.is_file():
        raise import_error(path, "image file not found")
    try:
        return np.asarray(iio.imread(path))
    except Exception as err:  # imageio raises many types on unreadable files
        raise import_error(path, f"not a readable image ({err})") from None


def _check_size(path: Path, image: np.ndarray, hw: tuple[int, int]) -> None:
    if image.shape[:2] != hw:
        raise import_error(path, f"image is {image.shape[1]}x{image.shape[0]} (WxH), camera says {hw[1]}x{hw[0]}")


def _read_rgb(path: Path, hw: tuple[int, int]) -> np.ndarray:
    """RGB image -> uint8 [H, W, 3] (grey expanded, alpha dropped, 16-bit scaled)."""
    image = _read_image(path)
    _check_size(path, image, hw)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4):
        raise import_error(path, f"expected a grey, grey+alpha, RGB or RGBA image, got shape {image.shape}")
    image = np.repeat(image[..., :1], 3, axis=2) if image.shape[2] <= 2 else image[..., :3]
    if image.dtype == np.uint16:
        image = np.round(image / 257.0)
    elif np.issubdtype(image.dtype, np.floating):
        image = np.clip(image, 0, 1) * 255.0
    return np.clip(image, 0, 255).astype(np.uint8)


def _read_depth(path: Path, hw: tuple[int, int], record: dict, where: str) -> tuple[np.ndarray, int]:
    """Depth map in file units -> (float32 [H, W], 0 / non-finite = no hit -> inf; pixels at the integer maximum).

    .npy / .npz (key ``depth``) hold floats in the file's units; integer images (16-bit PNG) need
    ``depth_scale`` (file units per count, e.g. 0.001 for millimetres with units "m"), and only they take it.
    """
    depth = _load_depth(path)
    if depth.ndim == 3 and depth.shape[2] == 1:
        depth = depth[..., 0]
    if depth.ndim != 2:
        raise import_error(path, f"depth must be [H, W], got shape {depth.shape}")
    _check_size(path, depth, hw)
    scale, saturated = _depth_scale(where, record), 0
    if np.issubdtype(depth.dtype, np.integer):
        if scale is None:
            raise DataImportError(f"{where}: integer depth image {path.name} needs 'depth_scale' (units per count)")
        saturated = int((depth == np.iinfo(depth.dtype).max).sum())  # the format's ceiling: farther is clipped
        depth = depth.astype(np.float64) * scale
    elif scale is not None:  # a scale meant for other files, or floats in another unit: either way a silent error
        raise DataImportError(
            f"{where}: depth_scale={scale!r} is for integer depth images, but {path.name} holds {depth.dtype} "
            "values, read as they are in the file's units: remove depth_scale, or store the depth in those units"
        )
    depth = depth.astype(np.float32)
    if (depth[np.isfinite(depth)] < 0).any():
        raise import_error(path, "depth has negative values")
    return np.where(np.isfinite(depth) & (depth > 0), depth, np.inf).astype(np.float32), saturated


def _load_depth(path: Path) -> np.ndarray:
    if not path.is_file():
        raise import_error(path, "depth file not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            return np.load(path)
        if suffix == ".npz":
            with np.load(path) as data:
                if "depth" not in data:
                    raise import_error(path, f"npz lacks array 'depth' (has {list(data)})")
                return data["depth"]
        return _read_image(path)
    except DataImportError:
        raise
    except Exception as err:
        raise import_error(path, f"not a readable depth map ({err})") from None


def _ray_to_z(camera: Camera, ray_depth: np.ndarray) -> np.ndarray:
    """Distance along each pixel's ray -> camera z (what earthcrafter's depth maps store)."""
    _, dirs = camera.pixel_rays()
    cos = dirs @ camera.forward
    return (ray_depth * cos).astype(np.float32)


def _read_semantic(path: Path, hw: tuple[int, int], policy: str) -> tuple[np.ndarray, int]:
    """Class-id image -> uint8 [H, W]; values >= NUM_CLASSES per policy; returns (labels, unknown count)."""
    image = _read_labels(path)
    if image.ndim == 3 and image.shape[2] in (3, 4) and (image[..., 1:3] == image[..., :1]).all():
        image = image[..., 0]  # grey class ids saved as RGB(A): every channel holds the id
    if image.ndim != 2:
        raise import_error(
            path,
            f"semantic map must hold class ids in one channel (a grey or palette PNG), got shape {image.shape}: "
            f"map a colour-coded label image to class ids 0..{NUM_CLASSES - 1} first",
        )
    _check_size(path, image, hw)
    unknown = (image < 0) | (image >= NUM_CLASSES)
    if unknown.any() and policy == "error":
        values = np.unique(image[unknown]).tolist()
        raise import_error(
            path, f"{int(unknown.sum())} pixels hold class values outside 0..{NUM_CLASSES - 1}: {values[:10]}"
        )
    return np.where(unknown, 0, image).astype(np.uint8), int(unknown.sum())


def _read_labels(path: Path) -> np.ndarray:
    """A label image's values; for a palette (mode P) PNG its indices, the class ids, which imageio would
    expand to the palette's colours."""
    try:
        with Image.open(path) as image:
            if image.mode == "P":
                return np.asarray(image)
    except Exception:  # missing or not for PIL: _read_image names the problem
        pass
    return _read_image(path)


def _check_unique_names(spec_path: Path, names: list[str]) -> None:
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise import_error(spec_path, f"frame names repeat: {repeated}")


# --------------------------------------------------------------------------- the imported frames


def _depth_samples(frames: list[Frame], max_per_frame: int = 4096) -> list[np.ndarray | None]:
    """Per frame, world points [N, 3] of a strided subset of its valid depth (None without a depth map)."""
    out = []
    for fr in frames:
        if fr.depth is None:
            out.append(None)
            continue
        stride = max(1, int(np.sqrt(fr.depth.size / max_per_frame)))
        world = fr.camera.unproject_depth(fr.depth)[::stride, ::stride].reshape(-1, 3)
        out.append(world[np.isfinite(world).all(axis=1)])
    return out


def _place(spec_path: Path, spec: dict, world: dict, frames: list[Frame]) -> tuple[list[Frame], list, np.ndarray]:
    """Check the frames' coordinates and, without a given ``origin``, move them to the bounding-box origin.

    Returns the frames, their depth samples (``_depth_samples``) and those samples' points [N, 3]
    together, in the final local frame.
    """
    samples = _depth_samples(frames)
    centres = np.stack([fr.camera.center for fr in frames])
    check_coordinates(spec_path, centres, "camera centres")
    points = np.concatenate([s for s in samples if s is not None] or [np.zeros((0, 3))])
    if len(points):
        check_coordinates(spec_path, points, "depth points")
    if "origin" in spec:
        _warn_far_from_origin(spec_path, centres, points, world)
        return frames, samples, points
    shift = _bounding_box_origin(np.concatenate([centres, points]), world)
    frames = [dataclasses.replace(fr, camera=_shifted(fr.camera, shift)) for fr in frames]
    return frames, [None if s is None else s - shift for s in samples], points - shift


def _bounding_box_origin(local: np.ndarray, world: dict) -> np.ndarray:
    """Re-centre on the bounding-box minimum of the local points [N, 3] (taken with origin 0), rounded down to
    a whole source unit as for LiDAR and meshes; records it in ``world`` and returns the shift in metres.

    Without it, poses in UTM put the scene 500 km from the origin, where float32 renders and fusion round
    to centimetres or worse.
    """
    origin_rotated = floor_origin(local / world["f"])  # source units, z-up axes
    world["origin_src"] = world["R"].T @ origin_rotated
    return origin_rotated * world["f"]


def _shifted(camera: Camera, shift: np.ndarray) -> Camera:
    """The camera in a frame moved by ``shift`` (local' = local - shift)."""
    E = camera.world_to_camera.copy()
    E[:3, 3] += E[:3, :3] @ shift
    return Camera(camera.K, E, camera.width, camera.height)


def _warn_far_from_origin(spec_path: Path, centres: np.ndarray, points: np.ndarray, world: dict) -> None:
    """Warn when a given ``origin`` leaves every camera so far away that float32 loses millimetres; suggest
    the origin a missing ``origin`` gives (the bounding-box minimum)."""
    nearest = float(np.abs(centres).max(axis=1).min())
    if nearest <= FAR_FROM_ORIGIN_M:
        return
    suggested = world["R"].T @ floor_origin(np.concatenate([centres, points]) / world["f"]) + world["origin_src"]
    log.warning(
        "%s: with 'origin' %s every camera centre lies %.1f km or more from the local origin, where float32 "
        "renders and TSDF fusion round to %.0f mm steps; set 'origin' near the data, e.g. %s (source units), "
        "or leave it out to start the local frame at the data's bounding-box minimum",
        spec_path, world["origin_src"].tolist(), nearest / 1000, 1000 * float(np.spacing(np.float32(nearest))),
        suggested.tolist(),
    )


def _check_poses(spec_path: Path, spec: dict, frames: list[Frame], samples: list[np.ndarray | None]) -> None:
    """Warn (only: the geometry is kept) when the poses contradict the depth maps.

    Aerial and street views look down or level, so most of what a frame sees lies below its camera; in
    the other camera convention (OpenGL axes read as OpenCV, or the reverse) each view turns 180 degrees
    about its x axis and the ground lands above it. Frames next to each other in the file usually
    overlap, and there their depth maps must agree.
    """
    lifted = [(fr, s) for fr, s in zip(frames, samples) if s is not None and len(s)]
    if not lifted:
        return
    above = sum(float(np.mean(s[:, 2] > fr.camera.center[2])) > ABOVE_SHARE for fr, s in lifted)
    flipped, agreement = above > len(lifted) / 2, _neighbour_agreement(frames, samples)
    problems = []
    if flipped:
        problems.append(f"in {above} of {len(lifted)} frames over {ABOVE_SHARE:.0%} of the depth points lie above "
                        "the camera (z up)")
    if agreement is not None and agreement < MIN_DEPTH_AGREEMENT:
        problems.append(f"where neighbouring frames overlap, only {agreement:.0%} of one's depth points lie "
                        f"within {DEPTH_AGREEMENT:.0%} of the other's depth (median over pairs)")
    if not problems:
        return
    log.warning("%s: the poses look wrong for the depth maps: %s. %s. Imported as given", spec_path.parent,
                "; ".join(problems), _pose_hint(spec) if flipped else
                "Check that poses and depth maps belong together: world_to_camera against camera_to_world, "
                "units, depth_type and depth_scale")


def _pose_hint(spec: dict) -> str:
    convention = spec.get("convention", "opencv")
    other = CONVENTIONS[1 - CONVENTIONS.index(convention)] if convention in CONVENTIONS else "opengl"
    return (f"Was the convention flipped? The file {'says' if 'convention' in spec else 'defaults to'} convention "
            f"{convention!r}: try \"convention\": {other!r} (OpenGL / NeRF exports are 'opengl'); also check "
            "world_to_camera against camera_to_world, and up_axis")


def _neighbour_agreement(frames: list[Frame], samples: list[np.ndarray | None]) -> float | None:
    """Median, over pairs of consecutive frames with depth that overlap, of the share of the second's depth
    points the first sees at the same depth; None when no pair overlaps."""
    with_depth = [i for i, s in enumerate(samples) if s is not None and len(s)]
    pairs = list(zip(with_depth, with_depth[1:]))
    if len(pairs) > POSE_CHECK_PAIRS:  # spread over the whole file, bounded cost
        pairs = [pairs[k] for k in np.linspace(0, len(pairs) - 1, POSE_CHECK_PAIRS).round().astype(int)]
    shares = [_depth_agreement(frames[i], samples[j]) for i, j in pairs]
    shares = [s for s in shares if s is not None]
    return float(np.median(shares)) if shares else None


def _depth_agreement(frame: Frame, points: np.ndarray) -> float | None:
    """Share of ``points`` in ``frame``'s view whose camera z is within DEPTH_AGREEMENT of its depth there
    (None under POSE_CHECK_MIN_SHARED such points). Occlusion lowers it a little, wrong poses a lot."""
    uv, z = frame.camera.project(points)
    with np.errstate(invalid="ignore"):
        col, row = np.floor(uv[:, 0]), np.floor(uv[:, 1])
        inside = (z > 0) & (col >= 0) & (col < frame.camera.width) & (row >= 0) & (row < frame.camera.height)
    depth = frame.depth[row[inside].astype(int), col[inside].astype(int)]
    seen = np.isfinite(depth)
    if seen.sum() < POSE_CHECK_MIN_SHARED:
        return None
    return float(np.mean(np.abs(z[inside][seen] - depth[seen]) <= DEPTH_AGREEMENT * depth[seen]))


def _depth_report(spec_path: Path, frames: list[Frame], saturated: dict[str, int]) -> dict:
    """``metadata["dropped"]``: what meshing cannot use (every reason, zeros included), with warnings.

    TSDF fusion (the meshing stage's method for frames) needs a depth map in every frame and a valid
    pixel in at least one; frames bring no points for the other methods.
    """
    with_map = [fr for fr in frames if fr.depth is not None]
    empty = [fr.name for fr in with_map if not np.isfinite(fr.depth).any()]
    dropped = {
        "depth_pixels_without_hit": int(sum(np.isinf(fr.depth).sum() for fr in with_map)),
        "frames_without_depth": len(frames) - len(with_map),
        "frames_with_empty_depth": len(empty),
    }
    _warn_missing_depth(spec_path, [fr.name for fr in frames if fr.depth is None], len(frames))
    if empty:
        log.warning(
            "%s: %d of %d depth maps hold no valid depth (0 or non-finite everywhere): %s%s",
            spec_path, len(empty), len(with_map), some_names(empty),
            "; no frame has valid depth, so the scene cannot be meshed" if len(empty) == len(with_map) else "",
        )
    if saturated:
        log.warning(
            "%s: %d depth pixels in %d frames (%s) hold their integer image's largest value (65535 for 16 bits): "
            "farther surfaces are clipped to 65535 x depth_scale (65.535 m in millimetres); store a coarser "
            "depth_scale (0.01: 655.35 m) or float .npy depth",
            spec_path, sum(saturated.values()), len(saturated), some_names(list(saturated)),
        )
    log.info("%s: depth %s", spec_path, dropped)
    return dropped


def _warn_missing_depth(spec_path: Path, without: list[str], count: int) -> None:
    """Warn when the meshing stage will not mesh the frames: some or all lack a depth map."""
    if not without:
        return
    if len(without) == count:
        log.warning("%s: no frame has a depth map: the meshing stage cannot mesh this scene (TSDF fusion needs "
                    "depth, and frames bring no points)", spec_path)
    else:
        log.warning("%s: %d of %d frames have no depth map (%s): TSDF fusion needs depth in every frame, so the "
                    "meshing stage will fail on this scene; give them depth or leave them out",
                    spec_path, len(without), count, some_names(without))
