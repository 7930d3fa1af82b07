"""Surfaces from points: DSM triangulation (three jump modes) and screened Poisson."""

from __future__ import annotations

import numpy as np
import pytest

from earthcrafter.evaluation.mesh_metrics import mesh_quality
from earthcrafter.geometry.mesh_clean import face_normals, nearest_faces
from earthcrafter.geometry.raycast import MeshRaycaster
from earthcrafter.geometry.surface import (
    DSMConfig,
    PoissonConfig,
    majority,
    rasterize_top,
    reconstruct_from_points,
)
from earthcrafter.io.scene import Points
from earthcrafter.semantics import CLASS_ID

from meshing_synth import FACADE, ROOF, sample_points

TREE = CLASS_ID["tree"]


def edge_use(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Undirected edges [E, 2] and how many faces use each."""
    e = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    return np.unique(e, axis=0, return_counts=True)


def interior_open_edges(mesh) -> int:
    """Boundary edges not on the outer border of the grid's bounding box."""
    edges, count = edge_use(mesh.faces)
    mid = mesh.vertices[edges[count == 1]].mean(1)[:, :2]
    lo, hi = mesh.vertices[:, :2].min(0) + 1e-6, mesh.vertices[:, :2].max(0) - 1e-6
    return int(((mid > lo) & (mid < hi)).all(axis=1).sum())


def windings_agree(faces: np.ndarray) -> bool:
    """Every edge shared by two faces is walked in opposite directions by them."""
    d = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    key, inv, cnt = np.unique(np.sort(d, 1), axis=0, return_inverse=True, return_counts=True)
    inv = inv.ravel()
    two = cnt[inv] == 2
    _, n_dir = np.unique(np.c_[inv[two], d[two, 0] < d[two, 1]], axis=0, return_counts=True)
    return bool((n_dir == 1).all())  # each shared edge: one forward use, one backward


@pytest.fixture(scope="module")
def dsm(town_points):
    return {
        mode: reconstruct_from_points(town_points, DSMConfig(cell_size=0.5, jump_mode=mode), return_report=True)
        for mode in ("facade", "drop", "slope")
    }


def test_dsm_matches_ground_truth(dsm, town):
    mesh, report = dsm["facade"]
    q = mesh_quality(mesh, town, n_samples=100_000, threshold=0.5)
    assert q["chamfer_l1"] < 0.2 and q["fscore"] > 0.96, q
    assert report["holes_left_open"] == 0 and report["cells_filled"] > 0
    # Dropping the walls loses completeness (facades are missing), not accuracy.
    q_drop = mesh_quality(dsm["drop"][0], town, n_samples=100_000, threshold=0.5)
    assert q_drop["completeness"] > q["completeness"] + 0.05
    assert q_drop["accuracy"] < q["accuracy"] + 0.02


def test_dsm_heights_match_ray_cast_heights(dsm, town):
    mesh, _ = dsm["slope"]  # every vertex is a cell centre at the cell's top height
    truth = MeshRaycaster(town).height_at(mesh.vertices[:, :2])
    err = np.abs(mesh.vertices[:, 2] - truth)
    assert np.median(err) < 0.05 and (err < 0.3).mean() > 0.97


def test_facade_mode_is_closed_consistent_and_upward(dsm, town):
    mesh, _ = dsm["facade"]
    assert interior_open_edges(mesh) == 0
    assert (edge_use(mesh.faces)[1] <= 2).all()
    assert windings_agree(mesh.faces)
    n = face_normals(mesh.vertices, mesh.faces)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    assert (n[:, 2] >= -1e-9).all()
    wall = np.abs(n[:, 2]) < 1e-9
    assert wall.sum() > 100
    # Walls face outward (like the truth's facades) and are labelled facade under roofs.
    n_true = face_normals(town.vertices, town.faces)[nearest_faces(town, mesh.vertices[mesh.faces[wall]].mean(1))]
    dot = np.einsum("ij,ij->i", n[wall], n_true)  # 0 where the nearest true face is ground or a side wall
    assert (dot < 0).mean() < 0.02 and (dot > 0).mean() > 0.75
    tall = np.ptp(mesh.vertices[mesh.faces[wall], 2], axis=1) > 3.0
    assert (mesh.face_semantic[wall][tall] == FACADE).mean() > 0.95


def test_drop_and_slope_modes(dsm):
    facade, drop, slope = (dsm[k][0] for k in ("facade", "drop", "slope"))
    n = face_normals(drop.vertices, drop.faces)
    assert (np.abs(n[:, 2]) > 1e-9).all()  # no vertical walls
    assert interior_open_edges(drop) > 100  # open along every jump
    assert len(drop.faces) < len(facade.faces)
    # Slope mode triangulates the plain grid: vertices are exactly the cell centres.
    _, rep = dsm["slope"]
    assert len(slope.vertices) == rep["cells_occupied"] + rep["cells_filled"]
    assert interior_open_edges(slope) == 0 and windings_agree(slope.faces)


def test_random_jumps_stay_closed_and_consistent():
    """Every jump pattern (all 15 block masks, saddles, three or four levels in a block)."""
    rng = np.random.default_rng(0)
    n = 40
    iy, ix = np.mgrid[0:n, 0:n]
    z = rng.choice([0.0, 3.0, 7.0, 12.0], size=(n, n), p=[0.4, 0.2, 0.2, 0.2]) + rng.normal(0, 0.3, (n, n))
    xyz = np.stack([ix.ravel() + 0.5, iy.ravel() + 0.5, z.ravel()], 1)
    pts = Points(xyz, np.full((n * n, 3), 100, np.uint8), np.full(n * n, ROOF, np.uint8))
    mesh = reconstruct_from_points(pts, DSMConfig(cell_size=1.0))
    assert interior_open_edges(mesh) == 0
    assert windings_agree(mesh.faces)
    n_ = face_normals(mesh.vertices, mesh.faces)
    assert (n_[:, 2] >= -1e-9).all()
    edges, count = edge_use(mesh.faces)
    many = edges[count > 2]  # only where four walls cross at a saddle's block centre
    assert np.allclose(mesh.vertices[many[:, 0], :2], mesh.vertices[many[:, 1], :2])
    assert np.allclose(mesh.vertices[many[:, 0], :2] % 1.0, 0.0)  # block centres: grid origin at 0


def plane_points(cell: float = 0.5, n: int = 40, hole: tuple[float, float, float] | None = None) -> Points:
    """One point at each cell centre of a tilted plane, optionally minus a disc (x, y, r)."""
    c = (np.arange(n) + 0.5) * cell
    X, Y = np.meshgrid(c, c)
    xy = np.stack([X.ravel(), Y.ravel()], 1)
    if hole is not None:
        xy = xy[np.hypot(xy[:, 0] - hole[0], xy[:, 1] - hole[1]) > hole[2]]
    z = 0.1 * xy[:, 0] + 0.05 * xy[:, 1] + 3.0
    rgb = np.stack([10 * xy[:, 0], 5 * xy[:, 1], np.full(len(xy), 50.0)], 1).astype(np.uint8)
    sem = np.where(xy[:, 0] < 10, CLASS_ID["grass_lawn"], CLASS_ID["road"]).astype(np.uint8)
    return Points(np.c_[xy, z], rgb, sem)


def test_hole_fill_is_exact_on_a_plane():
    """Harmonic interpolation reproduces a linear surface (and linear colours) exactly."""
    pts = plane_points(hole=(8.0, 9.0, 2.0))
    mesh, rep = reconstruct_from_points(pts, DSMConfig(cell_size=0.5, max_hole_cells=100), return_report=True)
    assert rep["holes_filled"] == 1 and 40 < rep["cells_filled"] < 60 and rep["holes_left_open"] == 0
    v = mesh.vertices
    assert np.allclose(v[:, 2], 0.1 * v[:, 0] + 0.05 * v[:, 1] + 3.0, atol=1e-9)
    in_hole = np.hypot(v[:, 0] - 8.0, v[:, 1] - 9.0) < 2.0
    assert in_hole.sum() == rep["cells_filled"]
    assert np.abs(mesh.vertex_colors[in_hole, 0] - 10 * v[in_hole, 0]).max() <= 1.0


def test_large_holes_stay_open():
    pts = plane_points(hole=(8.0, 9.0, 2.0))
    mesh, rep = reconstruct_from_points(pts, DSMConfig(cell_size=0.5, max_hole_cells=20), return_report=True)
    assert rep["holes_filled"] == 0 and rep["holes_left_open"] == 1 and rep["cells_left_open"] > 40
    in_hole = np.hypot(mesh.vertices[:, 0] - 8.0, mesh.vertices[:, 1] - 9.0) < 1.9
    assert not in_hole.any()
    assert interior_open_edges(mesh) > 0


def test_rasterize_takes_top_band_majority_and_mean_colour():
    xyz = np.array(
        [[0.1, 0.1, 10.0], [0.2, 0.3, 9.8], [0.4, 0.4, 9.9], [0.3, 0.2, 2.0],  # cell (0, 0): roof on top
         [1.2, 0.2, 1.0], [1.3, 0.3, 1.1], [1.1, 0.4, 1.05]]  # cell (0, 1)
    )
    rgb = np.array([[200, 0, 0], [100, 0, 0], [0, 0, 0], [0, 255, 0], [0, 0, 30], [0, 0, 60], [0, 0, 90]], np.uint8)
    sem = np.array([ROOF, ROOF, TREE, FACADE, 3, 3, 4], np.uint8)
    g = rasterize_top(Points(xyz, rgb, sem), DSMConfig(cell_size=1.0, top_band=0.5))
    assert g["z"].shape == (1, 2)
    assert g["z"][0, 0] == 10.0 and g["z"][0, 1] == 1.1
    assert g["sem"][0, 0] == ROOF and g["sem"][0, 1] == 3  # the facade point lies below the band
    assert g["rgb"][0, 0] == pytest.approx([100, 0, 0])
    assert g["rgb"][0, 1] == pytest.approx([0, 0, 60])


def test_majority_vote():
    groups = np.array([0, 0, 0, 2, 2, 3, 3])
    labels = np.array([5, 7, 5, 9, 4, 1, 1])
    assert majority(groups, labels, 5).tolist() == [5, 0, 4, 1, 0]  # tie 9/4 -> smaller


def test_wall_classes_follow_their_top():
    """A roof block gets facade walls; a tree block gets tree walls."""
    n = 20
    iy, ix = np.mgrid[0:n, 0:n]
    roof = (ix >= 3) & (ix < 8) & (iy >= 3) & (iy < 8)
    tree = (ix >= 12) & (ix < 16) & (iy >= 12) & (iy < 16)
    z = np.where(roof, 8.0, np.where(tree, 6.0, 0.0))
    sem = np.where(roof, ROOF, np.where(tree, TREE, CLASS_ID["grass_lawn"]))
    xyz = np.stack([ix.ravel() + 0.5, iy.ravel() + 0.5, z.ravel()], 1)
    mesh = reconstruct_from_points(Points(xyz, np.zeros((n * n, 3), np.uint8), sem.ravel()), DSMConfig(cell_size=1.0))
    wall = np.abs(face_normals(mesh.vertices, mesh.faces)[:, 2]) < 1e-9
    x = mesh.vertices[mesh.faces[wall]].mean(1)[:, 0]
    assert set(mesh.face_semantic[wall][x < 10]) == {FACADE}
    assert set(mesh.face_semantic[wall][x > 10]) == {TREE}
    assert set(mesh.face_semantic[~wall]) == {ROOF, TREE, CLASS_ID["grass_lawn"]}


def test_poisson_reconstruction(town):
    pts = sample_points(town, 20_000, seed=2)
    mesh, rep = reconstruct_from_points(pts, PoissonConfig(depth=6), return_report=True)
    assert rep["faces"] < rep["faces_poisson"]  # density trimming removed the low-support rim
    q = mesh_quality(mesh, town, n_samples=60_000, threshold=0.5)
    assert q["chamfer_l1"] < 0.3 and q["fscore"] > 0.9, q
    truth = town.face_semantic[nearest_faces(town, mesh.vertices[mesh.faces].mean(1))]
    assert (truth == mesh.face_semantic).mean() > 0.88
    lo, hi = pts.xyz.min(0), pts.xyz.max(0)
    assert (mesh.vertices >= lo - 1e-6).all() and (mesh.vertices <= hi + 1e-6).all()
    again = reconstruct_from_points(pts, PoissonConfig(depth=6))  # one thread: repeatable
    assert np.array_equal(mesh.vertices, again.vertices) and np.array_equal(mesh.faces, again.faces)


def test_bad_points_raise_clear_errors():
    empty = Points(np.zeros((0, 3)), np.zeros((0, 3), np.uint8), np.zeros(0, np.uint8))
    for cfg in (DSMConfig(), PoissonConfig()):
        with pytest.raises(ValueError, match="empty"):
            reconstruct_from_points(empty, cfg)
    pts = plane_points()
    pts.xyz[7, 1] = np.nan
    with pytest.raises(ValueError, match="1 points with NaN/inf coordinates \\(first at index 7\\)"):
        reconstruct_from_points(pts, DSMConfig())
    far = plane_points()
    far.xyz[0] = [1e6, 1e6, 0.0]
    with pytest.raises(ValueError, match="max_grid_cells"):
        reconstruct_from_points(far, DSMConfig())
    with pytest.raises(ValueError, match="jump_mode"):
        DSMConfig(jump_mode="cliff")
    with pytest.raises(TypeError, match="DSMConfig"):
        reconstruct_from_points(plane_points(), {"cell_size": 1.0})
