"""Photogrammetry / CAD meshes (PLY, OBJ, glTF/GLB) -> an earthcrafter scene holding a mesh.

Readers: PLY through plyfile (polygons fan-triangulated; per-vertex colours; a per-face
class attribute; MeshLab-style textures), everything else through open3d/assimp
(vertex colours, textures, glTF node transforms checked below). open3d reads coordinates as
float32 (0.25 m steps at a UTM northing); for OBJ the file's own values are put back, for other
float32 sources a coarse step is warned about and recorded in ``metadata["coordinate_precision_m"]``.

Colour becomes per-vertex colour, which is what the scene's mesh stores:
- vertex colours are taken as they are;
- a texture is sampled (bilinear) at each triangle corner's uv and the corner samples
  averaged per vertex. Sparse vertices would blur a detailed texture, so the mesh is
  first split by midpoint subdivision (each level: every triangle into four) until its
  median triangle edge spans at most ``texels_per_edge`` texels, within a budget of
  ``max_faces`` faces. The subdivision is documented in ``metadata["texture_sampling"]``.

Per-face classes come from a PLY face property named ``semantic``, ``label``, ``class``
or ``classification`` (earthcrafter class ids); without one every face is class 0
(unlabeled), counted in ``metadata["unlabeled_faces_no_attribute"]``.
"""

from __future__ import annotations

import json
import logging
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from plyfile import PlyData

from earthcrafter.io.import_common import (
    check_coordinates,
    check_scene_id,
    check_scene_size,
    class_histogram,
    column_bounds,
    extent_metadata,
    floor_origin,
    import_error,
    log_drops,
    metres_per_unit,
    origin_metadata,
    scene_id_from_path,
    up_axis_rotation,
)
from earthcrafter.io.orthophoto import bilinear
from earthcrafter.io.scene import Mesh, Scene
from earthcrafter.semantics import NUM_CLASSES

log = logging.getLogger(__name__)

FACE_CLASS_PROPERTIES = ("semantic", "label", "class", "classification")
OPEN3D_SUFFIXES = (".obj", ".glb", ".gltf", ".off", ".stl", ".fbx")
UNKNOWN_CLASS_POLICIES = ("unlabeled", "error")
MAX_COORDINATE_PRECISION_M = 1e-3  # coarser coordinates are warned about


@dataclass
class RawMesh:
    """A mesh as read, before units, axes and colour resolution."""

    vertices: np.ndarray  # [V, 3] float64, source units and axes
    faces: np.ndarray  # [F, 3] int64
    vertex_colors: np.ndarray | None = None  # [V, 3] uint8
    face_classes: np.ndarray | None = None  # [F] int64 as stored
    corner_uv: np.ndarray | None = None  # [F, 3, 2] float64, OpenGL convention (v up)
    face_texture: np.ndarray | None = None  # [F] int64 index into textures, -1 = none
    textures: list[np.ndarray] = field(default_factory=list)  # [H, W, 3] uint8 each
    coordinate_dtype: str = "float64"  # the number format the coordinates were read in (float32: rounded)
    precision_note: str = ""  # why a float32 read could not be restored to the file's own values


def import_mesh(
    path: str | Path,
    *,
    units: str | float = "m",
    up_axis: str = "auto",
    crs: str | None = None,
    unknown_class: str = "unlabeled",
    texels_per_edge: float = 2.0,
    max_faces: int = 2_000_000,
    scene_id: str | None = None,
) -> Scene:
    """Import a mesh file as a scene with ``mesh`` (vertex colours, per-face classes).

    Args:
        units: the file's linear unit ("m", "ft", "us_ft", ... or metres per unit).
        up_axis: "x", "y" or "z"; "auto" is "y" for glTF/GLB (the glTF spec's up) and "z" otherwise.
        crs: the source CRS if known (recorded in metadata only).
        unknown_class: face class values >= 25: "unlabeled" (class 0, counted) or "error".
        texels_per_edge / max_faces: texture sampling density and subdivision budget.
    """
    path = Path(path)
    scene_id = check_scene_id(scene_id) if scene_id is not None else None
    up_axis, R, f = _check_mesh_options(path, units, up_axis, unknown_class, texels_per_edge, max_faces)
    if not path.is_file():
        raise import_error(path, "mesh file not found")

    raw = read_ply(path) if path.suffix.lower() == ".ply" else read_with_open3d(path)
    if len(raw.faces) == 0:
        raise import_error(path, "the mesh has no faces")
    check_coordinates(path, raw.vertices * f, "vertex coordinates")
    precision = _coordinate_precision(path, raw, f, units)
    dropped = {"degenerate_faces": _drop_degenerate_faces(raw)}
    if len(raw.faces) == 0:
        raise import_error(path, "every face is degenerate (repeated vertex indices)")

    semantic, class_counts = _face_classes(path, raw, unknown_class)
    colors, vertices, faces, semantic, sampling = _vertex_colors(path, raw, semantic, texels_per_edge, max_faces)

    rotated = vertices @ R.T
    origin_rot = floor_origin(rotated)  # whole source units, in the z-up axes
    origin_src = R.T @ origin_rot
    local = (rotated - origin_rot) * f
    log_drops(path, dropped, len(faces), "faces")
    check_scene_size(path, float(max(np.ptp(local[:, 0]), np.ptp(local[:, 1]))), "mesh")
    _warn_if_on_its_side(path, local, faces, R, up_axis)

    metadata = {
        "source": "mesh",
        "source_files": [str(path.resolve())],
        "crs": crs,
        "origin": origin_metadata(origin_src, np.full(3, f), R, units={"linear": str(units), "up_axis": up_axis}),
        **extent_metadata(local),
        "bounds_m": dict(zip(("min", "max"), (b.tolist() for b in column_bounds(local)))),
        "num_vertices": int(len(local)),
        "num_faces": int(len(faces)),
        "class_histogram": class_histogram(semantic),
        "dropped": dropped,
        "coordinate_precision_m": precision,
        **class_counts,
        "texture_sampling": sampling,
    }
    return Scene(scene_id or scene_id_from_path(path), metadata, mesh=Mesh(local, faces, colors, semantic))


def check_mesh(
    path: str | Path,
    *,
    units: str | float = "m",
    up_axis: str = "auto",
    unknown_class: str = "unlabeled",
    texels_per_edge: float = 2.0,
    max_faces: int = 2_000_000,
    **_other,
) -> None:
    """What ``import_mesh`` can find wrong without reading the mesh: option values, the file, its
    format and first bytes (PLY / GLB magic), glTF node transforms. Raises like ``import_mesh``."""
    path = Path(path)
    _check_mesh_options(path, units, up_axis, unknown_class, texels_per_edge, max_faces)
    if not path.is_file():
        raise import_error(path, "mesh file not found")
    suffix = path.suffix.lower()
    if suffix != ".ply" and suffix not in OPEN3D_SUFFIXES:
        raise import_error(path, f"unsupported mesh format {path.suffix!r} (use .ply, {', '.join(OPEN3D_SUFFIXES)})")
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as err:
        raise import_error(path, f"cannot read the file ({err})") from None
    if suffix == ".ply" and not head.startswith(b"ply"):
        raise import_error(path, "not a PLY file (it does not start with 'ply')")
    if suffix in (".glb", ".gltf"):
        _check_gltf_transforms(path)


def _check_mesh_options(path: Path, units, up_axis, unknown_class, texels_per_edge, max_faces):
    """Plain ``ValueError`` naming the file for option values ``import_mesh`` cannot take (like the LAS
    importer's); returns (up_axis, R, metres per unit)."""
    if unknown_class not in UNKNOWN_CLASS_POLICIES:
        raise ValueError(f"{path}: option unknown_class={unknown_class!r}: expected one of {UNKNOWN_CLASS_POLICIES}")
    if not texels_per_edge > 0:
        raise ValueError(f"{path}: option texels_per_edge={texels_per_edge!r}: must be positive")
    if max_faces <= 0:
        raise ValueError(f"{path}: option max_faces={max_faces!r}: must be positive")
    if up_axis == "auto":
        up_axis = "y" if path.suffix.lower() in (".glb", ".gltf") else "z"
    try:  # the shared helpers name the option and its value, not the file
        return up_axis, up_axis_rotation(up_axis), metres_per_unit(units, "units")
    except ValueError as err:
        raise ValueError(f"{path}: option {err}") from None


def _coordinate_precision(path: Path, raw: RawMesh, f: float, units) -> float:
    """Metres between neighbouring values of the coordinates' number format at the largest |coordinate|.

    float32 has 24 significant bits: at a UTM northing (4.1e6 m) neighbouring values are 0.25 m apart, so a
    float32 file (or reader) puts every vertex on that grid. Over 1 mm is a warning, as it cannot be undone here.
    """
    largest = float(np.abs(raw.vertices).max())
    dtype = np.dtype(raw.coordinate_dtype)
    precision = (float(np.spacing(dtype.type(largest))) if dtype.kind == "f" else 1.0) * f
    if precision > MAX_COORDINATE_PRECISION_M:
        log.warning(
            "%s: coordinates are read as %s%s; at the largest coordinate (%.3f, units %s) that rounds every "
            "vertex to a %.3g m grid. Re-export the mesh in local coordinates (minus an offset, e.g. a "
            "corner of the site) to keep full precision",
            path, dtype, f" ({raw.precision_note})" if raw.precision_note else "", largest, units, precision,
        )
    return precision


def _warn_if_on_its_side(path: Path, local: np.ndarray, faces: np.ndarray, R: np.ndarray, up_axis: str) -> None:
    """Warn (only) when the mesh looks read with the wrong up axis: taller than wide, or its surface facing
    mostly sideways. A y-up OBJ (Blender's default export) read as z-up stands on its side."""
    extent = np.ptp(local, axis=0)
    a, b, c = (local[faces[:, i]] for i in range(3))
    facing = np.abs(np.cross(b - a, c - a)).sum(axis=0)  # area-weighted |normal| per local axis
    facing = facing / max(float(facing.sum()), np.finfo(np.float64).tiny)
    tall = extent[2] > extent[0] and extent[2] > extent[1]
    if not (tall or facing[:2].max() > 0.5):
        return
    source_facing = np.abs(R.T) @ facing  # R permutes axes (with signs): back to the file's axes
    suggested = max((ax for ax in "xyz" if ax != up_axis), key=lambda ax: source_facing["xyz".index(ax)])
    log.warning(
        "%s: with up_axis=%r the mesh looks on its side: extent x %.1f, y %.1f, z (up) %.1f m, %.0f%% of its "
        "surface facing along x, %.0f%% along y, %.0f%% up. If the file is %s-up (Blender's OBJ export is y-up), "
        "pass up_axis=%r",
        path, up_axis, *extent, *(100 * facing), suggested, suggested,
    )


# --------------------------------------------------------------------------- PLY


def read_ply(path: Path) -> RawMesh:
    """PLY via plyfile: polygons fan-triangulated, colours, a face class property, MeshLab textures."""
    try:
        ply = PlyData.read(str(path))
        vertex = ply["vertex"].data
        face = ply["face"].data
    except Exception as err:  # plyfile raises several types on corrupt input
        raise import_error(path, f"not a readable PLY mesh ({err})") from None
    names = vertex.dtype.names
    if not {"x", "y", "z"} <= set(names):
        raise import_error(path, f"PLY vertex element lacks x, y, z (has {names})")
    vertices = np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1).astype(np.float64)
    colors = _ply_colors(vertex)
    index_key = next((k for k in ("vertex_indices", "vertex_index") if k in face.dtype.names), None)
    if index_key is None:
        raise import_error(path, f"PLY face element lacks vertex_indices (has {face.dtype.names})")
    polygons = [np.asarray(p, dtype=np.int64) for p in face[index_key]]
    faces, parent = _fan_triangulate(path, polygons, len(vertices))
    class_key = next((k for k in FACE_CLASS_PROPERTIES if k in face.dtype.names), None)
    classes = np.asarray(face[class_key], dtype=np.int64)[parent] if class_key else None
    raw = RawMesh(vertices, faces, colors, classes, coordinate_dtype=_ply_coordinate_dtype(vertex))
    if "texcoord" in face.dtype.names and colors is None:
        _attach_ply_texture(path, ply, face, polygons, parent, raw)
    return raw


def _ply_coordinate_dtype(vertex) -> str:
    """The coarsest type among x, y, z: plyfile keeps ``double`` properties as float64, ``float`` as float32."""
    types = [vertex.dtype[k] for k in "xyz"]
    floats = [t for t in types if t.kind == "f"]
    return str(min(floats, key=lambda t: t.itemsize) if floats else types[0])


def _ply_colors(vertex) -> np.ndarray | None:
    for keys in (("red", "green", "blue"), ("r", "g", "b"), ("diffuse_red", "diffuse_green", "diffuse_blue")):
        if set(keys) <= set(vertex.dtype.names):
            c = np.stack([vertex[k] for k in keys], axis=1)
            return _to_uint8(c)
    return None


def _to_uint8(c: np.ndarray) -> np.ndarray:
    """Colours stored as uint8, uint16 or floats in [0, 1] -> uint8."""
    if c.dtype == np.uint8:
        return c
    if np.issubdtype(c.dtype, np.floating):
        return np.clip(np.round(c * 255.0), 0, 255).astype(np.uint8)
    if c.max(initial=0) > 255:
        return np.clip(np.round(c / 257.0), 0, 255).astype(np.uint8)
    return c.astype(np.uint8)


def _fan_triangulate(path: Path, polygons: list[np.ndarray], num_vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """Polygons -> triangles [F, 3] and each triangle's source polygon index [F]."""
    tris, parent = [], []
    for i, p in enumerate(polygons):
        if len(p) < 3:
            raise import_error(path, f"face {i} has {len(p)} vertices")
        tris.append(np.stack([np.full(len(p) - 2, p[0]), p[1:-1], p[2:]], axis=1))
        parent.append(np.full(len(p) - 2, i))
    if not tris:
        return np.zeros((0, 3), np.int64), np.zeros(0, np.int64)
    faces = np.concatenate(tris)
    if faces.min() < 0 or faces.max() >= num_vertices:
        raise import_error(path, f"face vertex index outside [0, {num_vertices})")
    return faces, np.concatenate(parent)


def _attach_ply_texture(path: Path, ply, face, polygons, parent, raw: RawMesh) -> None:
    """MeshLab convention: ``comment TextureFile name`` + a face list ``texcoord`` (u0 v0 u1 v1 ...)."""
    files = [c.split(None, 1)[1].strip() for c in ply.comments if c.lower().startswith("texturefile")]
    if not files:
        return
    texcoords = [np.asarray(t, dtype=np.float64).reshape(-1, 2) for t in face["texcoord"]]
    corner_uv = []
    for i, (poly, uv) in enumerate(zip(polygons, texcoords)):
        if len(uv) != len(poly):
            raise import_error(path, f"face {i}: {len(uv)} texcoords for {len(poly)} vertices")
        corner_uv.append(np.stack([np.repeat(uv[:1], len(poly) - 2, 0), uv[1:-1], uv[2:]], axis=1))
    raw.corner_uv = np.concatenate(corner_uv)
    raw.textures = [_read_texture(path.parent / files[0])]
    raw.face_texture = np.zeros(len(raw.faces), dtype=np.int64)


def _read_texture(path: Path) -> np.ndarray:
    if not path.is_file():
        raise import_error(path, "texture image named by the mesh not found")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except Exception as err:
        raise import_error(path, f"not a readable texture image ({err})") from None


# --------------------------------------------------------------------------- open3d


def read_with_open3d(path: Path) -> RawMesh:
    """OBJ / glTF / GLB / OFF / STL via open3d (assimp). Texture uvs come back with v up
    (glTF's v-down uvs are flipped by assimp), texture images bottom row first."""
    import open3d as o3d

    if path.suffix.lower() not in OPEN3D_SUFFIXES:
        raise import_error(path, f"unsupported mesh format {path.suffix!r} (use .ply, {', '.join(OPEN3D_SUFFIXES)})")
    if path.suffix.lower() in (".glb", ".gltf"):
        _check_gltf_transforms(path)
    # Post-processing would split vertices along uv seams; keep the file's own vertices.
    mesh = o3d.io.read_triangle_mesh(str(path), enable_post_processing=False)
    obj = _parse_obj(path) if path.suffix.lower() == ".obj" else None
    if obj is not None and obj.non_triangles:
        raise import_error(
            path, f"{obj.non_triangles} face(s) with other than 3 corners, which the OBJ reader (open3d/assimp) "
            "would drop; triangulate the mesh when exporting it (Blender: Triangulate Faces)"
        )
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.triangles, dtype=np.int64)
    if len(vertices) == 0:
        raise import_error(path, "not a readable mesh, or one without vertices (open3d read nothing)")
    colors = _to_uint8(np.asarray(mesh.vertex_colors)) if mesh.has_vertex_colors() else None
    # assimp reads every format in float32 (glTF/GLB are float32 by specification)
    raw = RawMesh(vertices, faces, colors, coordinate_dtype="float32")
    if colors is None and mesh.has_triangle_uvs() and len(mesh.textures):
        raw.corner_uv = np.asarray(mesh.triangle_uvs, dtype=np.float64).reshape(-1, 3, 2)
        textures = [np.asarray(t) for t in mesh.textures]
        ids = np.asarray(mesh.triangle_material_ids, dtype=np.int64)
        if len(ids) != len(faces):
            ids = np.zeros(len(faces), dtype=np.int64)
        usable = np.array([t.ndim == 3 and t.size > 0 for t in textures])  # open3d pads with empty images
        valid = (ids >= 0) & (ids < len(textures))
        valid[valid] = usable[ids[valid]]
        raw.face_texture = np.where(valid, ids, -1)
        raw.textures = [_texture_rgb(t) if ok else np.zeros((1, 1, 3), np.uint8) for t, ok in zip(textures, usable)]
    if obj is not None:
        _restore_obj_precision(raw, obj, np.asarray(mesh.triangle_material_ids, dtype=np.int64))
    return raw


@dataclass
class ObjFile:
    """An OBJ's own vertex positions and triangles, parsed in float64 (``vertices`` is None if that failed)."""

    vertices: np.ndarray | None  # [N, 3] float64
    triangles: np.ndarray | None  # [M, 3] int64, 0-based
    materials: np.ndarray | None  # [M] index of the triangle's ``usemtl`` name in order of appearance, -1 = none
    non_triangles: int  # faces with other than 3 corners
    note: str = ""


def _parse_obj(path: Path) -> ObjFile:
    """The ``v`` and ``f`` lines of an OBJ, read without rounding (open3d's assimp parses them as float32)."""
    coords, corners, defined, materials, names = [], [], [], [], {}
    non_triangles, material = 0, -1
    try:
        fh = open(path, "rb")
    except OSError as err:
        raise import_error(path, f"cannot read the file ({err})") from None
    with fh:
        for line in fh:
            parts = line.split()
            if not parts or parts[0] == b"#":
                continue
            if line.rstrip().endswith(b"\\"):
                return ObjFile(None, None, None, non_triangles, "it continues lines with a backslash")
            if parts[0] == b"v":
                coords.append(parts[1:4])
            elif parts[0] == b"f":
                if len(parts) != 4:
                    non_triangles += 1
                    continue
                corners.append([p.partition(b"/")[0] for p in parts[1:]] if b"/" in line else parts[1:])
                defined.append(len(coords))  # negative indices count back from here
                materials.append(material)
            elif parts[0] == b"usemtl":
                material = names.setdefault(b" ".join(parts[1:]), len(names))
    try:
        vertices = np.array(coords).astype(np.float64).reshape(-1, 3)
        index = np.array(corners).astype(np.int64).reshape(-1, 3)
    except ValueError as err:  # a short or non-numeric line; open3d had its own reading of it
        return ObjFile(None, None, None, non_triangles, f"its v / f lines did not parse ({err})")
    triangles = np.where(index < 0, np.array(defined, dtype=np.int64)[:, None] + index, index - 1)
    if len(triangles) and (triangles.min() < 0 or triangles.max() >= len(vertices)):
        return ObjFile(None, None, None, non_triangles, "a face refers to a vertex it does not define")
    return ObjFile(vertices, triangles, np.array(materials, dtype=np.int64), non_triangles)


def _restore_obj_precision(raw: RawMesh, obj: ObjFile, material_ids: np.ndarray) -> None:
    """Put the OBJ's own float64 positions in place of open3d's float32 ones.

    open3d (assimp, without post-processing) does not keep the file's vertex list: it orders vertices
    by first use, drops unused ones, splits a vertex used with two uvs, and merges vertices whose
    float32 values are equal (distinct at full precision, e.g. 0.1 m apart at a UTM northing). Its
    triangles keep the file's order, grouped by material. So triangles are matched to the file's
    faces (checked corner by corner within float32 rounding) and each (open3d vertex, file vertex)
    pair becomes a vertex; unmatched, the float32 values stay and ``precision_note`` says why.
    """
    if obj.vertices is None:
        raw.precision_note = obj.note
        return
    if len(obj.triangles) != len(raw.faces):
        raw.precision_note = f"the file has {len(obj.triangles)} triangles, the reader returned {len(raw.faces)}"
        return
    read = raw.vertices[raw.faces]  # [F, 3, 3] open3d's corners
    order = _obj_triangle_order(read, obj, material_ids)
    if order is None:
        raw.precision_note = "its triangles could not be matched to the reader's within float32 rounding"
        return
    file_corner = obj.triangles[order].ravel()
    pair, inverse = np.unique(raw.faces.ravel() * len(obj.vertices) + file_corner, return_inverse=True)
    read_index, file_index = pair // len(obj.vertices), pair % len(obj.vertices)
    raw.vertices = obj.vertices[file_index]
    raw.faces = inverse.reshape(-1, 3).astype(np.int64)
    if raw.vertex_colors is not None:
        raw.vertex_colors = raw.vertex_colors[read_index]
    raw.coordinate_dtype, raw.precision_note = "float64", ""


def _obj_triangle_order(read: np.ndarray, obj: ObjFile, material_ids: np.ndarray) -> np.ndarray | None:
    """The file triangle behind each of open3d's triangles: the file's order, or the file's order within
    each ``usemtl`` name, taken in the order of open3d's material groups; None if neither matches."""
    if _corners_match(read, obj.vertices[obj.triangles]):
        return np.arange(len(read))
    if len(material_ids) != len(read):
        return None
    order, used = [], set()
    starts = np.flatnonzero(np.diff(material_ids, prepend=material_ids[:1] - 1))
    for start, stop in zip(starts, [*starts[1:], len(read)]):
        for name in sorted(set(obj.materials.tolist()) - used):
            faces = np.flatnonzero(obj.materials == name)
            if len(faces) == stop - start and _corners_match(read[start:stop], obj.vertices[obj.triangles[faces]]):
                order.append(faces)
                used.add(name)
                break
        else:
            return None
    return np.concatenate(order) if order else None


def _corners_match(read: np.ndarray, exact: np.ndarray) -> bool:
    """``read`` is ``exact`` rounded to float32, by a parser that can be a few units in the last place off."""
    tolerance = 4.0 * np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    return read.shape == exact.shape and bool((np.abs(read - exact) <= tolerance).all())


def _texture_rgb(t: np.ndarray) -> np.ndarray:
    """open3d stores textures bottom row first (OpenGL memory order); flip back to top row first."""
    t = np.flipud(t)
    t = t[..., :3] if t.shape[-1] >= 3 else np.repeat(t[..., :1], 3, axis=-1)
    return _to_uint8(t)


def _check_gltf_transforms(path: Path) -> None:
    """open3d merges glTF meshes without their node transforms: refuse files that have any.

    A silent mismatch would misplace geometry; applying transforms in a tool such as
    Blender ("apply all transforms") before export fixes it.
    """
    gltf = _read_gltf_json(path)
    for i, node in enumerate(gltf.get("nodes", [])):
        matrix = np.asarray(node.get("matrix", np.eye(4).T.ravel()), dtype=np.float64)
        trs = (
            np.allclose(node.get("translation", [0, 0, 0]), 0)
            and np.allclose(node.get("rotation", [0, 0, 0, 1]), [0, 0, 0, 1])
            and np.allclose(node.get("scale", [1, 1, 1]), 1)
        )
        if not (trs and np.allclose(matrix, np.eye(4).T.ravel())):
            raise import_error(
                path, f"glTF node {i} ({node.get('name', '')!r}) has a transform, which the reader would ignore; "
                "apply transforms to the geometry before export"
            )


def _read_gltf_json(path: Path) -> dict:
    data = path.read_bytes()
    try:
        if path.suffix.lower() == ".gltf":
            return json.loads(data)
        magic, _, _ = struct.unpack_from("<III", data, 0)
        length, kind = struct.unpack_from("<II", data, 12)
        if magic != 0x46546C67 or kind != 0x4E4F534A:
            raise ValueError("bad GLB magic or first chunk is not JSON")
        return json.loads(data[20 : 20 + length])
    except (ValueError, struct.error) as err:
        raise import_error(path, f"not a readable glTF/GLB file ({err})") from None


# --------------------------------------------------------------------------- classes and colour


def _face_classes(path: Path, raw: RawMesh, policy: str) -> tuple[np.ndarray, dict]:
    if raw.face_classes is None:
        n = len(raw.faces)
        log.info("%s: no face class attribute; %d faces unlabeled", path, n)
        return np.zeros(n, dtype=np.uint8), {"unlabeled_faces_no_attribute": n, "unknown_class_faces": 0}
    values = raw.face_classes
    unknown = (values < 0) | (values >= NUM_CLASSES)
    if unknown.any():
        codes = {str(c): int(n) for c, n in zip(*np.unique(values[unknown], return_counts=True))}
        if policy == "error":
            raise import_error(path, f"face class values outside 0..{NUM_CLASSES - 1}: {codes} (value: faces)")
        log.warning("%s: face class values outside 0..%d %s -> unlabeled", path, NUM_CLASSES - 1, codes)
    return np.where(unknown, 0, values).astype(np.uint8), {
        "unlabeled_faces_no_attribute": 0,
        "unknown_class_faces": int(unknown.sum()),
    }


def _vertex_colors(path, raw: RawMesh, semantic, texels_per_edge, max_faces):
    """-> (colours [V, 3] uint8, vertices, faces, per-face classes, sampling notes)."""
    if raw.vertex_colors is not None:
        return raw.vertex_colors, raw.vertices, raw.faces, semantic, {"method": "vertex_colors"}
    if raw.corner_uv is None or not raw.textures:
        raise import_error(path, "the mesh has neither vertex colours nor a texture")
    levels = _subdivision_levels(raw, texels_per_edge, max_faces)
    vertices, faces, uv = raw.vertices, raw.faces, raw.corner_uv
    face_texture = raw.face_texture
    for _ in range(levels):
        vertices, faces, uv = _subdivide_midpoint(vertices, faces, uv)
    if levels:
        semantic = np.repeat(semantic, 4**levels)
        face_texture = np.repeat(face_texture, 4**levels)
    colors, uncoloured = _texture_to_vertices(vertices, faces, uv, face_texture, raw.textures)
    if uncoloured:
        log.warning("%s: %d vertices touch only untextured faces; coloured mid-grey", path, uncoloured)
    notes = {"method": "texture", "subdivision_levels": levels, "faces_before": int(len(raw.faces)),
             "faces_after": int(len(faces)), "texels_per_edge_target": texels_per_edge,
             "uncoloured_vertices": uncoloured}
    return colors, vertices, faces, semantic, notes


def _subdivision_levels(raw: RawMesh, texels_per_edge: float, max_faces: int) -> int:
    """Levels of 1->4 subdivision so the median edge spans <= ``texels_per_edge`` texels."""
    textured = raw.face_texture >= 0
    if not textured.any():
        return 0
    sizes = np.array([[t.shape[1], t.shape[0]] for t in raw.textures], dtype=np.float64)
    uv = raw.corner_uv[textured] * sizes[raw.face_texture[textured]][:, None, :]
    edges = np.linalg.norm(uv - np.roll(uv, 1, axis=1), axis=-1)  # [F, 3] in texels
    median = float(np.median(edges.max(axis=1)))
    if median <= texels_per_edge:
        return 0
    wanted = int(np.ceil(np.log2(median / texels_per_edge)))
    budget = int(np.floor(np.log(max(max_faces / len(raw.faces), 1)) / np.log(4)))
    return max(0, min(wanted, budget))


def _subdivide_midpoint(vertices: np.ndarray, faces: np.ndarray, uv: np.ndarray):
    """One level of 1->4 midpoint subdivision; shared edges share their new vertex.

    Child faces of face i are rows 4i..4i+3, so per-face attributes repeat with ``np.repeat(a, 4)``.
    """
    edges = faces[:, [[0, 1], [1, 2], [2, 0]]]  # [F, 3, 2]
    lo, hi = edges.min(axis=-1).ravel(), edges.max(axis=-1).ravel()
    unique, inverse = np.unique(lo * len(vertices) + hi, return_inverse=True)  # one int64 key per edge
    mids = len(vertices) + inverse.reshape(-1, 3)  # [F, 3]: vertex ids of m01, m12, m20
    a_end, b_end = unique // len(vertices), unique % len(vertices)
    new_vertices = np.concatenate([vertices, 0.5 * (vertices[a_end] + vertices[b_end])])
    a, b, c = faces[:, 0], faces[:, 1], faces[:, 2]
    m01, m12, m20 = mids[:, 0], mids[:, 1], mids[:, 2]
    new_faces = np.stack(
        [np.stack([a, m01, m20], 1), np.stack([m01, b, m12], 1), np.stack([m20, m12, c], 1), np.stack([m01, m12, m20], 1)],
        axis=1,
    ).reshape(-1, 3)
    ua, ub, uc = uv[:, 0], uv[:, 1], uv[:, 2]
    u01, u12, u20 = 0.5 * (ua + ub), 0.5 * (ub + uc), 0.5 * (uc + ua)
    new_uv = np.stack(
        [np.stack([ua, u01, u20], 1), np.stack([u01, ub, u12], 1), np.stack([u20, u12, uc], 1), np.stack([u01, u12, u20], 1)],
        axis=1,
    ).reshape(-1, 3, 2)
    return new_vertices, new_faces, new_uv


def _texture_to_vertices(vertices, faces, uv, face_texture, textures) -> tuple[np.ndarray, int]:
    """Mean of bilinear texture samples at each vertex's textured corners -> (uint8 [V, 3], uncoloured)."""
    total = np.zeros((len(vertices), 3), dtype=np.float64)
    count = np.zeros(len(vertices), dtype=np.float64)
    for t_index, texture in enumerate(textures):
        sel = face_texture == t_index
        if not sel.any():
            continue
        h, w = texture.shape[:2]
        corner_uv = uv[sel].reshape(-1, 2)
        corner_uv = np.where((corner_uv < 0) | (corner_uv > 1), corner_uv % 1.0, corner_uv)  # glTF/GL repeat
        col = corner_uv[:, 0] * w - 0.5
        row = (1.0 - corner_uv[:, 1]) * h - 0.5  # v up: v = 1 is the image's top row
        samples = bilinear(texture, col, row)
        ids = faces[sel].reshape(-1)
        np.add.at(total, ids, samples)
        np.add.at(count, ids, 1.0)
    uncoloured = int((count == 0).sum())
    colors = np.full((len(vertices), 3), 128.0)
    has = count > 0
    colors[has] = total[has] / count[has, None]
    return np.clip(np.round(colors), 0, 255).astype(np.uint8), uncoloured


def _drop_degenerate_faces(raw: RawMesh) -> int:
    """Remove faces that repeat a vertex index (with their per-face data); returns how many."""
    f = raw.faces
    keep = (f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 2] != f[:, 0])
    if keep.all():
        return 0
    for name in ("faces", "face_classes", "corner_uv", "face_texture"):
        if getattr(raw, name) is not None:
            setattr(raw, name, getattr(raw, name)[keep])
    return int((~keep).sum())
