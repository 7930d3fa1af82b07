"""Man-made objects other than buildings: vehicles, utility towers and lines, wind
turbines, tanks and silos, containers, cranes, pools, docks."""

from __future__ import annotations

import numpy as np

from earthcrafter.world.buildings import to_world
from earthcrafter.world.paths import edge_to_edge, resample, tangents
from earthcrafter.world.plan import C, SitePlan
from earthcrafter.world.shapes import box, cylinder, frustum, instance, prism, sweep

PAINT = np.array(
    [[235, 235, 235], [30, 30, 32], [120, 122, 128], [185, 185, 190], [150, 30, 30], [30, 60, 130],
     [200, 200, 205], [60, 80, 60], [210, 180, 40], [90, 40, 30]], float
)
_PAINT_P = np.array([0.22, 0.18, 0.14, 0.14, 0.08, 0.08, 0.06, 0.04, 0.03, 0.03])


def _car_template() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Body and cabin boxes, 4.5 x 1.8 m; returns vertices, faces and a vertex tint (cabin darker)."""
    bv, bf = box((4.5, 1.8, 0.75))
    bv[:, 2] += 0.25
    cv, cf = box((2.3, 1.6, 0.6))
    cv[:, 0] -= 0.3
    cv[:, 2] += 1.0
    V = np.concatenate([bv, cv])
    F = np.concatenate([bf, cf + len(bv)])
    tint = np.concatenate([np.ones(len(bv)), np.full(len(cv), 0.55)])
    return V, F, tint


def _truck_template() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cv, cf = box((2.4, 2.5, 3.0))
    cv[:, 0] += 6.4
    tv, tf = box((12.0, 2.5, 3.6))
    tv[:, 0] -= 1.0
    tv[:, 2] += 0.3
    V = np.concatenate([cv, tv])
    F = np.concatenate([cf, tf + len(cv)])
    tint = np.concatenate([np.full(len(cv), 0.8), np.ones(len(tv))])
    return V, F, tint


CAR = _car_template()
TRUCK = _truck_template()


def add_vehicles(plan: SitePlan, rng: np.random.Generator, xy: np.ndarray, yaw: np.ndarray, truck_share: float = 0.0) -> int:
    """Cars (and trucks) at ground positions ``xy [N, 2]`` heading ``yaw [N]`` (class ``vehicle``)."""
    xy = np.asarray(xy, float).reshape(-1, 2)
    if len(xy) == 0:
        return 0
    truck = rng.random(len(xy)) < truck_share
    for template, sel in ((CAR, ~truck), (TRUCK, truck)):
        if not sel.any():
            continue
        V0, F0, tint = template
        N = int(sel.sum())
        z = plan.z(xy[sel, 0], xy[sel, 1]) - 0.05
        V, F = instance(V0, F0, np.column_stack([xy[sel], z]), yaw[sel])
        paint = PAINT[rng.choice(len(PAINT), size=N, p=_PAINT_P)] * rng.uniform(0.9, 1.1, (N, 1))
        col = (paint[:, None, :] * tint[None, :, None]).reshape(-1, 3)
        plan.parts.add(V, F, C["vehicle"], col)
    plan.counts["vehicles"] += len(xy)
    return len(xy)


def traffic(plan: SitePlan, rng: np.random.Generator, per_km: float, kinds=("arterial", "street", "rural")) -> int:
    """Vehicles in the lanes of the plan's roads (none on bridges), ``per_km`` per lane-kilometre."""
    pts, yaws = [], []
    rate = per_km * plan.config.vehicle_density / 1000.0
    for r in plan.roads:
        if r.kind not in kinds or len(r.line) < 2:
            continue
        line = resample(r.line, 1.0)
        t = tangents(line)
        nrm = np.column_stack([-t[:, 1], t[:, 0]])
        lanes = [-0.25, 0.25] if r.width < 12 else [-0.35, -0.12, 0.12, 0.35]
        for lane in lanes:
            k = rng.random(len(line)) < rate
            k &= np.arange(len(line)) % 7 == 0  # at least 7 m apart in a lane
            p = line[k] + lane * r.width * nrm[k]
            yaw = np.arctan2(t[k, 1], t[k, 0]) + (np.pi if lane < 0 else 0.0)
            pts.append(p)
            yaws.append(yaw)
    if not pts:
        return 0
    xy, yaw = np.concatenate(pts), np.concatenate(yaws)
    ok = plan.grid.inside(xy[:, 0], xy[:, 1], margin=3) & plan.grid.lookup(plan.ground == C["road"], xy[:, 0], xy[:, 1])
    plan.skipped["vehicles_off_road"] += int((~ok).sum())
    return add_vehicles(plan, rng, xy[ok], yaw[ok], truck_share=0.08)


def parking_rows(
    plan: SitePlan, rng: np.random.Generator, origin, u, width: float, depth: float, occupancy: float,
    within: np.ndarray | None = None,
) -> int:
    """Cars parked in stall rows (2.6 m stalls, 5.5 m deep, 7 m aisles) filling a rectangle
    in the local frame (``origin``, along ``u``); stalls off the ``within`` cells stay empty."""
    v = np.array([-u[1], u[0]])
    rows = np.arange(3.0, depth - 2.5, 12.5)
    cols = np.arange(1.8, width - 1.8, 2.6)
    if len(rows) == 0 or len(cols) == 0:
        return 0
    R, K = np.meshgrid(rows, cols, indexing="ij")
    local = np.column_stack([K.ravel(), R.ravel()])
    keep = rng.random(len(local)) < occupancy * min(plan.config.vehicle_density, 1.0)
    local = local[keep]
    xy = origin + local[:, :1] * u + local[:, 1:2] * v
    yaw = np.full(len(xy), np.arctan2(v[1], v[0])) + rng.choice([0.0, np.pi], len(xy))
    ok = plan.grid.inside(xy[:, 0], xy[:, 1], margin=2.5)
    if within is not None:
        # The whole car must stand on the lot: test its four corners.
        for dx, dy in ((-2.3, -1.0), (2.3, -1.0), (2.3, 1.0), (-2.3, 1.0)):
            cx = xy[:, 0] + dx * np.cos(yaw) - dy * np.sin(yaw)
            cy = xy[:, 1] + dx * np.sin(yaw) + dy * np.cos(yaw)
            ok &= plan.grid.lookup(within, cx, cy)
    return add_vehicles(plan, rng, xy[ok], yaw[ok], truck_share=0.05)


# --------------------------------------------------------------------------- utility structures

def add_power_line(plan: SitePlan, rng: np.random.Generator, spacing: float | None = None) -> int:
    """A transmission line across the site: lattice-like masts with cross-arms and three
    sagging conductors (all ``tower_utility``). Masts on water, roads or buildings are moved
    along the line or skipped (counted)."""
    size = plan.grid.size
    a, b = edge_to_edge(rng, size, margin=0.0)
    spacing = spacing or float(min(rng.uniform(150, 220), 0.7 * size))
    d = (b - a) / np.linalg.norm(b - a)
    L = np.linalg.norm(b - a)
    s = np.arange(rng.uniform(0, spacing), L, spacing)
    masts = []
    for si in s:
        for shift in (0.0, 8.0, -8.0, 16.0, -16.0):
            p = a + (si + shift) * d
            if not plan.grid.inside(p[0], p[1], margin=4):
                break
            i, j = plan.grid.cell_of(p[0], p[1])
            if plan.water[i, j] or plan.occupied[i, j]:
                continue
            masts.append(p)
            break
        else:
            plan.skipped["power_masts_blocked"] += 1
    if not masts:
        return 0
    masts = np.array(masts)
    height = rng.uniform(28, 40)
    yaw = np.full(len(masts), np.arctan2(d[1], d[0]))
    z = plan.z(masts[:, 0], masts[:, 1])
    V, F = frustum(3.0, 0.6, 1.0)
    Vi, Fi = instance(V, F, np.column_stack([masts, z - 0.5]), yaw, np.tile([1.0, 1.0, height + 0.5], (len(masts), 1)))
    steel = np.array([150, 152, 155.0])
    plan.parts.add(Vi, Fi, C["tower_utility"], steel)
    arm_v, arm_f = box((0.8, 14.0, 0.8))
    Vi, Fi = instance(arm_v, arm_f, np.column_stack([masts, z + height - 4.0]), yaw)
    plan.parts.add(Vi, Fi, C["tower_utility"], steel)
    # Conductors: a thin swept square section along a sagging catenary-like curve.
    wire = np.array([[-0.08, -0.08], [0.08, -0.08], [0.08, 0.08], [-0.08, 0.08]])
    side = np.array([-d[1], d[0]])
    for k in range(len(masts) - 1):
        for off in (-6.0, 0.0, 6.0):
            t = np.linspace(0, 1, 12)[:, None]
            p0 = masts[k] + off * side
            p1 = masts[k + 1] + off * side
            zz = (1 - t[:, 0]) * (z[k] + height - 4.5) + t[:, 0] * (z[k + 1] + height - 4.5) - 0.04 * spacing * 4 * t[:, 0] * (1 - t[:, 0])
            path = np.column_stack([p0 + t * (p1 - p0), zz])
            Vw, Fw = sweep(path, wire)
            plan.parts.add(Vw, Fw, C["tower_utility"], np.array([70, 70, 72.0]))
    plan.counts["power_masts"] += len(masts)
    return len(masts)


def add_wind_turbine(plan: SitePlan, rng: np.random.Generator, xy: np.ndarray) -> None:
    """Tapered tower, nacelle and three blades (``tower_utility``)."""
    z = float(plan.z(np.array([xy[0]]), np.array([xy[1]]))[0])
    h = rng.uniform(70, 95)
    white = np.array([232, 232, 235.0])
    V, F, _ = cylinder(10, 1.0, 1.0)
    V = V.copy()
    V[:, :2] *= np.where(V[:, 2:3] > 0.5, 1.3, 2.2)  # tapered mast
    V[:, 2] = V[:, 2] * (h + 1) + z - 1
    V[:, :2] += xy
    plan.parts.add(V, F, C["tower_utility"], white)
    yaw = rng.uniform(0, 2 * np.pi)
    nv, nf = box((9.0, 3.2, 3.2))
    nv, nf = instance(nv, nf, np.array([[xy[0], xy[1], z + h - 1.0]]), np.array([yaw]))
    plan.parts.add(nv, nf, C["tower_utility"], white)
    blade_len = rng.uniform(35, 48)
    hub = np.array([xy[0] + 5.0 * np.cos(yaw), xy[1] + 5.0 * np.sin(yaw), z + h + 0.6])
    spin = rng.uniform(0, 2 * np.pi)
    for k in range(3):
        ang = spin + k * 2 * np.pi / 3
        bv, bf = box((0.6, 2.2, blade_len))  # along local z, then tilt into the rotor plane
        bv = bv.copy()
        ca, sa = np.cos(ang), np.sin(ang)
        y_l, z_l = bv[:, 1], bv[:, 2]
        rot_y, rot_z = ca * y_l - sa * z_l, sa * y_l + ca * z_l
        lx = bv[:, 0]
        wx = np.cos(yaw) * lx - np.sin(yaw) * rot_y
        wy = np.sin(yaw) * lx + np.cos(yaw) * rot_y
        plan.parts.add(np.column_stack([wx, wy, rot_z]) + hub, bf, C["tower_utility"], white)
    plan.occupied[plan.grid.cell_of(xy[0], xy[1])] = True
    plan.counts["wind_turbines"] += 1


def add_tanks(plan: SitePlan, rng: np.random.Generator, centers: np.ndarray, radius: np.ndarray, height: np.ndarray, cls: str = "other_manmade") -> None:
    """Vertical cylinders (storage tanks, silos, water towers' tanks)."""
    V0, F0, part = cylinder(14, 1.0, 1.0)
    for c, r, h in zip(centers, radius, height):
        z = float(plan.z(np.array([c[0]]), np.array([c[1]]))[0])
        V = V0 * np.array([r, r, h + 0.5]) + np.array([c[0], c[1], z - 0.5])
        tone = np.array([215, 215, 212.0]) * rng.uniform(0.8, 1.05)
        vcol = np.tile(tone, (len(V), 1))
        vcol[V[:, 2] > z + h - 0.1] *= 0.92  # slightly darker lid
        plan.parts.add(V, F0, C[cls], vcol)
    plan.counts["tanks"] += len(centers)


def add_water_tower(plan: SitePlan, rng: np.random.Generator, xy: np.ndarray) -> None:
    z = float(plan.z(np.array([xy[0]]), np.array([xy[1]]))[0])
    h = rng.uniform(25, 40)
    V, F, _ = cylinder(10, 1.2, h)
    plan.parts.add(V + [xy[0], xy[1], z - 0.3], F, C["tower_utility"], np.array([200, 200, 200.0]))
    V, F, _ = cylinder(16, rng.uniform(6, 9), rng.uniform(6, 9))
    plan.parts.add(V + [xy[0], xy[1], z + h], F, C["tower_utility"], np.array([220, 225, 230.0]) * rng.uniform(0.85, 1.0))
    plan.counts["water_towers"] += 1


def add_containers(
    plan: SitePlan, rng: np.random.Generator, origin, u, width: float, depth: float, within: np.ndarray | None = None
) -> int:
    """Stacks of shipping containers in rows (``other_manmade``), only where a stack's
    corners all stand on ``within`` cells."""
    v = np.array([-u[1], u[0]])
    xs = np.arange(2.0, width - 12.5, 12.8)
    ys = np.arange(2.0, depth - 3.0, 3.2)
    count = 0
    palette = np.array([[160, 50, 40], [40, 80, 140], [60, 120, 60], [200, 160, 40], [120, 120, 125], [210, 110, 40]], float)
    V0, F0 = box((12.2, 2.45, 2.6))
    for x in xs:
        for y in ys:
            if rng.random() < 0.25:
                continue
            c = origin + (x + 6.1) * u + (y + 1.2) * v
            corners = c + np.array([[-6.1, -1.2], [6.1, -1.2], [6.1, 1.2], [-6.1, 1.2]]) @ np.stack([u, v])
            if within is not None and not plan.grid.lookup(within, corners[:, 0], corners[:, 1]).all():
                continue
            if not plan.grid.inside(corners[:, 0], corners[:, 1]).all():
                continue
            z = float(plan.z(np.array([c[0]]), np.array([c[1]]))[0])
            for level in range(rng.integers(1, 4)):
                V, F = instance(V0, F0, np.array([[c[0], c[1], z + 2.6 * level - 0.05]]), np.array([np.arctan2(u[1], u[0])]))
                plan.parts.add(V, F, C["other_manmade"], palette[rng.integers(len(palette))])
                count += 1
    plan.counts["containers"] += count
    return count


def add_crane(plan: SitePlan, rng: np.random.Generator, xy: np.ndarray) -> None:
    """A tower crane: mast, jib and counter-jib (``construction_site``)."""
    z = float(plan.z(np.array([xy[0]]), np.array([xy[1]]))[0])
    h = rng.uniform(30, 60)
    yellow = np.array([225, 180, 30.0])
    V, F = box((1.8, 1.8, h))
    plan.parts.add(V + [xy[0], xy[1], z - 0.3], F, C["construction_site"], yellow)
    yaw = rng.uniform(0, 2 * np.pi)
    jv, jf = box((rng.uniform(35, 55), 1.4, 1.6))
    jv = jv.copy()
    jv[:, 0] += 0.35 * (jv[:, 0].max() - jv[:, 0].min()) / 2
    V, F = instance(jv, jf, np.array([[xy[0], xy[1], z + h]]), np.array([yaw]))
    plan.parts.add(V, F, C["construction_site"], yellow)
    plan.counts["cranes"] += 1


def add_pool(plan: SitePlan, rng: np.random.Generator, origin, u, w: float, d: float) -> None:
    """An in-ground pool: a thin closed slab flush with the yard (``swimming_pool``) and a
    paved surround (``sidewalk_path``)."""
    rim = np.array([[0, 0], [w, 0], [w, d], [0, d]], float)
    deck = to_world(rim + np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]), origin, u)
    water = to_world(rim, origin, u)
    z = float(plan.z(deck[:, 0], deck[:, 1]).max())
    V, F, _ = prism(deck, z - 0.4, z + 0.08)
    plan.parts.add(V, F, C["sidewalk_path"], np.array([200, 195, 185.0]))
    V, F, part = prism(water, z - 0.3, z + 0.12)
    col = np.tile(np.array([70, 175, 205.0]) * rng.uniform(0.9, 1.1), (len(V), 1))
    plan.parts.add(V, F, C["swimming_pool"], col)
    plan.counts["pools"] += 1


def add_dock(plan: SitePlan, rng: np.random.Generator, shore_xy: np.ndarray, direction: np.ndarray, level: float) -> None:
    """A wooden jetty from the shore over the water (``other_manmade``)."""
    L = rng.uniform(12, 30)
    u = direction / np.linalg.norm(direction)
    c = shore_xy + 0.5 * L * u
    V, F = box((L, 2.2, 0.5))
    V, F = instance(V, F, np.array([[c[0], c[1], level + 0.4]]), np.array([np.arctan2(u[1], u[0])]))
    plan.parts.add(V, F, C["other_manmade"], np.array([130, 105, 80.0]) * rng.uniform(0.85, 1.1))
    plan.counts["docks"] += 1
