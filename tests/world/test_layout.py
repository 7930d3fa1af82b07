"""Layout building blocks: distance fields, network pruning, lot fitting, water levels."""

import numpy as np
import pytest

from earthcrafter.world import WorldConfig
from earthcrafter.world.grid import SiteGrid, points_in_polygon, polyline_distance
from earthcrafter.world.lots import inner_rect
from earthcrafter.world.paths import meander, resample
from earthcrafter.world.plan import C, SitePlan
from earthcrafter.world.roads import Road, largest_connected
from earthcrafter.world.terrain import distance_to_line, flood_below, settle_water


def _plan(size=200, biome="farmland"):
    return SitePlan.empty(WorldConfig(size_m=size, cell_m=2), 0, biome)


def test_distance_field_is_exact_near_the_line():
    plan = _plan(300)
    line = meander(np.random.default_rng(0), np.array([-50.0, 40.0]), np.array([350.0, 250.0]), 40, 180)
    d = distance_to_line(plan, line)
    x, y = plan.grid.vertex_xy()
    pts = np.column_stack([x.ravel(), y.ravel()])
    exact, _ = polyline_distance(pts, line)  # brute force over every segment
    near = exact < 30
    np.testing.assert_allclose(d.ravel()[near], exact[near], atol=1e-6)
    assert np.abs(d.ravel() - exact).max() < 1.5 * plan.grid.cell  # far away: within about a cell


def test_distance_field_for_a_line_outside_the_site():
    plan = _plan(100)
    line = np.array([[-300.0, -300.0], [-200.0, -250.0]])
    d = distance_to_line(plan, line, at="cell")
    x, y = plan.grid.cell_xy()
    ref, _ = polyline_distance(np.column_stack([x.ravel(), y.ravel()]), resample(line, 0.5))
    np.testing.assert_allclose(d.ravel(), ref, atol=1e-6)


def test_largest_connected_keeps_the_touching_group():
    cross_a = Road(resample(np.array([[0.0, 50.0], [100.0, 50.0]]), 1.0), 8.0, "street")
    cross_b = Road(resample(np.array([[50.0, 0.0], [50.0, 100.0]]), 1.0), 8.0, "street")
    tee = Road(resample(np.array([[80.0, 50.0], [80.0, 90.0]]), 1.0), 8.0, "street")  # ends on cross_a
    apart = Road(resample(np.array([[0.0, 120.0], [200.0, 120.0]]), 1.0), 8.0, "street")  # longest, alone
    disc = Road(np.array([[80.0, 96.0]]), 20.0, "street")  # turning circle reaching tee's end
    keep, drop = largest_connected([cross_a, cross_b, tee, apart, disc])
    assert {id(r) for r in keep} == {id(cross_a), id(cross_b), id(tee), id(disc)}
    assert [id(r) for r in drop] == [id(apart)]


def test_inner_rect_is_allowed_and_large():
    plan = _plan(100)
    poly = np.array([[10.0, 10.0], [70.0, 20.0], [60.0, 80.0], [5.0, 60.0]])

    def allowed(x, y):
        return points_in_polygon(np.column_stack([x, y]), poly)

    u = np.array([1.0, 0.0])
    lo, hi = inner_rect(plan, allowed, np.zeros(2), u, 100.0, 100.0)
    X, Y = np.meshgrid(np.linspace(lo[0], hi[0], 30), np.linspace(lo[1], hi[1], 30))
    assert allowed(X.ravel(), Y.ravel()).all()
    area = np.prod(hi - lo)
    assert area > 0.45 * 3100  # the quadrilateral's area is about 3100 m^2


def test_level_set_water_is_flat_and_shores_meet_it():
    plan = _plan(100, "lakes")
    x, y = plan.grid.vertex_xy()
    plan.H = np.hypot(x - 50, y - 50) * 0.2  # a cone-shaped bowl
    wet = flood_below(plan, 6.0)
    settle_water(plan)
    assert wet > 0
    water = plan.water
    assert (plan.ground[water] == C["river_lake"]).all()
    corners = plan.grid.cell_corner_mask(water)
    np.testing.assert_allclose(plan.H[corners], 6.0)  # flat surface, shared with the shore cells
    assert (plan.grid.cell_mean(plan.H)[~water] >= 6.0 - 1e-9).all()


def test_triangle_height_matches_face_planes():
    g = SiteGrid(4, 2.0)
    rng = np.random.default_rng(0)
    H = rng.uniform(0, 5, (5, 5))
    # Inside cell (1, 2): the lower-right triangle holds (x1, y0); the upper-left (x0, y1).
    x0, y0 = 4.0, 2.0
    assert g.height_at(H, np.array([x0 + 2.0]), np.array([y0]))[0] == pytest.approx(H[1, 3])
    assert g.height_at(H, np.array([x0]), np.array([y0 + 2.0]))[0] == pytest.approx(H[2, 2])
    mid = g.height_at(H, np.array([x0 + 1.0]), np.array([y0 + 1.0]))[0]
    assert mid == pytest.approx(0.5 * (H[1, 2] + H[2, 3]))  # on the shared diagonal
