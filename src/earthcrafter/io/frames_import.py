"""A folder of posed frames (RGB, optional depth and semantic maps) -> an earthcrafter scene.

The folder holds a ``cameras.json`` (format in docs/data_import.md) naming each frame's
files and camera. Cameras may be given world-to-camera or camera-to-world, in the
OpenCV or the OpenGL convention; they are converted to earthcrafter's one convention
(``earthcrafter.geometry.cameras``: OpenCV, world-to-camera, pixel centres at +0.5).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from tqdm.auto import tqdm

from earthcrafter.geometry.cameras import Camera
from earthcrafter.io.import_common import (
    DataImportError,
    check_coordinates,
    check_scene_id,
    check_scene_size,
    class_histogram,
    extent_metadata,
    import_error,
    metres_per_unit,
    origin_metadata,
    scene_id_from_path,
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
UNKNOWN_CLASS_POLICIES = ("unlabeled", "error")


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
    frames, unknown_pixels, without_semantic = [], 0, 0
    records = spec["frames"]
    for i, record in enumerate(tqdm(records, desc=f"frames {folder.name}", unit="frame", disable=len(records) < 50)):
        where = f"{spec_path}: frame #{i}"
        if not isinstance(record, dict):
            raise DataImportError(f"{where}: expected an object, got {type(record).__name__}")
        frame, unknown = _read_frame(folder, where, record, spec, world, unknown_class)
        frames.append(frame)
        unknown_pixels += unknown
        without_semantic += frame.semantic is None
    _check_unique_names(spec_path, frames)

    centres = np.stack([fr.camera.center for fr in frames])
    check_coordinates(spec_path, centres, "camera centres")
    points = _depth_points(frames)
    if len(points):
        check_coordinates(spec_path, points, "depth points")
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
        "dropped": {},
    }
    log.info("%s: imported %d frames (%d without semantic maps)", spec_path, len(frames), without_semantic)
    return Scene(scene_id or scene_id_from_path(folder), metadata, frames=frames)


def check_frames(
    folder: str | Path, *, cameras_file: str = CAMERAS_FILE, unknown_class: str = "unlabeled", **_other
) -> None:
    """What ``import_frames`` can find wrong without reading the images: the options, the folder,
    ``cameras.json`` (JSON, world frame, every camera, names) and that every file it names exists."""
    folder = Path(folder)
    spec_path, spec = _read_spec(folder, cameras_file, unknown_class)
    _world_transform(spec_path, spec)
    names = []
    for i, record in enumerate(spec["frames"]):
        where = f"{spec_path}: frame #{i}"
        if not isinstance(record, dict):
            raise DataImportError(f"{where}: expected an object, got {type(record).__name__}")
        _frame_camera(where, record, spec)
        if "rgb" not in record:
            raise DataImportError(f"{where}: missing field 'rgb' (image file name)")
        name = str(record.get("name", Path(str(record["rgb"])).stem))
        if not FRAME_NAME.match(name):
            raise DataImportError(f"{where} ({name!r}): frame name must match {FRAME_NAME.pattern}")
        if record.get("depth_type", "z") not in ("z", "ray"):
            raise DataImportError(f"{where} ({name!r}): depth_type must be 'z' or 'ray', got {record['depth_type']!r}")
        for key, what in (("rgb", "image"), ("depth", "depth"), ("semantic", "image")):
            if record.get(key) is not None and not (folder / str(record[key])).is_file():
                raise import_error(folder / str(record[key]), f"{what} file not found")
        names.append(name)
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise import_error(spec_path, f"frame names repeat: {repeated}")


def _read_spec(folder: Path, cameras_file: str, unknown_class: str) -> tuple[Path, dict]:
    """(path, parsed object) of the cameras file, with its top-level shape checked."""
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
    return spec_path, spec


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
        raise ValueError(f"'K' must be pixel intrinsics [[fx, s, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0, got {K.tolist()}")
    if pixel_centers == "integer":
        K = K.copy()
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
    if not (np.allclose(R @ R.T, np.eye(3), atol=RIGID_TOL) and np.linalg.det(R) > 0 and np.allclose(pose[3], [0, 0, 0, 1])):
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


def _read_frame(folder: Path, where: str, record: dict, spec: dict, world: dict, policy: str) -> tuple[Frame, int]:
    camera = _to_local(_frame_camera(where, record, spec), world)
    if "rgb" not in record:
        raise DataImportError(f"{where}: missing field 'rgb' (image file name)")
    rgb_path = folder / str(record["rgb"])
    name = str(record.get("name", rgb_path.stem))
    where = f"{where} ({name!r})"
    if not FRAME_NAME.match(name):
        raise DataImportError(f"{where}: frame name must match {FRAME_NAME.pattern}")
    hw = (camera.height, camera.width)
    rgb = _read_rgb(rgb_path, hw)
    depth = None
    if record.get("depth") is not None:
        depth = _read_depth(folder / str(record["depth"]), hw, record, where) * world["f"]
        if record.get("depth_type", "z") == "ray":
            depth = _ray_to_z(camera, depth)
        elif record.get("depth_type", "z") != "z":
            raise DataImportError(f"{where}: depth_type must be 'z' or 'ray', got {record['depth_type']!r}")
    semantic, unknown = None, 0
    if record.get("semantic") is not None:
        semantic, unknown = _read_semantic(folder / str(record["semantic"]), hw, policy)
    return Frame(name, camera, rgb, depth, None, semantic), unknown


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


def _read_depth(path: Path, hw: tuple[int, int], record: dict, where: str) -> np.ndarray:
    """Depth map in file units -> float32 [H, W]; 0 / non-finite = no hit -> inf.

    .npy / .npz (key ``depth``) hold floats; integer images (16-bit PNG) need ``depth_scale``
    (file units per count, e.g. 0.001 for millimetres with units "m").
    """
    if not path.is_file():
        raise import_error(path, "depth file not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            depth = np.load(path)
        elif suffix == ".npz":
            with np.load(path) as data:
                if "depth" not in data:
                    raise import_error(path, f"npz lacks array 'depth' (has {list(data)})")
                depth = data["depth"]
        else:
            depth = _read_image(path)
    except DataImportError:
        raise
    except Exception as err:
        raise import_error(path, f"not a readable depth map ({err})") from None
    if depth.ndim == 3 and depth.shape[2] == 1:
        depth = depth[..., 0]
    if depth.ndim != 2:
        raise import_error(path, f"depth must be [H, W], got shape {depth.shape}")
    _check_size(path, depth, hw)
    if np.issubdtype(depth.dtype, np.integer):
        if "depth_scale" not in record:
            raise DataImportError(f"{where}: integer depth image {path.name} needs 'depth_scale' (units per count)")
        depth = depth.astype(np.float64) * float(record["depth_scale"])
    depth = depth.astype(np.float32)
    if (depth[np.isfinite(depth)] < 0).any():
        raise import_error(path, "depth has negative values")
    return np.where(np.isfinite(depth) & (depth > 0), depth, np.inf).astype(np.float32)


def _ray_to_z(camera: Camera, ray_depth: np.ndarray) -> np.ndarray:
    """Distance along each pixel's ray -> camera z (what earthcrafter's depth maps store)."""
    _, dirs = camera.pixel_rays()
    cos = dirs @ camera.forward
    return (ray_depth * cos).astype(np.float32)


def _read_semantic(path: Path, hw: tuple[int, int], policy: str) -> tuple[np.ndarray, int]:
    """Class-id image -> uint8 [H, W]; values >= NUM_CLASSES per policy; returns (labels, unknown count)."""
    image = _read_image(path)
    if image.ndim != 2:
        raise import_error(path, f"semantic map must be single-channel class ids, got shape {image.shape}")
    _check_size(path, image, hw)
    unknown = (image < 0) | (image >= NUM_CLASSES)
    if unknown.any() and policy == "error":
        values = np.unique(image[unknown]).tolist()
        raise import_error(path, f"{int(unknown.sum())} pixels hold class values outside 0..{NUM_CLASSES - 1}: {values[:10]}")
    return np.where(unknown, 0, image).astype(np.uint8), int(unknown.sum())


def _check_unique_names(spec_path: Path, frames: list[Frame]) -> None:
    names = [fr.name for fr in frames]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise import_error(spec_path, f"frame names repeat: {repeated}")


def _depth_points(frames: list[Frame], max_per_frame: int = 4096) -> np.ndarray:
    """World points [N, 3] from a strided subset of each frame's depth (for extent and checks)."""
    pts = []
    for fr in frames:
        if fr.depth is None:
            continue
        stride = max(1, int(np.sqrt(fr.depth.size / max_per_frame)))
        world = fr.camera.unproject_depth(fr.depth)[::stride, ::stride].reshape(-1, 3)
        pts.append(world[np.isfinite(world).all(axis=1)])
    return np.concatenate(pts) if pts else np.zeros((0, 3))
