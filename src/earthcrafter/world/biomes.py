"""Biome recipes: each fills a SitePlan from relief to the last bush.

A recipe calls the shared steps in a fixed order: relief, water, land cover, networks,
lots and buildings, objects, vegetation. Each step draws from its own named random
stream, so sites are reproducible piece by piece.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

from earthcrafter.world import landcover as lc
from earthcrafter.world import terrain as tr
from earthcrafter.world import urban
from earthcrafter.world.buildings import Style, add_prism_building
from earthcrafter.world.lots import Lot, free_allowed, merge_block, occupy, rect_fits, subdivide
from earthcrafter.world.objects import add_dock, add_pool, add_power_line, add_tanks, add_water_tower, add_wind_turbine, traffic
from earthcrafter.world.paths import edge_to_edge, meander, resample, tangents
from earthcrafter.world.plan import C, SitePlan
from earthcrafter.world.roads import Road, build_network, crossing_road, lattice_network
from earthcrafter.world.vegetation import add_bushes, add_trees, jittered_points, scatter_forest


# --------------------------------------------------------------------------- shared steps

def _river(plan: SitePlan, rng, width: tuple[float, float], valley: float = 0.0, bank: float = 0.12) -> np.ndarray:
    a, b = edge_to_edge(rng, plan.grid.size, margin=60)
    w = rng.uniform(*width)
    line = meander(rng, a, b, amplitude=rng.uniform(2, 5) * w, wavelength=rng.uniform(10, 16) * w)
    tr.carve_river(plan, line, w, valley_slope=valley, bank_slope=bank)
    return line


def _bushes(plan: SitePlan, density: float, cls: str = "shrub", size=(0.8, 2.2)) -> None:
    rng = plan.rng("bushes")
    prob = ((plan.ground == C[cls]) & ~plan.occupied).astype(np.float32) * density * plan.config.tree_density
    add_bushes(plan, rng, jittered_points(plan, rng, 7.0, np.clip(prob, 0, 1)), size=size)


def _roadside_houses(plan: SitePlan, rng, count: int, pools: float = 0.0) -> int:
    """Houses on virtual lots beside the plan's roads (rural settlements)."""
    roads = [r for r in plan.roads if r.kind in ("rural", "street", "track") and len(r.line) > 10]
    placed = 0
    for _ in range(count * 4):
        if placed >= count or not roads:
            break
        r = roads[rng.integers(len(roads))]
        k = int(rng.integers(5, len(r.line) - 5))
        t = tangents(r.line)[k]
        side = 1 if rng.random() < 0.5 else -1
        u = t * side
        v = np.array([-u[1], u[0]])
        origin = r.line[k] + (r.half + 3.0) * v - 15.0 * u
        lot = Lot(-1, -1, np.zeros(0, int), np.zeros(0, int), origin + 15 * u + 15 * v, u, origin, 30.0, 30.0, r.kind, r.half + 3)
        allowed = free_allowed(plan)
        if not rect_fits(plan, allowed, origin, u, np.array([0.0, 0.0]), np.array([30.0, 30.0])):
            continue
        w, d = rng.uniform(9, 15), rng.uniform(8, 12)
        x0, y0 = rng.uniform(3, 27 - w), rng.uniform(5, 10)
        style = Style.draw(rng, pitched=True, windows=False)
        local = np.array([[x0, y0], [x0 + w, y0], [x0 + w, y0 + d], [x0, y0 + d]])
        poly = lot.world(local)
        zmin, zmax = plan.footprint_z(poly)
        top = zmax + (1 if rng.random() < 0.6 else 2) * style.floor_h * plan.config.height_scale
        add_prism_building(plan, poly, zmin - 0.8, zmax, top, style, "house", "gable" if rng.random() < 0.6 else "hip", 0.35 * min(w, d))
        occupy(plan, poly)
        yard = plan.grid.rasterize_polygon(lot.world(np.array([[0, 0], [30, 0], [30, 30], [0, 30]])))
        yard &= plan.land() & ~plan.occupied & ~np.isin(plan.ground, [C["road"], C["railway"], C["sidewalk_path"]])
        plan.paint(yard, "grass_lawn", tone=urban.LAWN * rng.uniform(0.9, 1.1))
        plan.forest[yard] = 0.0
        drive = plan.grid.rasterize_polygon(lot.world(np.array([[x0 + w + 0.5, -3], [x0 + w + 4, -3], [x0 + w + 4, y0 + 2], [x0 + w + 0.5, y0 + 2]])))
        plan.paint(drive & plan.land() & ~plan.occupied & (plan.ground != C["road"]), "parking_paved")
        if pools and rng.random() < pools:
            pp = lot.world(np.array([[x0, y0 + d + 3]]))[0]
            if rect_fits(plan, allowed, pp, u, np.array([-1.0, -1.0]), np.array([10.0, 6.0])):
                add_pool(plan, rng, pp, u, 9.0, 5.0)
                occupy(plan, lot.world(np.array([[x0 - 1, y0 + d + 2], [x0 + 10, y0 + d + 2], [x0 + 10, y0 + d + 9], [x0 - 1, y0 + d + 9]])))
        add_trees(plan, rng, lot.world(np.column_stack([rng.uniform(1, 29, 3), rng.uniform(1, 29, 3)])), conifer=0.3, height=(6, 15))
        placed += 1
    plan.counts["rural_houses"] += placed
    return placed


def _farmstead(plan: SitePlan, rng) -> bool:
    """House, barns and silos around a gravel yard beside a road."""
    roads = [r for r in plan.roads if r.kind in ("rural", "track") and len(r.line) > 40]
    for _ in range(12):
        if not roads:
            return False
        r = roads[rng.integers(len(roads))]
        k = int(rng.integers(20, len(r.line) - 20))
        u = tangents(r.line)[k] * (1 if rng.random() < 0.5 else -1)
        v = np.array([-u[1], u[0]])
        W, D = rng.uniform(60, 90), rng.uniform(50, 70)
        origin = r.line[k] + (r.half + 2) * v - 0.5 * W * u
        if not rect_fits(plan, lambda x, y: plan.grid.lookup(plan.land() & ~plan.occupied, x, y) & plan.grid.inside(x, y, 2),
                         origin, u, np.array([0.0, 0.0]), np.array([W, D])):
            continue
        lot = Lot(-1, -1, np.zeros(0, int), np.zeros(0, int), origin, u, origin, W, D, r.kind, r.half + 2)
        yard = plan.grid.rasterize_polygon(lot.world(np.array([[0, 0], [W, 0], [W, D], [0, D]])))
        plan.paint(yard & plan.land(), "bare_soil", tone=np.array([150, 135, 110.0]))
        plan.forest[yard] = 0.0
        # House near the road, a barn beside it, a shed behind; silos at the far side (x > W - 11).
        specs = [("house", 0.05 * W, 6, 12, 10, "gable", 2),
                 ("barn", 0.35 * W, 8, min(rng.uniform(20, 28), 0.65 * W - 12), rng.uniform(12, 16), "gable", 2),
                 ("shed", 0.1 * W, 30, rng.uniform(15, 25), 10, "flat", 1)]
        for kind, x0, y0, w, d, roof, floors in specs:
            if x0 + w > W - 2 or y0 + d > D - 2:
                continue
            poly = lot.world(np.array([[x0, y0], [x0 + w, y0], [x0 + w, y0 + d], [x0, y0 + d]]))
            zmin, zmax = plan.footprint_z(poly)
            pitched = roof != "flat"
            style = Style.draw(rng, pitched=pitched, windows=False)
            if kind == "barn":
                style = Style(np.array([150, 45, 40.0]) * rng.uniform(0.85, 1.1), style.glass, np.array([95, 95, 98.0]), 3.5, 0.0)
            add_prism_building(plan, poly, zmin - 0.8, zmax, zmax + floors * style.floor_h, style, kind, roof, 0.35 * min(w, d))
            occupy(plan, poly)
        silos = lot.world(np.array([[W - 6, 10], [W - 6, 20]]))
        add_tanks(plan, rng, silos, np.full(2, rng.uniform(3, 4.5)), rng.uniform(12, 20, 2), cls="other_manmade")
        for s in silos:
            occupy(plan, s + 5 * np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]))
        add_trees(plan, rng, lot.world(np.column_stack([rng.uniform(0, W, 8), rng.uniform(D - 8, D, 8)])), conifer=0.3, height=(8, 16))
        plan.counts["farmsteads"] += 1
        return True
    return False


def _rail(plan: SitePlan, rng, width: float = 8.0) -> Road:
    return crossing_road(plan, rng, "rail", width, amplitude=rng.uniform(0, 30), wavelength=1500)


# --------------------------------------------------------------------------- natural biomes

def farmland(plan: SitePlan) -> None:
    rng = plan.rng("layout")
    tr.shape_relief(plan)
    if rng.random() < 0.3:
        _river(plan, plan.rng("river"), (6, 14), bank=0.2)
    if rng.random() < 0.45:
        tr.dig_pond(plan, rng.uniform(0.2, 0.8, 2) * plan.grid.size, rng.uniform(12, 30))
    tr.settle_water(plan)
    angle = rng.uniform(0, np.pi)
    lc.natural_cover(plan, shrub=0.05, forest=0.05, forest_density=0.5, riparian=0.5)
    lc.fields(plan, rng, angle, (110, 260))
    plan.mark("terrain")
    roads = [crossing_road(plan, rng, "rural", rng.uniform(6, 8), amplitude=0, direction=angle)]
    if rng.random() < 0.6:
        roads.append(crossing_road(plan, rng, "rural", rng.uniform(6, 7), amplitude=0, direction=angle + np.pi / 2))
    if rng.random() < 0.5:
        roads.append(crossing_road(plan, rng, "track", 4.0, amplitude=rng.uniform(0, 20), direction=angle + np.pi / 2))
    if rng.random() < 0.2:
        roads.append(_rail(plan, rng, 6.0))
    build_network(plan, roads, connected=False)
    _farmstead(plan, plan.rng("farmstead"))
    # Windbreaks: tree rows along a few road sides and field edges.
    wb = plan.rng("windbreak")
    for r in [r for r in plan.roads if r.kind == "rural"][:2]:
        if wb.random() < 0.6:
            t = tangents(r.line)
            side = r.half + 6
            pts = r.line[::8] + side * np.column_stack([-t[::8, 1], t[::8, 0]])
            add_trees(plan, wb, pts, conifer=0.4, height=(9, 18))
    if rng.random() < 0.5:
        add_power_line(plan, plan.rng("power"))
    if rng.random() < 0.25:
        tb = plan.rng("turbines")
        for p in jittered_points(plan, tb, 220.0, (plan.ground == C["cropland"]).astype(np.float32) * 0.8)[:4]:
            add_wind_turbine(plan, tb, p)
    traffic(plan, plan.rng("traffic"), per_km=6)
    scatter_forest(plan, spacing=6.0, conifer=0.3)
    _bushes(plan, 0.3)


def hills(plan: SitePlan) -> None:
    rng = plan.rng("layout")
    tr.shape_relief(plan)
    if rng.random() < 0.35:
        _river(plan, plan.rng("river"), (5, 10), bank=0.35)
    if rng.random() < 0.2:
        tr.dig_pond(plan, rng.uniform(0.2, 0.8, 2) * plan.grid.size, rng.uniform(10, 25))
    tr.settle_water(plan)
    lc.natural_cover(plan, shrub=rng.uniform(0.15, 0.3), forest=rng.uniform(0.2, 0.4), forest_density=0.7,
                     soil_slope=26, rock_slope=36, riparian=0.5)
    plan.mark("terrain")
    roads = [crossing_road(plan, rng, "rural", rng.uniform(5, 7), amplitude=rng.uniform(40, 90), wavelength=rng.uniform(250, 450))]
    if rng.random() < 0.4:
        roads.append(crossing_road(plan, rng, "track", 4.0, amplitude=rng.uniform(30, 80)))
    build_network(plan, roads, connected=False)
    _roadside_houses(plan, plan.rng("houses"), int(rng.integers(0, 5)))
    if rng.random() < 0.4:
        add_power_line(plan, plan.rng("power"))
    if rng.random() < 0.15:
        tb = plan.rng("turbines")
        for p in jittered_points(plan, tb, 200.0, (plan.ground == C["grass_lawn"]).astype(np.float32))[:3]:
            add_wind_turbine(plan, tb, p)
    traffic(plan, plan.rng("traffic"), per_km=5)
    scatter_forest(plan, spacing=5.5, conifer=0.35)
    _bushes(plan, 0.35)


def mountains(plan: SitePlan) -> None:
    rng = plan.rng("layout")
    tr.shape_relief(plan)
    if rng.random() < 0.3:  # an alpine tarn in the lowest quarter
        h = plan.grid.cell_mean(plan.H)
        i, j = np.unravel_index(np.argmin(h + 5 * rng.random(h.shape)), h.shape)
        xc, yc = plan.grid.cell_xy()
        tr.dig_pond(plan, np.array([xc[i, j], yc[i, j]]), rng.uniform(15, 35), depth=4.0)
    tr.settle_water(plan)
    q = lc.relative_height(plan)
    slope = plan.grid.slope_deg(plan.H)
    x, y = plan.grid.cell_xy()
    wob = 0.06 * plan.noise("snowline").fbm(x, y, 120, 3)
    snow_q = rng.uniform(0.62, 0.8)
    tree_q = snow_q - rng.uniform(0.22, 0.35)
    land = plan.land()
    lc.natural_cover(plan, shrub=0.3, forest=0.0, soil_slope=30, rock_slope=36)
    below = land & (q + wob < tree_q) & (slope < 35)
    plan.forest[below] = 0.65 * tr.smoothstep(0.0, 0.1, tree_q - q[below])
    alpine = land & (q + wob >= tree_q) & (slope < 30)
    plan.paint(alpine & (plan.noise("alpine").fbm(x, y, 60, 3) > 0.1), "bare_soil")
    plan.paint(land & (q + wob > snow_q - 0.08) & (slope > 28), "rock_cliff")
    plan.paint(land & (q + wob > snow_q) & (slope < 48), "snow_ice", tone=np.array([238, 241, 248.0]))
    plan.forest[(plan.ground == C["rock_cliff"]) | (plan.ground == C["snow_ice"])] = 0.0
    plan.mark("terrain")
    if rng.random() < 0.5:
        build_network(plan, [crossing_road(plan, rng, "path", 2.0, amplitude=rng.uniform(30, 80))], connected=False)
    scatter_forest(plan, spacing=5.0, conifer=0.95, height=(10, 28))
    _bushes(plan, 0.25, size=(0.6, 1.4))


def desert(plan: SitePlan) -> None:
    rng = plan.rng("layout")
    tr.shape_relief(plan)
    tr.settle_water(plan)
    x, y = plan.grid.cell_xy()
    slope = plan.grid.slope_deg(plan.H)
    land = plan.land()
    plan.paint(land, "sand_desert")
    nz = plan.noise("desert")
    playa = nz.fbm(x, y, 200, 4) > rng.uniform(0.25, 0.45)
    plan.paint(land & playa & (slope < 6), "bare_soil", tone=np.array([196, 178, 150.0]))
    q = lc.relative_height(plan)
    mesa_top = land & (q > 0.8) & (slope < 12) & (nz.fbm(x, y, 90, 3, offset=2) > -0.1)
    plan.paint(mesa_top & (plan.H.max() - plan.H.min() > 25), "bare_soil")
    plan.paint(land & (slope > 30), "rock_cliff", tone=np.array([165, 115, 85.0]))
    scrub = land & (nz.fbm(x, y, 70, 3, offset=5) > 0.15) & (slope < 20)
    plan.paint(scrub & (plan.ground == C["sand_desert"]), "shrub", tone=np.array([170, 155, 115.0]))
    plan.mark("terrain")
    roads = []
    if rng.random() < 0.6:
        roads.append(crossing_road(plan, rng, "rural", rng.uniform(7, 10), amplitude=rng.uniform(0, 25), wavelength=900))
    if rng.random() < 0.5:
        roads.append(crossing_road(plan, rng, "track", 4.0, amplitude=rng.uniform(20, 60)))
    if rng.random() < 0.15:
        roads.append(_rail(plan, rng, 6.0))
    build_network(plan, roads, connected=False)
    if rng.random() < 0.4:
        add_power_line(plan, plan.rng("power"))
    traffic(plan, plan.rng("traffic"), per_km=3)
    _bushes(plan, 0.5, size=(0.6, 1.5))


def lakes(plan: SitePlan) -> None:
    rng = plan.rng("layout")
    tr.shape_relief(plan)
    h = plan.grid.cell_mean(plan.H)
    level = float(np.quantile(h, rng.uniform(0.25, 0.45)))
    tr.flood_below(plan, level)
    tr.settle_water(plan)
    lc.natural_cover(plan, shrub=0.15, forest=rng.uniform(0.25, 0.45), forest_density=0.65, riparian=0.35)
    lc.wetland_margins(plan, height_above=0.35, width=20)
    lc.beaches(plan, width=10, max_rise=1.5, share=0.5)
    plan.mark("terrain")
    roads = []
    if rng.random() < 0.7:
        roads.append(crossing_road(plan, rng, "rural", rng.uniform(6, 8), amplitude=rng.uniform(30, 70)))
    build_network(plan, roads, connected=False)
    n = _roadside_houses(plan, plan.rng("houses"), int(rng.integers(1, 6)), pools=0.2)
    _docks(plan, plan.rng("docks"), max(1, n))
    traffic(plan, plan.rng("traffic"), per_km=5)
    scatter_forest(plan, spacing=5.5, conifer=0.4)
    _bushes(plan, 0.3)


def _docks(plan: SitePlan, rng, count: int) -> None:
    """Jetties from shore cells straight out over the water."""
    water = plan.water
    shore = plan.land() & ndimage.binary_dilation(water) & ~plan.occupied
    cells = np.flatnonzero(shore.ravel())
    if not len(cells):
        return
    xc, yc = plan.grid.cell_xy()
    dist = ndimage.distance_transform_edt(~water)
    gy, gx = np.gradient(-dist)
    for c in rng.choice(cells, size=min(count, len(cells)), replace=False):
        i, j = np.unravel_index(c, water.shape)
        d = np.array([gx[i, j], gy[i, j]])
        if np.linalg.norm(d) < 1e-6:
            continue
        add_dock(plan, rng, np.array([xc[i, j], yc[i, j]]), d, float(np.nanmin(plan.water_level)))


def river(plan: SitePlan) -> None:
    rng = plan.rng("layout")
    tr.shape_relief(plan)
    line = _river(plan, plan.rng("river"), (18, 55), valley=rng.uniform(0.03, 0.08), bank=0.15)
    tr.settle_water(plan)
    lc.natural_cover(plan, shrub=0.1, forest=0.15, forest_density=0.6, riparian=0.55)
    if rng.random() < 0.6:
        land = plan.land()
        far = land & (tr.water_distance(plan) > 40)
        crop_rng = plan.rng("fields")
        saved = plan.ground.copy(), plan.tone.copy(), plan.stripe.copy()
        lc.fields(plan, crop_rng, rng.uniform(0, np.pi), (90, 200))
        keep = ~far  # fields only on the floodplain away from the banks
        plan.ground[keep], plan.tone[keep], plan.stripe[keep] = saved[0][keep], saved[1][keep], saved[2][keep]
        plan.forest[far] *= 0.1
    lc.wetland_margins(plan, height_above=0.3, width=12)
    # A road crossing the river (always bridged) and sometimes one along it.
    t = tangents(line)[len(line) // 2]
    across = np.arctan2(t[1], t[0]) + np.pi / 2 + rng.uniform(-0.3, 0.3)
    plan.mark("terrain")
    roads = [crossing_road(plan, rng, "rural", rng.uniform(7, 10), amplitude=rng.uniform(0, 20), direction=across)]
    if rng.random() < 0.4:
        roads.append(_rail(plan, rng, 6.0))
    build_network(plan, roads, connected=False)
    _roadside_houses(plan, plan.rng("houses"), int(rng.integers(0, 4)))
    traffic(plan, plan.rng("traffic"), per_km=8)
    scatter_forest(plan, spacing=5.5, conifer=0.25)
    _bushes(plan, 0.3)


def coast(plan: SitePlan) -> None:
    rng = plan.rng("layout")
    tr.shape_relief(plan)
    tr.add_sea(plan, 0.0)
    tr.settle_water(plan)
    lc.natural_cover(plan, shrub=0.25, forest=rng.uniform(0.05, 0.25), forest_density=0.55, rock_slope=34)
    lc.beaches(plan, width=rng.uniform(25, 60), max_rise=3.0)
    theta = np.radians(plan.counts.pop("coast_normal_deg", 0))
    along = theta + np.pi / 2
    plan.mark("terrain")
    roads = [crossing_road(plan, rng, "rural", rng.uniform(7, 9), amplitude=rng.uniform(10, 40), direction=along)]
    # Keep the coast road inland: shift it along the inland normal until it runs on land.
    r = roads[0]
    nrm = np.array([np.cos(theta), np.sin(theta)])
    for _ in range(12):
        i, j = plan.grid.cell_of(r.line[:, 0], r.line[:, 1])
        inside = plan.grid.inside(r.line[:, 0], r.line[:, 1])
        if not (plan.water[i, j] & inside).any():
            break
        r.line = r.line + 25.0 * nrm
    build_network(plan, roads, connected=False)
    _roadside_houses(plan, plan.rng("houses"), int(rng.integers(2, 8)), pools=0.35)
    if rng.random() < 0.5:
        _docks(plan, plan.rng("docks"), 1)
    traffic(plan, plan.rng("traffic"), per_km=8)
    scatter_forest(plan, spacing=6.0, conifer=0.5)
    _bushes(plan, 0.4)


def wetland(plan: SitePlan) -> None:
    rng = plan.rng("layout")
    tr.shape_relief(plan)
    h = plan.grid.cell_mean(plan.H)
    level = float(np.quantile(h, rng.uniform(0.25, 0.4)))
    tr.flood_below(plan, level)
    tr.settle_water(plan)
    lc.natural_cover(plan, shrub=0.25, forest=0.15, forest_density=0.4)
    lc.wetland_margins(plan, height_above=0.6, width=60)
    x, y = plan.grid.cell_xy()
    marsh = plan.land() & (plan.noise("marsh").fbm(x, y, 80, 3) > 0.2)
    plan.paint(marsh & (plan.ground != C["rock_cliff"]), "wetland")
    plan.forest[plan.ground == C["wetland"]] *= 0.3
    plan.mark("terrain")
    roads = [crossing_road(plan, rng, "path", 2.5, amplitude=rng.uniform(20, 60))]  # boardwalk trail
    if rng.random() < 0.4:
        roads.append(crossing_road(plan, rng, "rural", 6.5, amplitude=rng.uniform(0, 30)))
    build_network(plan, roads, connected=False)
    traffic(plan, plan.rng("traffic"), per_km=4)
    scatter_forest(plan, spacing=7.0, conifer=0.2, height=(5, 14))
    _bushes(plan, 0.45)


def forest(plan: SitePlan) -> None:
    rng = plan.rng("layout")
    tr.shape_relief(plan)
    if rng.random() < 0.4:
        _river(plan, plan.rng("river"), (5, 12), bank=0.3)
    tr.settle_water(plan)
    lc.natural_cover(plan, shrub=0.1, forest=rng.uniform(0.7, 0.85), forest_density=0.85, soil_slope=30, rock_slope=40)
    plan.mark("terrain")
    roads = [crossing_road(plan, rng, "track", rng.uniform(4, 6), amplitude=rng.uniform(30, 80))]
    build_network(plan, roads, connected=False)
    if rng.random() < 0.3:
        add_power_line(plan, plan.rng("power"))
    traffic(plan, plan.rng("traffic"), per_km=2, kinds=("track",))
    scatter_forest(plan, spacing=5.0, conifer=rng.uniform(0.2, 0.8), height=(10, 26))
    _bushes(plan, 0.3)


# --------------------------------------------------------------------------- built biomes

def _urban_base(plan: SitePlan, river_p: float, river_w: tuple[float, float]) -> None:
    rng = plan.rng("urban-base")
    tr.shape_relief(plan)
    if rng.random() < river_p:
        _river(plan, plan.rng("river"), river_w, bank=0.1)
    tr.settle_water(plan)
    lc.natural_cover(plan, shrub=0.05, forest=0.05, forest_density=0.4, riparian=0.3)


def suburb(plan: SitePlan) -> None:
    _urban_base(plan, 0.25, (12, 30))
    plan.mark("terrain")
    rng = plan.rng("layout")
    angle = rng.uniform(0, np.pi)
    roads = lattice_network(plan, rng, spacing=(rng.uniform(150, 220), rng.uniform(75, 100)), angle=angle, jitter=6.0,
                            bend=rng.uniform(10, 30), drop=0.15, arterial_every=3, street=(8.0, 1.6), arterial=(14.0, 2.5))
    if rng.random() < 0.15:
        roads.append(_rail(plan, rng, 6.0))
    ras = build_network(plan, roads, connected=True)
    lots, lot_raster = subdivide(plan, ras, plan.rng("lots"), frontage=(18, 27), depth=36)
    use = plan.rng("zoning")
    lots, civic = _pick_civic(plan, ras, lots, lot_raster, use, min_m2=4000)
    n = plan.grid.n
    for lot in lots:
        mask = lot.mask(n) & ~plan.occupied
        if lot is civic:
            if use.random() < 0.5:
                urban.school(plan, use, lot, lot_raster, mask)
            else:
                urban.park(plan, use, lot, lot_raster, mask)
        elif lot.road_kind == "arterial" and use.random() < 0.35:
            urban.midrise_lot(plan, use, lot, lot_raster, mask, floors=int(use.integers(1, 3)), setback=use.uniform(8, 20))
            strip = mask & ~plan.occupied & (plan.ground == C["sidewalk_path"])
            if strip.any():
                urban.parking_lot(plan, use, lot, strip)
        elif use.random() < 0.92 * min(plan.config.building_density, 1.0 / 0.92):
            urban.house_lot(plan, use, lot, lot_raster, mask)
        else:
            plan.paint(mask, "grass_lawn", tone=urban.LAWN)
            plan.forest[mask] = 0.35
    if use.random() < 0.3:
        free = plan.land() & ~plan.occupied & (plan.ground == C["grass_lawn"])
        cells = np.flatnonzero(free.ravel())
        if len(cells):
            xc, yc = plan.grid.cell_xy()
            c = use.choice(cells)
            add_water_tower(plan, use, np.array([xc.ravel()[c], yc.ravel()[c]]))
    _street_trees(plan, plan.rng("street-trees"), spacing=14.0, prob=0.6)
    traffic(plan, plan.rng("traffic"), per_km=25)
    scatter_forest(plan, spacing=6.0, conifer=0.2)
    _bushes(plan, 0.2)


def _pick_civic(plan: SitePlan, ras, lots: list[Lot], lot_raster: np.ndarray, rng, min_m2: float) -> tuple[list[Lot], Lot | None]:
    """Merge one of the three largest blocks (at least ``min_m2``) into a single lot for a
    park or a school; returns the new lot list and that lot (None when no block is big enough)."""
    area: dict[int, float] = {}
    for l in lots:
        area[l.block] = area.get(l.block, 0.0) + l.area * plan.grid.cell**2
    big = sorted((b for b, a in area.items() if a >= min_m2), key=lambda b: -area[b])[:3]
    if not big or rng.random() > 0.9:
        return lots, None
    return merge_block(plan, ras, lots, lot_raster, big[int(rng.integers(len(big)))])


def _street_trees(plan: SitePlan, rng, spacing: float, prob: float) -> None:
    pts = []
    for r in plan.roads:
        if r.sidewalk <= 0 or len(r.line) < 2:
            continue
        line = resample(r.line, spacing)
        t = tangents(line)
        nrm = np.column_stack([-t[:, 1], t[:, 0]])
        for side in (-1, 1):
            p = line + side * (r.half + 0.5 * r.sidewalk + 0.2) * nrm
            pts.append(p[rng.random(len(p)) < prob])
    if not pts:
        return
    p = np.concatenate(pts)
    ok = plan.grid.lookup(plan.ground == C["sidewalk_path"], p[:, 0], p[:, 1]) & plan.grid.inside(p[:, 0], p[:, 1], 3)
    plan.counts["street_trees"] += add_trees(plan, rng, p[ok], conifer=0.05, height=(6, 12), avoid=_buildings_mask(plan))


def _buildings_mask(plan: SitePlan) -> np.ndarray:
    """Occupied cells except roads and rails (street trees may overhang roads, not buildings)."""
    return plan.occupied & ~np.isin(plan.ground, [C["road"], C["railway"]])


def downtown(plan: SitePlan) -> None:
    _urban_base(plan, 0.2, (25, 60))
    plan.mark("terrain")
    rng = plan.rng("layout")
    angle = rng.uniform(0, np.pi)
    roads = lattice_network(plan, rng, spacing=(rng.uniform(75, 115), rng.uniform(60, 90)), angle=angle, jitter=1.5,
                            bend=0.0, drop=0.04, arterial_every=3, street=(12.0, 3.5), arterial=(20.0, 4.5))
    if rng.random() < 0.4:
        roads.append(crossing_road(plan, rng, "arterial", 18.0, 4.0, amplitude=0.0, direction=angle + rng.choice([-1, 1]) * rng.uniform(0.5, 1.0)))
    if rng.random() < 0.1:
        roads.append(_rail(plan, rng, 8.0))
    ras = build_network(plan, roads, connected=True)
    lots, lot_raster = subdivide(plan, ras, plan.rng("lots"), frontage=(22, 45), depth=38)
    use = plan.rng("zoning")
    cbd = plan.grid.size * (0.5 + rng.uniform(-0.2, 0.2, 2))
    n = plan.grid.n
    lots, park_lot = _pick_civic(plan, ras, lots, lot_raster, use, 3000) if use.random() < 0.4 else (lots, None)
    for lot in lots:
        mask = lot.mask(n) & ~plan.occupied
        if lot is park_lot:
            urban.park(plan, use, lot, lot_raster, mask, field=use.random() < 0.5)
            continue
        r = np.linalg.norm(lot.centroid - cbd) / plan.grid.size
        p = use.random()
        if p < 0.07:
            urban.parking_lot(plan, use, lot, mask)
        elif p < 0.11:
            urban.plaza(plan, use, lot, mask)
        elif p < 0.16:
            urban.construction_lot(plan, use, lot, mask)
        elif use.random() < min(plan.config.building_density, 1.0):
            tower = use.random() < np.clip(0.75 - 1.6 * r, 0.05, 0.7)
            floors = int(np.clip(use.lognormal(np.log(28), 0.4), 14, 80)) if tower else int(use.integers(3, 12))
            urban.midrise_lot(plan, use, lot, lot_raster, mask, floors=floors, setback=use.uniform(0.0, 1.5), infill=2)
        else:
            urban.parking_lot(plan, use, lot, mask)
    _street_trees(plan, plan.rng("street-trees"), spacing=10.0, prob=0.5)
    traffic(plan, plan.rng("traffic"), per_km=45)
    scatter_forest(plan, spacing=6.0, conifer=0.1)


def industrial(plan: SitePlan) -> None:
    _urban_base(plan, 0.2, (15, 40))
    plan.mark("terrain")
    rng = plan.rng("layout")
    angle = rng.uniform(0, np.pi)
    roads = lattice_network(plan, rng, spacing=(rng.uniform(150, 240), rng.uniform(110, 170)), angle=angle, jitter=3.0,
                            bend=rng.uniform(0, 10), drop=0.1, arterial_every=2, street=(10.0, 0.0), arterial=(14.0, 0.0))
    rail_dir = angle + rng.uniform(-0.3, 0.3)
    roads.append(crossing_road(plan, rng, "rail", 9.0, amplitude=rng.uniform(0, 20), wavelength=1500, direction=rail_dir))
    ras = build_network(plan, roads, connected=True)
    lots, lot_raster = subdivide(plan, ras, plan.rng("lots"), frontage=(50, 110), depth=80, min_lot_m2=600)
    use = plan.rng("zoning")
    n = plan.grid.n
    for lot in lots:
        mask = lot.mask(n) & ~plan.occupied
        p = use.random()
        if p < 0.52 * min(plan.config.building_density, 1.0 / 0.52):
            urban.warehouse_lot(plan, use, lot, lot_raster, mask)
        elif p < 0.64:
            urban.tank_farm(plan, use, lot, lot_raster, mask)
        elif p < 0.76:
            urban.container_yard(plan, use, lot, mask)
        elif p < 0.86:
            urban.parking_lot(plan, use, lot, mask)
        elif p < 0.93:
            urban.construction_lot(plan, use, lot, mask)
        else:
            plan.paint(mask, "bare_soil", tone=np.array([150, 135, 110.0]))
    if rng.random() < 0.7:
        add_power_line(plan, plan.rng("power"))
    traffic(plan, plan.rng("traffic"), per_km=20)
    scatter_forest(plan, spacing=7.0, conifer=0.2)
    _bushes(plan, 0.2)


RECIPES: dict[str, Callable[[SitePlan], None]] = {
    "farmland": farmland,
    "hills": hills,
    "mountains": mountains,
    "desert": desert,
    "lakes": lakes,
    "river": river,
    "coast": coast,
    "wetland": wetland,
    "forest": forest,
    "suburb": suburb,
    "downtown": downtown,
    "industrial": industrial,
}
