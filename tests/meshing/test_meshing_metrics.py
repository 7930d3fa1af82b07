"""Mesh quality metrics: brute-force reference, properties, known geometric answers."""

from __future__ import annotations

import numpy as np
import pytest

from earthcrafter.evaluation.mesh_metrics import face_areas, mesh_quality, point_set_metrics, sample_surface
from earthcrafter.io.scene import Mesh


def grid_plane(size: float = 20.0, n: int = 21, z: float = 0.0) -> Mesh:
    g = np.linspace(0, size, n)
    X, Y = np.meshgrid(g, g)
    v = np.stack([X.ravel(), Y.ravel(), np.full(X.size, z)], 1)
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel(), idx[1:, :-1].ravel()
    return Mesh(v, np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)]))


def uv_sphere(radius: float, n_lat: int = 40, n_lon: int = 80) -> Mesh:
    th = np.linspace(0, np.pi, n_lat + 1)[1:-1]
    ph = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
    T, P = np.meshgrid(th, ph, indexing="ij")
    v = np.stack([np.sin(T) * np.cos(P), np.sin(T) * np.sin(P), np.cos(T)], -1).reshape(-1, 3)
    v = np.concatenate([v, [[0, 0, 1], [0, 0, -1]]]) * radius
    ring = np.arange(n_lon)
    faces = []
    for i in range(n_lat - 2):
        a, b = i * n_lon + ring, i * n_lon + (ring + 1) % n_lon
        c, d = a + n_lon, b + n_lon
        faces += [np.stack([a, c, b], 1), np.stack([b, c, d], 1)]
    top, bot, last = len(v) - 2, len(v) - 1, (n_lat - 2) * n_lon
    faces += [np.stack([np.full(n_lon, top), ring, (ring + 1) % n_lon], 1)]
    faces += [np.stack([np.full(n_lon, bot), last + (ring + 1) % n_lon, last + ring], 1)]
    return Mesh(v, np.concatenate(faces))


def test_point_set_metrics_match_brute_force():
    rng = np.random.default_rng(3)
    p = rng.normal(size=(400, 3))
    g = rng.normal(size=(300, 3)) + 0.2
    D = np.linalg.norm(p[:, None] - g[None], axis=2)  # [400, 300] all pairs
    d_pg, d_gp = D.min(1), D.min(0)
    m = point_set_metrics(p, g, threshold=0.3)
    assert m["accuracy"] == pytest.approx(d_pg.mean())
    assert m["completeness"] == pytest.approx(d_gp.mean())
    assert m["chamfer_l1"] == pytest.approx((d_pg.mean() + d_gp.mean()) / 2)
    assert m["chamfer_l2"] == pytest.approx(((d_pg**2).mean() + (d_gp**2).mean()) / 2)
    prec, rec = (d_pg < 0.3).mean(), (d_gp < 0.3).mean()
    assert m["precision"] == pytest.approx(prec) and m["recall"] == pytest.approx(rec)
    assert m["fscore"] == pytest.approx(2 * prec * rec / (prec + rec))


def test_sampling_is_area_weighted_and_on_the_surface():
    # Two triangles with areas 1 and 3.
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 2, 0], [5, 0, 1], [8, 0, 1], [5, 2, 1]], float)
    mesh = Mesh(v, np.array([[0, 1, 2], [3, 4, 5]]))
    assert face_areas(mesh) == pytest.approx([1.0, 3.0])
    pts, fid = sample_surface(mesh, 40_000, np.random.default_rng(0))
    assert (fid == 1).mean() == pytest.approx(0.75, abs=0.01)
    assert np.allclose(pts[:, 2], fid)  # each sample lies in its triangle's plane
    a = pts[fid == 1] - v[3]
    assert (a[:, 0] >= -1e-9).all() and (a[:, 1] >= -1e-9).all() and (a[:, 0] / 3 + a[:, 1] / 2 <= 1 + 1e-9).all()
    # Uniform inside a triangle: the mean is the centroid.
    assert pts[fid == 1].mean(0) == pytest.approx(v[3:].mean(0), abs=0.02)


def test_mesh_with_itself_scores_the_sampling_floor():
    mesh = grid_plane()
    q = mesh_quality(mesh, mesh, n_samples=40_000, threshold=0.2)
    floor = 0.5 * np.sqrt(400.0 / 40_000)  # documented: 0.5 * sqrt(area / n)
    assert q["chamfer_l1"] < 1.2 * floor
    assert q["fscore"] > 0.999 and q["precision"] > 0.999 and q["recall"] > 0.999


def test_mesh_quality_is_seeded():
    a, b = grid_plane(), grid_plane(z=0.3)
    assert mesh_quality(a, b, n_samples=5000, seed=7) == mesh_quality(a, b, n_samples=5000, seed=7)
    assert mesh_quality(a, b, n_samples=5000, seed=7) != mesh_quality(a, b, n_samples=5000, seed=8)


@pytest.mark.parametrize("shift", [0.5, 1.0, 2.0])
def test_shifted_plane_chamfer_equals_shift(shift):
    a = grid_plane()
    b = grid_plane(z=shift)
    q = mesh_quality(b, a, n_samples=50_000, threshold=0.25)
    # NN distances are sqrt(shift^2 + in-plane gap^2): the gap adds < 1% at these shifts.
    assert q["chamfer_l1"] == pytest.approx(shift, rel=0.01)
    assert q["chamfer_l2"] == pytest.approx(shift**2, rel=0.02)
    assert q["fscore"] == 0.0


def test_concentric_spheres_chamfer_is_radius_gap():
    q = mesh_quality(uv_sphere(10.4), uv_sphere(10.0), n_samples=60_000, threshold=0.5)
    # The polygonal spheres are inscribed (chord sag ~ r (1 - cos(pi / 80)) ~ 0.008 m).
    assert q["chamfer_l1"] == pytest.approx(0.4, abs=0.02)
    assert q["fscore"] == 1.0
    q = mesh_quality(uv_sphere(10.4), uv_sphere(10.0), n_samples=60_000, threshold=0.3)
    assert q["fscore"] == 0.0


def test_partial_prediction_keeps_precision_loses_recall():
    gt = grid_plane()
    keep = gt.vertices[gt.faces].mean(1)[:, 0] < 10.0  # left half
    pred = Mesh(gt.vertices, gt.faces[keep])
    q = mesh_quality(pred, gt, n_samples=40_000, threshold=0.2)
    assert q["precision"] > 0.999
    assert q["recall"] == pytest.approx(0.5, abs=0.02)
    assert q["fscore"] == pytest.approx(2 * 0.5 / 1.5, abs=0.02)


def test_bad_inputs_raise_clear_errors():
    good = grid_plane()
    bad = Mesh(good.vertices.copy(), good.faces)
    bad.vertices[5, 2] = np.nan
    with pytest.raises(ValueError, match="pred: 1 vertices have NaN"):
        mesh_quality(bad, good)
    with pytest.raises(ValueError, match="gt: mesh has no faces"):
        mesh_quality(good, Mesh(good.vertices, np.zeros((0, 3), int)))
    with pytest.raises(ValueError, match="threshold"):
        mesh_quality(good, good, threshold=0.0)
    with pytest.raises(ValueError, match="zero surface area"):
        mesh_quality(Mesh(np.zeros((3, 3)), np.array([[0, 1, 2]])), good)
