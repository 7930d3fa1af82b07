"""Mesh repair: the "topological repairs" applied to reconstructed scene meshes.

:func:`clean_mesh` runs, in order:

1. merge vertices that round to the same point of a ``merge_distance`` grid (marching
   cubes and per-part meshes duplicate vertices along seams; merging joins the parts);
2. drop degenerate faces (a repeated vertex, or area below ``min_face_area`` m^2) and
   duplicate faces (the same three vertices in any order; the first is kept);
3. drop small connected components (floaters): a component (faces joined through shared
   vertices) goes when it has fewer than ``min_component_faces`` faces, or less than
   ``min_component_area`` m^2, or less than ``min_component_area_fraction`` of the total
   area (each criterion off at 0);
4. drop vertices no face uses;
5. orient normals (``orientation``): ``"consistent"`` makes neighbouring faces (across
   edges with exactly two faces) agree, then turns each component outward: a closed one
   to positive signed volume, an open one to face up on average (positive projected xy
   area), as an aerial 2.5D surface does; ``"up"`` does the same and then flips every
   face whose normal still points down (z < -``up_tolerance``), the 2.5D assumption that
   every surface faces the sky, which is wrong for overhangs; ``"none"`` leaves winding alone;
6. optionally decimate to ``target_faces`` by quadric error (open3d), keeping vertex
   colours, and give each new face the class of the original face nearest its centroid.

The report counts what each step removed or changed.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import open3d as o3d
from pydantic import BaseModel, ConfigDict, Field
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from earthcrafter.geometry.faces import face_areas, face_normals
from earthcrafter.io.scene import Mesh

log = logging.getLogger(__name__)


class CleanConfig(BaseModel):
    """Knobs of mesh cleaning. Lengths in metres, areas in m^2."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    merge_distance: float = Field(1e-5, ge=0)
    min_face_area: float = Field(1e-10, ge=0)
    min_component_faces: int = Field(0, ge=0)
    min_component_area: float = Field(2.0, ge=0)
    min_component_area_fraction: float = Field(0.0, ge=0, lt=1)
    orientation: Literal["consistent", "up", "none"] = "consistent"
    up_tolerance: float = Field(0.0, ge=0, lt=1)
    target_faces: int | None = Field(None, gt=0)


# --------------------------------------------------------------------------- primitives

def _subset(mesh: Mesh, keep_faces: np.ndarray) -> Mesh:
    sem = mesh.face_semantic[keep_faces] if mesh.face_semantic is not None else None
    return Mesh(mesh.vertices, mesh.faces[keep_faces], mesh.vertex_colors, sem)


def merge_vertices(mesh: Mesh, distance: float) -> tuple[Mesh, int]:
    """Merge vertices on the same ``distance`` grid point (first one's colour wins)."""
    if distance <= 0 or len(mesh.vertices) == 0:
        return mesh, 0
    keys = np.floor(mesh.vertices / distance + 0.5).astype(np.int64)
    _, first, inverse = np.unique(keys, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.ravel()
    if len(first) == len(mesh.vertices):
        return mesh, 0
    colors = mesh.vertex_colors[first] if mesh.vertex_colors is not None else None
    merged = Mesh(mesh.vertices[first], inverse[mesh.faces], colors, mesh.face_semantic)
    return merged, len(mesh.vertices) - len(first)


def _first_of_rows(rows: np.ndarray) -> np.ndarray:
    """Index of the first occurrence of each distinct row of an int array [N, K] (sorted)."""
    if len(rows) == 0:
        return np.zeros(0, np.int64)
    order = np.lexsort(rows.T[::-1])  # stable: equal rows keep their input order
    r = rows[order]
    start = np.r_[True, (r[1:] != r[:-1]).any(axis=1)]
    return np.sort(order[start])


def remove_degenerate(mesh: Mesh, min_area: float) -> tuple[Mesh, int, int]:
    """Drop faces with a repeated vertex or area < ``min_area``, then duplicate faces
    (same vertex set, any order; the first is kept). Returns (mesh, n_degenerate, n_duplicate)."""
    f = mesh.faces
    repeated = (f[:, 0] == f[:, 1]) | (f[:, 1] == f[:, 2]) | (f[:, 0] == f[:, 2])
    area = face_areas(mesh.vertices, f)
    good = np.flatnonzero(~(repeated | (area < min_area)))
    first = _first_of_rows(np.sort(f[good], axis=1))
    kept = np.zeros(len(f), bool)
    kept[good[first]] = True
    return _subset(mesh, kept), len(f) - len(good), len(good) - len(first)


def remove_unreferenced(mesh: Mesh) -> tuple[Mesh, int]:
    used = np.zeros(len(mesh.vertices), bool)
    used[mesh.faces.ravel()] = True
    if used.all():
        return mesh, 0
    remap = np.cumsum(used) - 1
    colors = mesh.vertex_colors[used] if mesh.vertex_colors is not None else None
    return Mesh(mesh.vertices[used], remap[mesh.faces], colors, mesh.face_semantic), int((~used).sum())


def face_components(faces: np.ndarray, n_vertices: int) -> tuple[int, np.ndarray]:
    """Connected components of faces joined through shared vertices: (count, label per face)."""
    if len(faces) == 0:
        return 0, np.zeros(0, np.int64)
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]]])
    g = sparse.coo_matrix((np.ones(len(e), np.int8), (e[:, 0], e[:, 1])), shape=(n_vertices, n_vertices))
    n, vlabel = connected_components(g, directed=False)
    _, flabel = np.unique(vlabel[faces[:, 0]], return_inverse=True)
    return int(flabel.max()) + 1, flabel.ravel()


def remove_small_components(mesh: Mesh, cfg: CleanConfig) -> tuple[Mesh, dict]:
    n, label = face_components(mesh.faces, len(mesh.vertices))
    area = face_areas(mesh.vertices, mesh.faces)
    comp_faces = np.bincount(label, minlength=n)
    comp_area = np.bincount(label, area, minlength=n)
    small = (comp_faces < cfg.min_component_faces) | (comp_area < cfg.min_component_area)
    small |= comp_area < cfg.min_component_area_fraction * area.sum()
    drop = small[label]
    report = {
        "components": n,
        "components_removed": int(small.sum()),
        "faces_removed_small_components": int(drop.sum()),
        "area_removed_small_components": float(area[drop].sum()),
    }
    return _subset(mesh, ~drop), report


# --------------------------------------------------------------------------- orientation

def _edge_pairs(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Faces (f, g) sharing an edge used by exactly two faces, whether their windings agree
    along it, and per face the number of boundary (single-face) edges."""
    F = len(faces)
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    owner = np.tile(np.arange(F), 3)
    forward = directed[:, 0] < directed[:, 1]
    key = np.minimum(directed[:, 0], directed[:, 1]) * (faces.max() + 1) + np.maximum(directed[:, 0], directed[:, 1])
    _, inv, counts = np.unique(key, return_inverse=True, return_counts=True)
    order = np.argsort(inv, kind="stable")
    two = counts[inv[order]] == 2
    first = order[two][0::2]
    second = order[two][1::2]
    agree = forward[first] != forward[second]  # consistent winding walks a shared edge both ways
    boundary = np.bincount(owner[counts[inv] == 1], minlength=F)
    return owner[first], owner[second], agree, boundary


def orient_faces(mesh: Mesh, mode: str, up_tolerance: float = 0.0) -> tuple[Mesh, dict]:
    """Consistent winding per component, components turned outward/up (see module doc).

    Report: ``faces_flipped`` (net, by the consistent/outward step), ``components_reoriented``
    (components with any such flip), ``faces_flipped_up`` (``"up"`` mode) and
    ``non_orientable_components`` (left as they were).
    """
    faces = mesh.faces
    F = len(faces)
    report = {"faces_flipped": 0, "components_reoriented": 0, "faces_flipped_up": 0, "non_orientable_components": 0}
    if mode == "none" or F == 0:
        return mesh, report
    f, g, agree, boundary = _edge_pairs(faces)
    # Two states per face (kept: f, flipped: f + F). Agreeing neighbours share a state,
    # disagreeing ones take opposite states; a component of this doubled graph is one
    # consistent orientation of a face component, its twin the reverse orientation.
    rows = np.concatenate([f, f + F])
    cols = np.concatenate([np.where(agree, g, g + F), np.where(agree, g + F, g)])
    doubled = sparse.coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(2 * F, 2 * F))
    _, state = connected_components(doubled, directed=False)
    non_orientable = state[:F] == state[F:]
    flip = (state[:F] > state[F:]) & ~non_orientable  # pick one twin per component
    consistent = np.where(flip[:, None], faces[:, ::-1], faces)

    # Turn each component outward (closed: positive volume) or up (open: positive xy area).
    adjacency = sparse.coo_matrix((np.ones(len(f), np.int8), (f, g)), shape=(F, F))
    n_comp, comp = connected_components(adjacency, directed=False)
    bad_comps = np.unique(comp[non_orientable])
    v = mesh.vertices - mesh.vertices.mean(axis=0)  # signed volume is exact only up to rounding
    tri = v[consistent]
    volume = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2]))
    comp_volume = np.bincount(comp, volume, minlength=n_comp)
    comp_up = np.bincount(comp, face_normals(v, consistent)[:, 2], minlength=n_comp)
    comp_open = np.bincount(comp, boundary, minlength=n_comp) > 0
    comp_flip = np.where(comp_open, comp_up < 0, comp_volume < 0)
    comp_flip[bad_comps] = False
    net = flip ^ comp_flip[comp]
    faces = np.where(net[:, None], faces[:, ::-1], faces)
    report.update(
        faces_flipped=int(net.sum()),
        components_reoriented=int(len(np.unique(comp[net]))),
        non_orientable_components=int(len(bad_comps)),
    )
    if mode == "up":
        n = face_normals(v, faces)
        down = n[:, 2] < -up_tolerance * np.linalg.norm(n, axis=1)
        faces = np.where(down[:, None], faces[:, ::-1], faces)
        report["faces_flipped_up"] = int(down.sum())
    return Mesh(mesh.vertices, faces, mesh.vertex_colors, mesh.face_semantic), report


# --------------------------------------------------------------------------- decimation

def to_open3d(mesh: Mesh) -> o3d.geometry.TriangleMesh:
    lm = o3d.geometry.TriangleMesh(
        o3d.utility.Vector3dVector(mesh.vertices), o3d.utility.Vector3iVector(mesh.faces.astype(np.int32))
    )
    if mesh.vertex_colors is not None:
        lm.vertex_colors = o3d.utility.Vector3dVector(mesh.vertex_colors / 255.0)
    return lm


def nearest_faces(mesh: Mesh, query: np.ndarray) -> np.ndarray:
    """Index of the face of ``mesh`` closest to each query point [N, 3] (exact, open3d)."""
    scene = o3d.t.geometry.RaycastingScene()
    tm = o3d.t.geometry.TriangleMesh()
    tm.vertex.positions = o3d.core.Tensor(mesh.vertices.astype(np.float32))
    tm.triangle.indices = o3d.core.Tensor(mesh.faces.astype(np.int32))
    scene.add_triangles(tm)
    ans = scene.compute_closest_points(o3d.core.Tensor(query.astype(np.float32)))
    return ans["primitive_ids"].numpy().astype(np.int64)


def decimate(mesh: Mesh, target_faces: int) -> Mesh:
    """Quadric decimation to at most ``target_faces``; classes by nearest original face."""
    lm = to_open3d(mesh).simplify_quadric_decimation(target_number_of_triangles=int(target_faces))
    v = np.asarray(lm.vertices)
    f = np.asarray(lm.triangles, dtype=np.int64)
    colors = None
    if mesh.vertex_colors is not None and lm.has_vertex_colors():
        colors = np.clip(np.asarray(lm.vertex_colors) * 255 + 0.5, 0, 255).astype(np.uint8)
    sem = None
    if mesh.face_semantic is not None and len(f):
        sem = mesh.face_semantic[nearest_faces(mesh, v[f].mean(axis=1))]
    return Mesh(v, f, colors, sem)


# --------------------------------------------------------------------------- public

def check_mesh(mesh: Mesh) -> None:
    bad = ~np.isfinite(mesh.vertices).all(axis=1)
    if bad.any():
        raise ValueError(
            f"mesh has {int(bad.sum())} vertices with NaN/inf coordinates (first at index {int(np.argmax(bad))})"
        )


def clean_mesh(mesh: Mesh, cfg: CleanConfig) -> tuple[Mesh, dict]:
    """Repair ``mesh`` (steps in the module docstring); returns the new mesh and a report.

    The report holds input/output sizes and, per step, how many vertices, faces or
    components it removed or flipped. The input mesh is not modified.
    """
    cfg = getattr(cfg, "clean", cfg)
    if not isinstance(cfg, CleanConfig):
        raise TypeError(f"expected CleanConfig (or a config with .clean), got {type(cfg).__name__}")
    check_mesh(mesh)
    report: dict = {"vertices_in": len(mesh.vertices), "faces_in": len(mesh.faces)}
    mesh, report["vertices_merged"] = merge_vertices(mesh, cfg.merge_distance)
    mesh, report["faces_degenerate"], report["faces_duplicate"] = remove_degenerate(mesh, cfg.min_face_area)
    comp_report = {"components": 0, "components_removed": 0, "faces_removed_small_components": 0, "area_removed_small_components": 0.0}
    if len(mesh.faces):
        mesh, comp_report = remove_small_components(mesh, cfg)
    report.update(comp_report)
    mesh, report["vertices_unreferenced"] = remove_unreferenced(mesh)
    mesh, orient_report = orient_faces(mesh, cfg.orientation, cfg.up_tolerance)
    report.update(orient_report)

    report["decimation"] = None
    if cfg.target_faces is not None and len(mesh.faces) > cfg.target_faces:
        before = len(mesh.faces)
        mesh = decimate(mesh, cfg.target_faces)
        mesh, n_degenerate, n_duplicate = remove_degenerate(mesh, cfg.min_face_area)
        mesh, n_unref = remove_unreferenced(mesh)
        report["decimation"] = {
            "target_faces": cfg.target_faces,
            "faces_before": before,
            "faces_after": len(mesh.faces),
            "faces_degenerate_after": n_degenerate + n_duplicate,
        }
        if cfg.orientation != "none":  # decimation keeps winding, but re-check cheaply
            mesh, _ = orient_faces(mesh, cfg.orientation, cfg.up_tolerance)
    report["vertices_out"] = len(mesh.vertices)
    report["faces_out"] = len(mesh.faces)
    if len(mesh.faces) == 0:
        log.warning("clean_mesh removed every face (%d in)", report["faces_in"])
    return mesh, report
