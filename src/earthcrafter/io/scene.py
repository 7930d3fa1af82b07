"""The scene: earthcrafter's unit of raw data, and its on-disk layout.

A scene folder ``<root>/<scene_id>/`` holds::

    metadata.json          scene facts: source, biome, size_m, seed, origin, crs, class_histogram, ...
    mesh.ply               triangle mesh (binary PLY): vertex x,y,z (float32) + red,green,blue (uchar);
                           face vertex_indices + semantic (uchar, classes of earthcrafter.semantics)
    points.npz             point cloud (LiDAR sources): xyz float64, rgb uint8, semantic uint8
    cameras.json           {"frames": [{"name", "K", "world_to_camera", "width", "height"}, ...]}
    frames/<name>_rgb.png  uint8 RGB
    frames/<name>_sem.png  uint8 semantic class per pixel (optional)
    frames/<name>_geom.npz depth float32 [H, W] (camera z, inf = no hit), normal float16 [H, W, 3] (optional)

Coordinates are a local metric frame (metres, z up); ``metadata["origin"]`` gives the
offset back to the source CRS for imported data. Every scene is written atomically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from plyfile import PlyData, PlyElement

from earthcrafter.geometry.cameras import Camera
from earthcrafter.io.atomic import atomic_path, json_default
from earthcrafter.semantics import NUM_CLASSES


@dataclass
class Mesh:
    vertices: np.ndarray  # [V, 3] float
    faces: np.ndarray  # [F, 3] int
    vertex_colors: np.ndarray | None = None  # [V, 3] uint8
    face_semantic: np.ndarray | None = None  # [F] uint8

    def __post_init__(self) -> None:
        self.vertices = np.asarray(self.vertices, dtype=np.float64)
        self.faces = np.asarray(self.faces, dtype=np.int64)
        if self.vertices.ndim != 2 or self.vertices.shape[1] != 3:
            raise ValueError(f"Mesh.vertices must be [V, 3], got {self.vertices.shape}")
        if self.faces.ndim != 2 or self.faces.shape[1] != 3:
            raise ValueError(f"Mesh.faces must be [F, 3], got {self.faces.shape}")
        if len(self.faces) and (self.faces.min() < 0 or self.faces.max() >= len(self.vertices)):
            raise ValueError("Mesh.faces index outside the vertex array")
        if self.vertex_colors is not None:
            self.vertex_colors = np.asarray(self.vertex_colors, dtype=np.uint8)
            if self.vertex_colors.shape != self.vertices.shape:
                raise ValueError(f"Mesh.vertex_colors must be [V, 3], got {self.vertex_colors.shape}")
        if self.face_semantic is not None:
            self.face_semantic = np.asarray(self.face_semantic, dtype=np.uint8)
            if self.face_semantic.shape != (len(self.faces),):
                raise ValueError(f"Mesh.face_semantic must be [F], got {self.face_semantic.shape}")
            if len(self.face_semantic) and self.face_semantic.max() >= NUM_CLASSES:
                raise ValueError(f"Mesh.face_semantic holds class {self.face_semantic.max()} >= {NUM_CLASSES}")


@dataclass
class Points:
    xyz: np.ndarray  # [N, 3] float64, metres
    rgb: np.ndarray  # [N, 3] uint8
    semantic: np.ndarray  # [N] uint8

    def __post_init__(self) -> None:
        self.xyz = np.asarray(self.xyz, dtype=np.float64)
        self.rgb = np.asarray(self.rgb, dtype=np.uint8)
        self.semantic = np.asarray(self.semantic, dtype=np.uint8)
        n = len(self.xyz)
        if self.xyz.shape != (n, 3) or self.rgb.shape != (n, 3) or self.semantic.shape != (n,):
            raise ValueError(
                f"Points: xyz {self.xyz.shape}, rgb {self.rgb.shape}, semantic {self.semantic.shape} disagree"
            )


@dataclass
class Frame:
    name: str
    camera: Camera
    rgb: np.ndarray  # [H, W, 3] uint8
    depth: np.ndarray | None = None  # [H, W] float32, camera z, inf = no hit
    normal: np.ndarray | None = None  # [H, W, 3] float32, world space
    semantic: np.ndarray | None = None  # [H, W] uint8

    def __post_init__(self) -> None:
        hw = (self.camera.height, self.camera.width)
        if self.rgb.shape != hw + (3,):
            raise ValueError(f"frame {self.name}: rgb shape {self.rgb.shape} != {hw + (3,)}")
        for key in ("depth", "semantic"):
            a = getattr(self, key)
            if a is not None and a.shape != hw:
                raise ValueError(f"frame {self.name}: {key} shape {a.shape} != {hw}")
        if self.normal is not None and self.normal.shape != hw + (3,):
            raise ValueError(f"frame {self.name}: normal shape {self.normal.shape} != {hw + (3,)}")


@dataclass
class Scene:
    scene_id: str
    metadata: dict = field(default_factory=dict)
    mesh: Mesh | None = None
    points: Points | None = None
    frames: list[Frame] = field(default_factory=list)


# --------------------------------------------------------------------------- mesh PLY

def write_mesh_ply(path: str | Path, mesh: Mesh) -> None:
    """Binary PLY that common viewers read (vertex colours) plus a per-face ``semantic``."""
    v = mesh.vertices
    vdtype = [("x", "f4"), ("y", "f4"), ("z", "f4")]
    if mesh.vertex_colors is not None:
        vdtype += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    verts = np.empty(len(v), dtype=vdtype)
    verts["x"], verts["y"], verts["z"] = v[:, 0], v[:, 1], v[:, 2]
    if mesh.vertex_colors is not None:
        c = mesh.vertex_colors
        verts["red"], verts["green"], verts["blue"] = c[:, 0], c[:, 1], c[:, 2]
    fdtype = [("vertex_indices", "i4", (3,))]
    if mesh.face_semantic is not None:
        fdtype.append(("semantic", "u1"))
    faces = np.empty(len(mesh.faces), dtype=fdtype)
    faces["vertex_indices"] = mesh.faces.astype(np.int32)
    if mesh.face_semantic is not None:
        faces["semantic"] = mesh.face_semantic
    ply = PlyData([PlyElement.describe(verts, "vertex"), PlyElement.describe(faces, "face")])
    with atomic_path(path) as tmp:
        ply.write(str(tmp))


def read_mesh_ply(path: str | Path) -> Mesh:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mesh file not found: {path}")
    try:
        ply = PlyData.read(str(path))
    except Exception as e:  # plyfile raises several types on corrupt input
        raise ValueError(f"{path}: not a readable PLY mesh ({e})") from e
    return mesh_from_ply(ply, path)


def mesh_from_ply(ply: PlyData, path: str | Path) -> Mesh:
    """:func:`read_mesh_ply` of an already parsed file (``path`` names it in errors)."""
    try:
        v = ply["vertex"].data
        f = ply["face"].data
    except Exception as e:  # no vertex or face element
        raise ValueError(f"{path}: not a readable PLY mesh ({e})") from e
    vertices = np.stack([v["x"], v["y"], v["z"]], axis=1).astype(np.float64)
    names = v.dtype.names
    colors = None
    if {"red", "green", "blue"} <= set(names):
        colors = np.stack([v["red"], v["green"], v["blue"]], axis=1).astype(np.uint8)
    key = "vertex_indices" if "vertex_indices" in f.dtype.names else "vertex_index"
    faces = np.stack(list(f[key])).astype(np.int64) if len(f) else np.zeros((0, 3), np.int64)
    sem = np.asarray(f["semantic"], dtype=np.uint8) if "semantic" in f.dtype.names else None
    try:
        return Mesh(vertices, faces, colors, sem)
    except ValueError as e:  # e.g. polygons that are not triangles
        raise ValueError(f"{path}: {e}") from None


# --------------------------------------------------------------------------- scenes

def _frame_files(frames_dir: Path, name: str) -> dict[str, Path]:
    return {
        "rgb": frames_dir / f"{name}_rgb.png",
        "sem": frames_dir / f"{name}_sem.png",
        "geom": frames_dir / f"{name}_geom.npz",
    }


def is_folder_name(name: str) -> bool:
    """One path component that :func:`list_scenes` lists: not empty, no separator or NUL, no leading dot
    (which would also hide the folder and make it look like an atomic write's staging folder)."""
    return isinstance(name, str) and bool(name) and not name.startswith(".") and not any(c in name for c in "/\\\0")


def scene_folder(root: str | Path, scene_id: str) -> Path:
    """``root/<scene_id>``; ``scene_id`` must name one folder inside ``root`` (a writer never leaves it)."""
    if not is_folder_name(scene_id):
        raise ValueError(f"scene_id={scene_id!r} does not name a folder inside {root} (no '/', '\\' or leading '.')")
    return Path(root) / scene_id


def write_scene(root: str | Path, scene: Scene) -> Path:
    """Write ``scene`` to ``root/<scene_id>`` atomically (replacing any previous version)."""
    out = scene_folder(root, scene.scene_id)
    with atomic_path(out) as tmp:
        tmp.mkdir(parents=True)
        meta = dict(scene.metadata)
        meta["scene_id"] = scene.scene_id
        meta["num_frames"] = len(scene.frames)
        (tmp / "metadata.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=json_default))
        if scene.mesh is not None:
            write_mesh_ply(tmp / "mesh.ply", scene.mesh)
        if scene.points is not None:
            p = scene.points
            np.savez_compressed(tmp / "points.npz", xyz=p.xyz, rgb=p.rgb, semantic=p.semantic)
        if scene.frames:
            frames_dir = tmp / "frames"
            frames_dir.mkdir()
            records = []
            for fr in scene.frames:
                files = _frame_files(frames_dir, fr.name)
                Image.fromarray(fr.rgb).save(files["rgb"])
                if fr.semantic is not None:
                    Image.fromarray(fr.semantic.astype(np.uint8)).save(files["sem"])
                geom = {}
                if fr.depth is not None:
                    geom["depth"] = fr.depth.astype(np.float32)
                if fr.normal is not None:
                    geom["normal"] = fr.normal.astype(np.float16)
                if geom:
                    np.savez_compressed(files["geom"], **geom)
                records.append({"name": fr.name, **fr.camera.to_dict()})
            (tmp / "cameras.json").write_text(json.dumps({"frames": records}, indent=1))
    return out


# metadata["source"] of scenes imported from real data (earthcrafter.io.sources)
IMPORTED_SOURCES = ("lidar", "mesh", "frames")


def scene_biome(metadata: dict) -> str:
    """A scene's biome: ``metadata["biome"]`` (synthetic sites), ``"real"`` for imported data,
    else ``"unknown"``. The one rule every stage uses (summaries, tile manifests, splits)."""
    if metadata.get("biome"):
        return str(metadata["biome"])
    return "real" if metadata.get("source") in IMPORTED_SOURCES else "unknown"


def list_scenes(root: str | Path) -> list[str]:
    """Scene ids under ``root`` (folders holding a metadata.json), sorted."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "metadata.json").is_file() and not p.name.startswith("."))


def read_metadata(scene_dir: str | Path) -> dict:
    path = Path(scene_dir) / "metadata.json"
    if not path.is_file():
        raise FileNotFoundError(f"scene metadata not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON ({e})") from e


def read_cameras(scene_dir: str | Path) -> list[tuple[str, Camera]]:
    path = Path(scene_dir) / "cameras.json"
    if not path.is_file():
        return []
    try:
        records = json.loads(path.read_text())["frames"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: expected {{'frames': [...]}} ({e})") from e
    out = []
    for i, r in enumerate(records):
        try:
            out.append((str(r["name"]), Camera.from_dict(r)))
        except (KeyError, ValueError) as e:
            raise ValueError(f"{path}: frame #{i}: {e}") from e
    return out


def read_frame(scene_dir: str | Path, name: str, camera: Camera) -> Frame:
    files = _frame_files(Path(scene_dir) / "frames", name)
    if not files["rgb"].is_file():
        raise FileNotFoundError(f"frame image not found: {files['rgb']}")
    rgb = np.asarray(Image.open(files["rgb"]).convert("RGB"))
    sem = np.asarray(Image.open(files["sem"])) if files["sem"].is_file() else None
    depth = normal = None
    if files["geom"].is_file():
        with np.load(files["geom"]) as g:
            depth = g["depth"] if "depth" in g else None
            normal = g["normal"].astype(np.float32) if "normal" in g else None
    return Frame(name, camera, rgb, depth, normal, sem)


def read_scene(scene_dir: str | Path, load_frames: bool = True) -> Scene:
    scene_dir = Path(scene_dir)
    meta = read_metadata(scene_dir)
    mesh = read_mesh_ply(scene_dir / "mesh.ply") if (scene_dir / "mesh.ply").is_file() else None
    points = None
    if (scene_dir / "points.npz").is_file():
        with np.load(scene_dir / "points.npz") as p:
            points = Points(p["xyz"], p["rgb"], p["semantic"])
    frames = []
    if load_frames:
        frames = [read_frame(scene_dir, name, cam) for name, cam in read_cameras(scene_dir)]
    return Scene(meta.get("scene_id", scene_dir.name), meta, mesh, points, frames)

