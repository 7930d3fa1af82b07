"""Closed solids: primitives, footprints and buildings (volumes and roof areas against formulas)."""

import numpy as np
import pytest

from earthcrafter.semantics import CLASS_ID
from earthcrafter.world import WorldConfig
from earthcrafter.world.buildings import Style, add_prism_building, footprint, to_world
from earthcrafter.world.plan import SitePlan
from earthcrafter.world.shapes import (
    box, cone, cylinder, frustum, icosahedron, instance, is_closed, merge_close_vertices, polygon_area, prism,
    signed_volume, sweep, triangle_areas, triangulate_polygon,
)


def _closed(V, F):
    return is_closed(merge_close_vertices(V, F)[1])


def test_primitives_are_closed_with_exact_volumes():
    V, F = box((2.0, 3.0, 4.0))
    assert _closed(V, F) and signed_volume(V, F) == pytest.approx(24.0)
    V, F = frustum(2.0, 1.0, 6.0)  # square frustum: h/3 (A1 + A2 + sqrt(A1 A2))
    assert _closed(V, F) and signed_volume(V, F) == pytest.approx(6 / 3 * (16 + 4 + 8))
    V, F = cone(6, 2.0, 3.0)  # hexagonal pyramid: base area (3 sqrt 3 / 2) r^2
    assert _closed(V, F) and signed_volume(V, F) == pytest.approx(1 / 3 * 1.5 * np.sqrt(3) * 4 * 3)
    V, F, _ = cylinder(8, 1.0, 2.0)
    assert _closed(V, F) and signed_volume(V, F) == pytest.approx(0.5 * 8 * np.sin(np.pi / 4) * 2.0)
    V, F = icosahedron()
    assert _closed(V, F) and signed_volume(V, F) > 0


def test_sweep_is_closed_and_outward():
    path = np.array([[0, 0, 0], [10, 0, 0], [20, 5, 1], [30, 5, 1]], float)
    profile = np.array([[-2, -1], [2, -1], [2, 1], [1.6, 1], [1.6, 0], [-1.6, 0], [-1.6, 1], [-2, 1]], float)
    V, F = sweep(path, profile)
    assert _closed(V, F)
    assert signed_volume(V, F) > 0


@pytest.mark.parametrize("shape", ["rect", "L", "U"])
def test_footprint_triangulation_covers_polygon(shape):
    rng = np.random.default_rng(5)
    for _ in range(20):
        poly = footprint(shape, rng.uniform(10, 60), rng.uniform(10, 50), rng)
        poly = to_world(poly, rng.uniform(-100, 100, 2), np.array([np.cos(a := rng.uniform(0, 6)), np.sin(a)]))
        tris = triangulate_polygon(poly)
        assert len(tris) == len(poly) - 2
        p = poly[tris]
        signed = 0.5 * ((p[:, 1, 0] - p[:, 0, 0]) * (p[:, 2, 1] - p[:, 0, 1]) - (p[:, 1, 1] - p[:, 0, 1]) * (p[:, 2, 0] - p[:, 0, 0]))
        assert (signed > 0).all()
        assert signed.sum() == pytest.approx(polygon_area(poly))
        V, F, _ = prism(poly, 0.0, 7.0)
        assert _closed(V, F) and signed_volume(V, F) == pytest.approx(7.0 * polygon_area(poly))


def test_triangulation_rejects_clockwise():
    with pytest.raises(ValueError, match="counter-clockwise"):
        triangulate_polygon(np.array([[0, 0], [0, 1], [1, 1], [1, 0]], float))


def _building(roof, poly, eave=9.0, ridge=3.0):
    plan = SitePlan.empty(WorldConfig(size_m=64, cell_m=2), 0, "suburb")
    style = Style(np.array([200, 200, 200.0]), np.array([50, 60, 70.0]), np.array([120, 60, 50.0]))
    add_prism_building(plan, poly, -1.0, 0.0, eave, style, "test", roof, ridge)
    V, F, S, _, _ = plan.parts.merged()
    return V, F, S


@pytest.mark.parametrize("roof", ["flat", "gable", "hip"])
def test_buildings_are_closed_with_expected_volume_and_roof(roof):
    L, W, eave, ridge = 20.0, 8.0, 9.0, 3.0
    a = 0.4
    u = np.array([np.cos(a), np.sin(a)])
    poly = to_world(np.array([[0, 0], [L, 0], [L, W], [0, W]], float), np.array([10.0, 5.0]), u)
    V, F, S = _building(roof, poly, eave, ridge)
    assert _closed(V, F)
    walls = L * W * (eave + 1.0)
    extra = {"flat": 0.0, "gable": 0.5 * W * ridge * L, "hip": ridge * W * (L - W) / 2 + W * W * ridge / 3}[roof]
    assert signed_volume(V, F) == pytest.approx(walls + extra)
    roof_faces = S == CLASS_ID["building_roof"]
    n = np.cross(V[F[:, 1]] - V[F[:, 0]], V[F[:, 2]] - V[F[:, 0]])
    projected = 0.5 * n[roof_faces, 2].sum()  # signed projection onto the ground plane
    assert projected == pytest.approx(L * W)
    assert (n[roof_faces, 2] > 0).all()  # roofs face up
    assert set(np.unique(S)) <= {CLASS_ID["building_roof"], CLASS_ID["building_facade"]}


def test_l_and_u_buildings_closed_with_bands():
    rng = np.random.default_rng(6)
    for shape in ("L", "U"):
        poly = footprint(shape, 40, 30, rng)
        V, F, S = _building("flat", poly, eave=31.0)
        assert _closed(V, F)
        assert signed_volume(V, F) == pytest.approx(polygon_area(poly) * 32.0)
        # Storeys: the walls are cut into many horizontal bands.
        assert (S == CLASS_ID["building_facade"]).sum() > 10 * len(poly)


def test_instancing_matches_manual_transform():
    V, F = box((2.0, 1.0, 1.0))
    pos = np.array([[5.0, 1.0, 2.0], [-3.0, 4.0, 0.0]])
    yaw = np.array([0.3, -1.2])
    scale = np.array([[1.0, 2.0, 3.0], [0.5, 0.5, 0.5]])
    Vi, Fi = instance(V, F, pos, yaw, scale)
    for k in range(2):
        c, s = np.cos(yaw[k]), np.sin(yaw[k])
        R = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
        want = (V * scale[k]) @ R.T + pos[k]
        np.testing.assert_allclose(Vi[k * 8 : (k + 1) * 8], want)
    assert triangle_areas(Vi, Fi).sum() == pytest.approx(triangle_areas(V * scale[0], F).sum() + triangle_areas(V * 0.5, F).sum())
