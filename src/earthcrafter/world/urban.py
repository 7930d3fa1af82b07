"""Filling lots: houses with yards, mid-rises and towers, warehouses, parking lots, parks,
sports fields, schools, tank farms, container yards and construction sites."""

from __future__ import annotations

import numpy as np

from earthcrafter.world.buildings import Style, add_prism_building, add_rooftop_units, footprint
from earthcrafter.world.lots import Lot, inner_rect, lot_allowed, occupy, paint_rect, rect_fits
from earthcrafter.world.objects import add_containers, add_crane, add_pool, add_tanks, add_vehicles, parking_rows
from earthcrafter.world.plan import C, SitePlan
from earthcrafter.world.shapes import box, instance
from earthcrafter.world.vegetation import add_bushes, add_trees, jittered_points

LAWN = np.array([92, 128, 62.0])
PAVED = np.array([112, 112, 114.0])


def _fit(plan: SitePlan, allowed, lot: Lot, rng, w: float, d: float, front: float, side: float, rear: float,
         margin: float = 0.0, min_side: float = 6.0) -> tuple[float, float, float, float] | None:
    """Place a ``w x d`` rectangle (shrunk to fit) inside the lot's largest allowed rectangle,
    after setbacks; returns local (x0, y0, w, d) or None."""
    box_ = inner_rect(plan, allowed, lot.origin, lot.u, lot.width, lot.depth)
    if box_ is None:
        return None
    (ax, ay), (bx, by) = box_
    ax, bx = ax + side + margin, bx - side - margin
    ay, by = ay + front + margin, by - rear - margin
    w, d = min(w, bx - ax), min(d, by - ay)
    if w < min_side or d < min_side:
        return None
    x0 = ax + rng.uniform(0, bx - ax - w)
    return x0, ay, w, d


def _building(plan: SitePlan, lot: Lot, local: np.ndarray, floors: int, style: Style, kind: str,
              roof: str = "flat", ridge: float = 0.0, extra_top: float = 0.0) -> tuple[np.ndarray, float]:
    poly = lot.world(local)
    zmin, zmax = plan.footprint_z(poly)
    top = zmax + floors * style.floor_h * plan.config.height_scale + extra_top
    add_prism_building(plan, poly, zmin - 0.8, zmax, top, style, kind, roof, ridge)
    occupy(plan, poly, dilate_m=plan.grid.cell)  # partly covered border cells count too
    return poly, top


# --------------------------------------------------------------------------- residential

def house_lot(plan: SitePlan, rng: np.random.Generator, lot: Lot, lot_raster: np.ndarray, mask: np.ndarray) -> bool:
    """A detached house with lawn, driveway and car, yard trees and sometimes a pool."""
    plan.paint(mask, "grass_lawn", tone=LAWN * rng.uniform(0.93, 1.07) * rng.uniform(0.97, 1.03, 3))
    allowed = lot_allowed(plan, lot_raster, lot)
    fit = _fit(plan, allowed, lot, rng, rng.uniform(9, 16), rng.uniform(8, 13), front=rng.uniform(3, 7), side=rng.uniform(1, 2.5), rear=2.0)
    if fit is None:
        plan.skipped["houses_no_fit"] += 1
        return False
    x0, y0, w, d = fit
    style = Style.draw(rng, pitched=True, windows=False)
    floors = 1 if rng.random() < 0.55 else 2
    roof = "gable" if rng.random() < 0.55 else "hip"
    main = np.array([[x0, y0], [x0 + w, y0], [x0 + w, y0 + d], [x0, y0 + d]])
    ridge = 0.35 * min(w, d) * rng.uniform(0.8, 1.2)
    # A rear wing makes an L-shaped house (its own closed prism and roof, overlapping the
    # main block by half a metre); checked before the main block occupies its cells.
    wing = None
    if rng.random() < 0.35:
        ww, wd = w * rng.uniform(0.4, 0.6), rng.uniform(4, 7)
        wx = x0 if rng.random() < 0.5 else x0 + w - ww
        wing = np.array([[wx, y0 + d - 0.5], [wx + ww, y0 + d - 0.5], [wx + ww, y0 + d + wd], [wx, y0 + d + wd]])
        if not rect_fits(plan, allowed, lot.origin, lot.u, wing[0], wing[2] + [0, 1.0]):
            wing = None
    _building(plan, lot, main, floors, style, "house", roof, ridge)
    if wing is not None:
        _building(plan, lot, wing, 1, style, "house", "gable", 0.3 * min(ww, wd))
    # Driveway to the street and a parked car.
    dw = 3.5
    dx = x0 - dw - 0.5 if x0 > dw + 1 else x0 + w + 0.5
    drive = paint_rect(plan, lot.origin, lot.u, (dx, 0.0), (dx + dw, y0 + 0.5 * d), "parking_paved", within=mask)
    if drive.any() and rng.random() < 0.75 * plan.config.vehicle_density:
        p = lot.world(np.array([[dx + dw / 2, max(2.5, y0 - 3.0)]]))
        add_vehicles(plan, rng, p, np.array([np.arctan2(lot.v[1], lot.v[0])]))
    # Backyard: pool, patio, trees; bushes along the front.
    rear_space = lot.depth - (y0 + d)
    if rear_space > 10 and rng.random() < 0.28:
        pw, pd = rng.uniform(4, 6), rng.uniform(8, 12)
        px = x0 + rng.uniform(0, max(w - pd, 0.1))
        py = y0 + d + 2.5
        if rect_fits(plan, allowed, lot.origin, lot.u, np.array([px - 1.5, py - 1.5]), np.array([px + pd + 1.5, py + pw + 1.5])):
            add_pool(plan, rng, lot.world(np.array([[px, py]]))[0], lot.u, pd, pw)
            occupy(plan, lot.world(np.array([[px - 1, py - 1], [px + pd + 1, py - 1], [px + pd + 1, py + pw + 1], [px - 1, py + pw + 1]])))
    elif rear_space > 14 and lot.width > 20 and rng.random() < 0.08:  # a backyard court
        cw, cd = min(lot.width - 4, 18.0), min(rear_space - 3, 11.0)
        cx, cy = 2.0, y0 + d + 1.5
        if rect_fits(plan, allowed, lot.origin, lot.u, np.array([cx, cy]), np.array([cx + cw, cy + cd])):
            paint_rect(plan, lot.origin, lot.u, (cx, cy), (cx + cw, cy + cd), "sports_field", within=mask,
                       tone=np.array([75, 125, 150.0]), stripe=(float(np.arctan2(lot.u[1], lot.u[0])), 9.0, 0.1))
            plan.counts["sports_fields"] += 1
    yard = np.column_stack([rng.uniform(1, lot.width - 1, 4), rng.uniform(1, lot.depth - 1, 4)])
    add_trees(plan, rng, lot.world(yard[: rng.integers(1, 5)]), conifer=0.15, height=(6, 14))
    front = np.column_stack([rng.uniform(x0, x0 + w, 3), np.full(3, y0 - 2.6)])
    add_bushes(plan, rng, lot.world(front), size=(0.6, 1.2))
    return True


# --------------------------------------------------------------------------- commercial / downtown

def midrise_lot(plan: SitePlan, rng: np.random.Generator, lot: Lot, lot_raster: np.ndarray, mask: np.ndarray,
                floors: int, setback: float = 1.0, infill: int = 0) -> bool:
    """A flat-roofed block (rectangle, L or U) filling the lot, or a tiered tower when tall."""
    plan.paint(mask, "sidewalk_path", tone=np.array([175, 170, 160.0]) * rng.uniform(0.9, 1.05))
    allowed = lot_allowed(plan, lot_raster, lot)
    fit = _fit(plan, allowed, lot, rng, lot.width, lot.depth, front=setback, side=rng.uniform(0.0, 2.0), rear=rng.uniform(0.5, 3.0))
    if fit is None:
        plan.skipped["midrises_no_fit"] += 1
        return False
    x0, y0, w, d = fit
    style = Style.draw(rng, pitched=False)
    if floors >= 14:
        _tower(plan, rng, lot, x0, y0, w, d, floors, style)
        infill = min(infill, 1)
        floors = int(rng.integers(4, 12))
        for _ in range(infill):
            fit = _fit(plan, allowed, lot, rng, lot.width, lot.depth, front=setback, side=0.5, rear=0.5, min_side=10.0)
            if fit is None:
                break
            x0, y0, w, d = fit
            _building(plan, lot, np.array([[x0, y0], [x0 + w, y0], [x0 + w, y0 + d], [x0, y0 + d]]), floors, Style.draw(rng, pitched=False), "midrise")
        return True
    shape = rng.choice(["rect", "L", "U"], p=[0.55, 0.3, 0.15]) if min(w, d) > 18 else "rect"
    local = footprint(str(shape), w, d, rng) + [x0, y0]
    poly, top = _building(plan, lot, local, floors, style, "midrise")
    add_rooftop_units(plan, rng, poly, top, int(rng.integers(0, 3 + w * d // 300)))
    # Infill: more buildings in what is left of a big lot (dense city blocks).
    for _ in range(infill):
        fit = _fit(plan, allowed, lot, rng, lot.width, lot.depth, front=setback, side=0.5, rear=0.5, min_side=10.0)
        if fit is None:
            break
        x0, y0, w, d = fit
        f = max(2, int(floors * rng.uniform(0.4, 1.1))) if floors < 14 else int(rng.integers(4, 14))
        poly, top = _building(plan, lot, np.array([[x0, y0], [x0 + w, y0], [x0 + w, y0 + d], [x0, y0 + d]]), f, Style.draw(rng, pitched=False), "midrise")
        add_rooftop_units(plan, rng, poly, top, int(rng.integers(0, 3)))
    return True


def _tower(plan, rng, lot, x0, y0, w, d, floors, style) -> bool:
    """Stacked tiers, each a closed prism set back from the one below."""
    tiers = int(rng.integers(1, 4))
    per = np.diff(np.round(np.linspace(0, floors, tiers + 1))).astype(int)
    base_floors = per[0]
    local = np.array([[x0, y0], [x0 + w, y0], [x0 + w, y0 + d], [x0, y0 + d]])
    poly, top = _building(plan, lot, local, base_floors, style, "tower")
    cx, cy = x0 + w / 2, y0 + d / 2
    for k, f in enumerate(per[1:], start=1):
        shrink = rng.uniform(0.7, 0.88) ** k
        tw, td = max(w * shrink, 8), max(d * shrink, 8)
        tl = np.array([[cx - tw / 2, cy - td / 2], [cx + tw / 2, cy - td / 2], [cx + tw / 2, cy + td / 2], [cx - tw / 2, cy + td / 2]])
        tp = lot.world(tl)
        z0 = top - 0.2
        z1 = z0 + f * style.floor_h * plan.config.height_scale
        add_prism_building(plan, tp, z0, z0, z1, style, "tower")
        top = z1
        poly = tp
    add_rooftop_units(plan, rng, poly, top, int(rng.integers(1, 4)))
    plan.counts["towers"] += 1
    return True


def parking_lot(plan: SitePlan, rng: np.random.Generator, lot: Lot, mask: np.ndarray) -> None:
    plan.paint(mask, "parking_paved", tone=PAVED * rng.uniform(0.85, 1.1), stripe=(np.arctan2(lot.u[1], lot.u[0]), 12.5, 0.1))
    parking_rows(plan, rng, lot.origin, lot.u, lot.width, lot.depth, occupancy=rng.uniform(0.4, 0.9), within=mask)
    plan.counts["parking_lots"] += 1


def plaza(plan: SitePlan, rng: np.random.Generator, lot: Lot, mask: np.ndarray) -> None:
    plan.paint(mask, "sidewalk_path", tone=np.array([190, 182, 168.0]) * rng.uniform(0.9, 1.05))
    pts = jittered_points(plan, rng, 9.0, mask.astype(np.float32) * 0.5)
    add_trees(plan, rng, pts, height=(6, 12))
    plan.counts["plazas"] += 1


def construction_lot(plan: SitePlan, rng: np.random.Generator, lot: Lot, mask: np.ndarray) -> None:
    """Graded soil with a crane, material piles and site cabins (``construction_site``)."""
    plan.paint(mask, "construction_site", tone=np.array([165, 135, 100.0]) * rng.uniform(0.9, 1.1))
    cells = np.flatnonzero(mask.ravel())
    xc, yc = plan.grid.cell_xy()
    pick = rng.choice(cells, size=min(len(cells), 8), replace=False)
    xy = np.column_stack([xc.ravel()[pick], yc.ravel()[pick]])
    if len(xy) and rng.random() < 0.7:
        add_crane(plan, rng, xy[0])
    V0, F0 = box((1.0, 1.0, 1.0))
    for p in xy[1:]:
        s = rng.uniform([2, 2, 0.8], [7, 5, 3])
        z = float(plan.z(p[:1], p[1:])[0])
        V, F = instance(V0, F0, np.array([[p[0], p[1], z - 0.2]]), np.array([rng.uniform(0, np.pi)]), s[None])
        plan.parts.add(V, F, C["construction_site"], np.array([150, 140, 120.0]) * rng.uniform(0.7, 1.2))
    plan.occupied |= mask
    plan.counts["construction_sites"] += 1


def park(plan: SitePlan, rng: np.random.Generator, lot: Lot, lot_raster: np.ndarray, mask: np.ndarray, field: bool = True) -> None:
    """Lawn, paths, trees and (when it fits) a sports field or courts."""
    plan.paint(mask, "grass_lawn", tone=LAWN * rng.uniform(0.9, 1.1, 3))
    if field:
        sports_field(plan, rng, lot, lot_raster)
    # Two crossing footpaths.
    for a, b in (((0, 0), (lot.width, lot.depth)), ((lot.width, 0), (0, lot.depth))):
        t = np.linspace(0, 1, 200)[:, None]
        line = lot.world(np.asarray(a) + t * (np.asarray(b) - np.asarray(a)))
        i, j = plan.grid.cell_of(line[:, 0], line[:, 1])
        path = np.zeros_like(mask)
        path[i, j] = True
        plan.paint(path & mask & ~plan.occupied & (plan.ground != C["sports_field"]), "sidewalk_path")
    free = (mask & ~plan.occupied & (plan.ground == C["grass_lawn"])).astype(np.float32)
    add_trees(plan, rng, jittered_points(plan, rng, 10.0, free * 0.45 * plan.config.tree_density), conifer=0.2, height=(7, 18))
    plan.counts["parks"] += 1


def sports_field(plan: SitePlan, rng: np.random.Generator, lot: Lot, lot_raster: np.ndarray) -> bool:
    """A pitch with mowing stripes, sometimes ringed by a running track, or tennis courts."""
    allowed = lot_allowed(plan, lot_raster, lot)
    for L, W, kind in ((105, 68, "pitch"), (90, 55, "pitch"), (60, 40, "pitch"), (36, 24, "courts"), (28, 15, "courts")):
        track = 8.0 if kind == "pitch" and rng.random() < 0.4 else 0.0
        tw, td = L + 2 * track, W + 2 * track
        if tw > lot.width - 4 or td > lot.depth - 4:
            tw, td, L, W = td, tw, W, L  # try turned by 90 degrees
            if tw > lot.width - 4 or td > lot.depth - 4:
                continue
        x0 = rng.uniform(2, lot.width - tw - 2)
        y0 = rng.uniform(2, lot.depth - td - 2)
        if not rect_fits(plan, allowed, lot.origin, lot.u, np.array([x0, y0]), np.array([x0 + tw, y0 + td])):
            continue
        within = lot_raster == lot.id
        angle = float(np.arctan2(lot.u[1], lot.u[0]))
        if kind == "courts":
            paint_rect(plan, lot.origin, lot.u, (x0, y0), (x0 + tw, y0 + td), "sports_field", within,
                       tone=np.array([70, 120, 150.0]) if rng.random() < 0.5 else np.array([80, 140, 90.0]), stripe=(angle, 11.0, 0.12))
        else:
            if track:
                paint_rect(plan, lot.origin, lot.u, (x0, y0), (x0 + tw, y0 + td), "sports_field", within, tone=np.array([170, 85, 65.0]))
            paint_rect(plan, lot.origin, lot.u, (x0 + track, y0 + track), (x0 + track + L, y0 + track + W), "sports_field", within,
                       tone=np.array([70, 140, 65.0]), stripe=(angle, 12.0, 0.12))
        plan.counts["sports_fields"] += 1
        return True
    return False


def school(plan: SitePlan, rng: np.random.Generator, lot: Lot, lot_raster: np.ndarray, mask: np.ndarray) -> None:
    plan.paint(mask, "grass_lawn", tone=LAWN)
    sports_field(plan, rng, lot, lot_raster)
    allowed = lot_allowed(plan, lot_raster, lot)
    fit = _fit(plan, allowed, lot, rng, rng.uniform(40, 80), rng.uniform(25, 45), front=8, side=4, rear=4)
    if fit:
        x0, y0, w, d = fit
        shape = "U" if min(w, d) > 25 and rng.random() < 0.5 else "L" if min(w, d) > 18 else "rect"
        local = footprint(shape, w, d, rng) + [x0, y0]
        poly, top = _building(plan, lot, local, int(rng.integers(1, 3)), Style.draw(rng, pitched=False), "school")
        add_rooftop_units(plan, rng, poly, top, 3)
    plan.counts["schools"] += 1


# --------------------------------------------------------------------------- industrial

def warehouse_lot(plan: SitePlan, rng: np.random.Generator, lot: Lot, lot_raster: np.ndarray, mask: np.ndarray) -> bool:
    yard = "parking_paved" if rng.random() < 0.7 else "bare_soil"
    plan.paint(mask, yard, tone=(PAVED if yard == "parking_paved" else np.array([150, 130, 105.0])) * rng.uniform(0.85, 1.1))
    allowed = lot_allowed(plan, lot_raster, lot)
    fit = _fit(plan, allowed, lot, rng, lot.width * rng.uniform(0.6, 0.9), lot.depth * rng.uniform(0.5, 0.8),
               front=rng.uniform(10, 20), side=rng.uniform(4, 10), rear=rng.uniform(3, 8))
    if fit is None:
        plan.skipped["warehouses_no_fit"] += 1
        return False
    x0, y0, w, d = fit
    shape = "L" if rng.random() < 0.25 and min(w, d) > 25 else "rect"
    local = footprint(shape, w, d, rng) + [x0, y0]
    style = Style(np.array([190, 188, 180.0]) * rng.uniform(0.8, 1.05), np.array([120, 125, 130.0]),
                  np.array([205, 205, 200.0]) * rng.uniform(0.8, 1.02), floor_h=rng.uniform(8, 13), window_frac=0.12)
    poly, top = _building(plan, lot, local, 1, style, "warehouse")
    add_rooftop_units(plan, rng, poly, top, int(rng.integers(2, 8)))
    # Trucks at the loading side (the street side).
    k = int(rng.integers(0, 5) * plan.config.vehicle_density)
    if k and y0 > 16:
        xs = x0 + 4 + np.arange(k) * 4.5
        xs = xs[xs < x0 + w - 3]
        p = lot.world(np.column_stack([xs, np.full(len(xs), y0 - 8.5)]))
        ok = plan.grid.lookup(mask, p[:, 0], p[:, 1])
        add_vehicles(plan, rng, p[ok], np.full(int(ok.sum()), np.arctan2(lot.v[1], lot.v[0])), truck_share=1.0)
    return True


def tank_farm(plan: SitePlan, rng: np.random.Generator, lot: Lot, lot_raster: np.ndarray, mask: np.ndarray) -> None:
    plan.paint(mask, "bare_soil", tone=np.array([155, 145, 125.0]))
    r = rng.uniform(6, 14)
    xs = np.arange(r + 4, lot.width - r - 3, 2 * r + 6)
    ys = np.arange(r + 8, lot.depth - r - 3, 2 * r + 6)
    allowed = lot_allowed(plan, lot_raster, lot)
    centers = []
    for x in xs:
        for y in ys:
            if rect_fits(plan, allowed, lot.origin, lot.u, np.array([x - r, y - r]), np.array([x + r, y + r])):
                centers.append((x, y))
    if not centers:
        return
    c = lot.world(np.array(centers))
    add_tanks(plan, rng, c, np.full(len(c), r), rng.uniform(8, 18, len(c)))
    for p in c:
        occupy(plan, p + r * np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]))
    plan.counts["tank_farms"] += 1


def container_yard(plan: SitePlan, rng: np.random.Generator, lot: Lot, mask: np.ndarray) -> None:
    plan.paint(mask, "parking_paved", tone=np.array([125, 122, 118.0]))
    add_containers(plan, rng, lot.origin, lot.u, lot.width, lot.depth, within=mask)
    plan.occupied |= mask
    plan.counts["container_yards"] += 1
