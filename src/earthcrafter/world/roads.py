"""Linear networks: roads (arterials, streets, rural roads), paths and railways.

Roads are polylines with a width and a sidewalk width. Urban networks come from a
rotated, jittered lattice whose edges bow into curves and are partly dropped (T-junctions,
dead ends with turning circles), plus arterials that cross the whole site. Networks are
clipped to the site and pruned to the largest connected part, so the painted road surface
(road cells plus bridge decks) is one connected component.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from earthcrafter.world.paths import clip_to_box, edge_to_edge, length, meander, resample, tangents
from earthcrafter.world.plan import C, SitePlan
from earthcrafter.world.shapes import box, instance, sweep
from earthcrafter.world.terrain import level_cells

SURFACE_CLASS = {"arterial": "road", "street": "road", "rural": "road", "track": "road", "path": "sidewalk_path", "rail": "railway"}


@dataclass
class Road:
    line: np.ndarray  # [P, 2], densely sampled (<= 1 m)
    width: float  # carriageway width, metres
    kind: str  # arterial | street | rural | track | path | rail
    sidewalk: float = 0.0  # sidewalk width on each side

    @property
    def half(self) -> float:
        return 0.5 * self.width


# --------------------------------------------------------------------------- generators

def lattice_network(
    plan: SitePlan,
    rng: np.random.Generator,
    *,
    spacing: tuple[float, float],
    angle: float,
    jitter: float,
    bend: float,
    drop: float,
    arterial_every: int,
    street: tuple[float, float],
    arterial: tuple[float, float],
) -> list[Road]:
    """Streets on a rotated lattice; ``street``/``arterial`` are (width, sidewalk).

    Every ``arterial_every``-th lattice line is an arterial and is never dropped; other
    edges are dropped with probability ``drop``; dead ends inside the site get a turning circle.
    """
    size = plan.grid.size
    sx, sy = spacing
    u = np.array([np.cos(angle), np.sin(angle)])
    v = np.array([-np.sin(angle), np.cos(angle)])
    centre = np.full(2, size / 2) + rng.uniform(-0.5, 0.5, 2) * np.array(spacing).mean()
    A = int(np.ceil((0.75 * size) / sx)) + 1
    B = int(np.ceil((0.75 * size) / sy)) + 1
    ia, ib = np.arange(-A, A + 1), np.arange(-B, B + 1)
    nodes = centre + ia[:, None, None] * sx * u + ib[None, :, None] * sy * v
    nodes = nodes + rng.uniform(-jitter, jitter, nodes.shape)
    art_a, art_b = rng.integers(0, arterial_every, 2)
    roads, degree = [], np.zeros(nodes.shape[:2], int)
    for axis in (0, 1):
        for a in range(len(ia) - (axis == 0)):
            for b in range(len(ib) - (axis == 1)):
                a2, b2 = (a + 1, b) if axis == 0 else (a, b + 1)
                is_art = (ib[b] % arterial_every == art_b) if axis == 0 else (ia[a] % arterial_every == art_a)
                if not is_art and rng.random() < drop:
                    continue
                p0, p1 = nodes[a, b], nodes[a2, b2]
                t = np.linspace(0, 1, max(2, int(np.linalg.norm(p1 - p0)) + 1))[:, None]
                d = p1 - p0
                nrm = np.array([-d[1], d[0]]) / max(np.linalg.norm(d), 1e-9)
                bow = 0.0 if is_art else rng.uniform(-bend, bend)
                line = p0 + t * d + (bow * np.sin(np.pi * t)) * nrm
                w, sw = arterial if is_art else street
                roads.append(Road(line, w, "arterial" if is_art else "street", sw))
                degree[a, b] += 1
                degree[a2, b2] += 1
    # Turning circles at dead ends (a common suburban cul-de-sac).
    street_w = street[0]
    for (a, b) in zip(*np.nonzero(degree == 1)):
        p = nodes[a, b]
        if plan.grid.inside(p[0], p[1], margin=street_w):
            roads.append(Road(p[None, :].copy(), 2 * (street_w * 0.5 + 5.0), "street", street[1]))
            plan.counts["cul_de_sacs"] += 1
    return roads


def crossing_road(
    plan: SitePlan, rng: np.random.Generator, kind: str, width: float, sidewalk: float = 0.0,
    amplitude: float = 40.0, wavelength: float = 400.0, direction: float | None = None,
) -> Road:
    """A road (or rail, path) crossing the whole site along a gentle meander."""
    a, b = edge_to_edge(rng, plan.grid.size, direction=direction)
    return Road(resample(meander(rng, a, b, amplitude, wavelength), 1.0), width, kind, sidewalk)


def clip_roads(plan: SitePlan, roads: list[Road]) -> list[Road]:
    """Split roads into the pieces that lie inside the site."""
    out = []
    for r in roads:
        line = resample(r.line, 1.0) if len(r.line) > 1 else r.line
        for piece in clip_to_box(line, plan.grid.size, min_points=1):
            out.append(Road(piece, r.width, r.kind, r.sidewalk))
    return out


def largest_connected(roads: list[Road], touch: float = 1.0) -> tuple[list[Road], list[Road]]:
    """Keep the connected group of roads (centrelines within ``touch`` m) with the most length."""
    if len(roads) <= 1:
        return roads, []
    lines = [(k, resample(r.line, 0.5)) for k, r in enumerate(roads) if len(r.line) > 1]
    discs = [(k, r.line[0], r.half) for k, r in enumerate(roads) if len(r.line) == 1]
    a_list, b_list = [], []
    if lines:
        pts = np.concatenate([s for _, s in lines])
        owner = np.concatenate([np.full(len(s), k) for k, s in lines])
        tree = cKDTree(pts)
        pairs = tree.query_pairs(touch, output_type="ndarray")
        if len(pairs):
            a, b = owner[pairs[:, 0]], owner[pairs[:, 1]]
            a_list.append(a[a != b])
            b_list.append(b[a != b])
        # A turning circle joins whatever its disc touches.
        for k, centre, radius in discs:
            hit = owner[tree.query_ball_point(centre, radius + touch)]
            a_list.append(np.full(len(hit), k))
            b_list.append(hit)
    a = np.concatenate(a_list) if a_list else np.zeros(0, int)
    b = np.concatenate(b_list) if b_list else np.zeros(0, int)
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(len(roads), len(roads)))
    _, label = connected_components(graph, directed=False)
    lengths = np.array([length(r.line) if len(r.line) > 1 else 0.0 for r in roads])
    best = np.argmax(np.bincount(label, weights=lengths + 1e-3))
    keep = [r for r, l in zip(roads, label) if l == best]
    drop = [r for r, l in zip(roads, label) if l != best]
    return keep, drop


# --------------------------------------------------------------------------- painting

@dataclass
class RoadRaster:
    road: np.ndarray  # [n, n] carriageway cells (any kind with class road)
    sidewalk: np.ndarray
    path: np.ndarray
    rail: np.ndarray
    dist: np.ndarray  # distance (m) from each cell centre to the nearest road centreline (1e6 beyond 80 m)
    tangent: np.ndarray  # [n, n, 2] unit direction of that nearest road
    kind: np.ndarray  # [n, n] object array: kind of that nearest road ("" when none)


def rasterize(plan: SitePlan, roads: list[Road]) -> RoadRaster:
    n = plan.grid.n
    xc, yc = plan.grid.cell_xy()
    centres = np.column_stack([xc.ravel(), yc.ravel()])
    masks = {k: np.zeros(n * n, bool) for k in ("road", "sidewalk", "path", "rail")}
    groups: dict[tuple, list[np.ndarray]] = {}
    for r in roads:
        s = resample(r.line, 0.5) if len(r.line) > 1 else r.line
        groups.setdefault((SURFACE_CLASS[r.kind], r.half, r.sidewalk), []).append(s)
    for (cls, half, sw), lines in groups.items():
        pts = np.concatenate(lines)
        d, _ = cKDTree(pts).query(centres, distance_upper_bound=half + sw + 1e-6)
        key = {"road": "road", "sidewalk_path": "path", "railway": "rail"}[cls]
        masks[key] |= d <= half
        if sw > 0:
            masks["sidewalk"] |= d <= half + sw
    dist = np.full(n * n, 1e6)
    tang = np.zeros((n * n, 2))
    tang[:, 0] = 1.0
    kind = np.full(n * n, "", dtype=object)
    car = [r for r in roads if SURFACE_CLASS[r.kind] == "road" and len(r.line) > 1]
    if car:
        samples = [resample(r.line, 0.5) for r in car]
        pts = np.concatenate(samples)
        tg = np.concatenate([tangents(s) for s in samples])
        kinds = np.concatenate([np.full(len(s), r.kind, dtype=object) for s, r in zip(samples, car)])
        dist, idx = cKDTree(pts).query(centres, distance_upper_bound=80.0)
        found = idx < len(pts)
        dist = np.where(found, dist, 1e6)
        tang[found], kind[found] = tg[idx[found]], kinds[idx[found]]
    shape = (n, n)
    return RoadRaster(
        masks["road"].reshape(shape),
        (masks["sidewalk"] & ~masks["road"]).reshape(shape),
        masks["path"].reshape(shape),
        masks["rail"].reshape(shape),
        dist.reshape(shape),
        tang.reshape(shape + (2,)),
        kind.reshape(shape),
    )


def build_network(plan: SitePlan, roads: list[Road], *, connected: bool) -> RoadRaster:
    """Clip, (optionally) prune to one connected network, paint the ground, level the
    terrain under it and bridge every water crossing. Returns the raster for later steps."""
    pieces = clip_roads(plan, roads)
    if connected:
        car = [r for r in pieces if SURFACE_CLASS[r.kind] == "road"]
        other = [r for r in pieces if SURFACE_CLASS[r.kind] != "road"]
        car, dropped = largest_connected(car)
        plan.skipped["road_pieces_disconnected"] += len(dropped)
        pieces = car + other
    plan.roads.extend(pieces)
    ras = rasterize(plan, plan.roads)
    land = plan.land()
    level_cells(plan, (ras.road | ras.sidewalk | ras.rail) & land, sigma_m=3.0)
    plan.paint(ras.rail & land, "railway")
    plan.paint(ras.sidewalk & land & ~ras.rail, "sidewalk_path")
    plan.paint(ras.path & land & ~ras.road, "sidewalk_path")
    plan.paint(ras.road & land, "road")
    plan.occupied |= (ras.road | ras.rail) & land
    for r in pieces:
        if r.kind != "path":
            add_bridges(plan, r)
    plan.counts["road_km"] = round(sum(length(r.line) for r in pieces if SURFACE_CLASS[r.kind] == "road") / 1000, 3)
    return ras


# --------------------------------------------------------------------------- bridges

def _runs(flags: np.ndarray, max_gap: int = 2) -> list[tuple[int, int]]:
    """[start, end] index ranges of True runs, merging gaps of up to ``max_gap`` False."""
    idx = np.flatnonzero(flags)
    if len(idx) == 0:
        return []
    runs, s, e = [], idx[0], idx[0]
    for k in idx[1:]:
        if k - e <= max_gap + 1:
            e = k
        else:
            runs.append((s, e))
            s = e = k
    runs.append((s, e))
    return runs


def add_bridges(plan: SitePlan, road: Road, clearance: float = 4.5, ramp: float = 0.07) -> int:
    """Bridge decks wherever ``road`` crosses water: a closed swept section with parapets,
    ramping down to the terrain at both ends, on piers every ~25 m."""
    if len(road.line) < 2:
        return 0
    path = resample(road.line, 1.0)
    x, y = path[:, 0], path[:, 1]
    wet = plan.grid.lookup(plan.water, x, y) & plan.grid.inside(x, y)
    count = 0
    ground = plan.z(x, y)
    levels = plan.grid.lookup(np.nan_to_num(plan.water_level, nan=-1e9), x, y)
    for s0, s1 in _runs(wet):
        level = float(levels[s0 : s1 + 1].max())
        peak = max(level + clearance, ground[max(s0 - 1, 0)] + 0.1, ground[min(s1 + 1, len(path) - 1)] + 0.1)
        s = np.arange(len(path), dtype=float)
        z = peak - ramp * np.maximum(0, np.maximum(s0 - s, s - s1))
        on_deck = z > ground + 0.05
        on_deck[s0 : s1 + 1] = True
        a, b = s0, s1
        while a > 0 and on_deck[a - 1]:
            a -= 1
        while b < len(path) - 1 and on_deck[b + 1]:
            b += 1
        a, b = max(a - 2, 0), min(b + 2, len(path) - 1)  # overlap the road on both banks
        deck = np.column_stack([x[a : b + 1], y[a : b + 1], np.maximum(z[a : b + 1], ground[a : b + 1] + 0.05)])
        _bridge_mesh(plan, deck, road.width + 1.0, level, wet[a : b + 1], rail=road.kind == "rail")
        count += 1
    plan.counts["bridges"] += count
    return count


def _bridge_mesh(plan: SitePlan, deck: np.ndarray, width: float, level: float, wet: np.ndarray, rail: bool) -> None:
    h = 0.5 * width
    profile = np.array(
        [[-h, -1.2], [h, -1.2], [h, 1.0], [h - 0.4, 1.0], [h - 0.4, 0.0], [-h + 0.4, 0.0], [-h + 0.4, 1.0], [-h, 1.0]]
    )
    V, F = sweep(deck, profile)
    concrete = np.array([172, 168, 158.0])
    top = np.array([95, 88, 80.0]) if rail else np.array([78, 78, 82.0])
    surf = np.zeros(len(profile), bool)
    surf[[4, 5]] = True
    col = np.where(np.tile(surf, len(deck))[:, None], top, concrete)
    plan.parts.add(V, F, C["bridge"], col, grain=0.08)
    # Piers from the river bed to the deck underside, every ~25 m over water.
    idx = np.flatnonzero(wet)[::25]
    if len(idx):
        t = tangents(deck[:, :2])[idx]
        yaw = np.arctan2(t[:, 1], t[:, 0])
        height = deck[idx, 2] - 1.2 - (level - 3.0)
        pv, pf = box((1.6, width - 1.0, 1.0))
        pos = np.column_stack([deck[idx, :2], np.full(len(idx), level - 3.0)])
        scale = np.column_stack([np.ones(len(idx)), np.ones(len(idx)), np.maximum(height, 0.5)])
        V2, F2 = instance(pv, pf, pos, yaw, scale)
        plan.parts.add(V2, F2, C["bridge"], concrete * 0.9)
