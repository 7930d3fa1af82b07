"""Terrain: per-biome height fields from noise, and water (lakes as level sets, rivers as
carved channels, sea below a coastline).

Water is stored per cell as a surface level (``plan.water_level``); :func:`settle_water`
flattens the terrain to that level so the water surface is part of the height field and
shores meet it without cracks.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from earthcrafter.world.paths import resample
from earthcrafter.world.plan import C, SitePlan


def smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


# --------------------------------------------------------------------------- relief per biome

def _farmland(p: SitePlan, x, y, rng) -> np.ndarray:
    n = p.noise("relief")
    return 6.0 * n.fbm(x, y, 500, 4) + 1.2 * n.fbm(x, y, 80, 3, offset=11)


def _hills(p: SitePlan, x, y, rng) -> np.ndarray:
    n = p.noise("relief")
    wx, wy = n.warp(x, y, 400, 120)
    amp = rng.uniform(35, 70)
    return amp * n.fbm(wx, wy, 420, 5) + 3.0 * n.fbm(x, y, 40, 3, offset=5)


def _mountains(p: SitePlan, x, y, rng) -> np.ndarray:
    n = p.noise("relief")
    wx, wy = n.warp(x, y, 600, 200)
    amp = rng.uniform(420, 700)
    scale = rng.uniform(900, 1300)
    return amp * n.ridged(wx, wy, scale, 7) + 40 * n.fbm(x, y, 250, 4, offset=3) + 4 * n.fbm(x, y, 25, 3, offset=9)


def _desert(p: SitePlan, x, y, rng) -> np.ndarray:
    n = p.noise("relief")
    theta = rng.uniform(0, np.pi)
    wavelength = rng.uniform(50, 110)
    wx, wy = n.warp(x, y, 200, 0.35 * wavelength)
    s = (wx * np.cos(theta) + wy * np.sin(theta)) / wavelength
    f = s - np.floor(s)
    # Asymmetric dune: long windward slope (75 %), short steep slip face.
    dune = np.where(f < 0.75, f / 0.75, (1.0 - f) / 0.25) ** 1.6
    strength = 0.4 + 0.6 * smoothstep(-0.4, 0.4, n.fbm(x, y, 300, 3, offset=1))
    h = 12 * n.fbm(x, y, 600, 4, offset=2) + rng.uniform(3, 9) * dune * strength
    if rng.random() < 0.6:  # mesas / rock outcrops: a terraced plateau with cliff edges
        m = n.fbm(x, y, 260, 4, offset=7)
        t = np.quantile(m, rng.uniform(0.6, 0.85))
        h = h + rng.uniform(15, 35) * smoothstep(t, t + 0.05, m)
    return h


def _lakes(p: SitePlan, x, y, rng) -> np.ndarray:
    n = p.noise("relief")
    size = p.grid.size
    cx, cy = rng.uniform(0.3, 0.7, 2) * size
    r = np.hypot(x - cx, y - cy) / (0.45 * size)
    return 18 * n.fbm(x, y, 350, 5) - 22 * np.exp(-(r**2)) + 1.5 * n.fbm(x, y, 40, 3, offset=4)


def _river(p: SitePlan, x, y, rng) -> np.ndarray:
    n = p.noise("relief")
    return 10 * n.fbm(x, y, 350, 5) + 1.0 * n.fbm(x, y, 40, 3, offset=4)


def _coast(p: SitePlan, x, y, rng) -> np.ndarray:
    n = p.noise("relief")
    size = p.grid.size
    theta = rng.uniform(0, 2 * np.pi)
    nrm = np.array([np.cos(theta), np.sin(theta)])  # points inland
    centre = 0.5 * size * np.ones(2)
    d = (x - centre[0]) * nrm[0] + (y - centre[1]) * nrm[1] + rng.uniform(0.05, 0.15) * size
    d = d + 35 * n.fbm(x, y, 260, 4, offset=1)
    if rng.random() < 0.35:  # cliffs
        h = rng.uniform(12, 30) * smoothstep(0.0, 14.0, d) + 0.04 * np.maximum(d - 14, 0)
    else:  # beach then dunes and a gentle rise
        h = 0.02 * d + 0.06 * np.maximum(d - 80, 0) + 2.0 * smoothstep(30, 60, d)
    h = h + 3.0 * n.fbm(x, y, 120, 4, offset=2) * smoothstep(10, 60, d)
    sea = np.minimum(d, 0.0)
    p.counts["coast_normal_deg"] = int(np.degrees(theta)) % 360
    return np.where(d < 0, -1.0 + 0.05 * sea, h)


def _wetland(p: SitePlan, x, y, rng) -> np.ndarray:
    n = p.noise("relief")
    return 1.6 * n.fbm(x, y, 150, 4) + 0.5 * n.fbm(x, y, 25, 3, offset=3)


def _forest(p: SitePlan, x, y, rng) -> np.ndarray:
    n = p.noise("relief")
    wx, wy = n.warp(x, y, 300, 80)
    return 25 * n.fbm(wx, wy, 350, 5) + 2.0 * n.fbm(x, y, 30, 3, offset=6)


def _suburb(p: SitePlan, x, y, rng) -> np.ndarray:
    return 8 * p.noise("relief").fbm(x, y, 500, 4)


def _downtown(p: SitePlan, x, y, rng) -> np.ndarray:
    return 3 * p.noise("relief").fbm(x, y, 600, 3)


def _industrial(p: SitePlan, x, y, rng) -> np.ndarray:
    return 2 * p.noise("relief").fbm(x, y, 600, 3)


RELIEF = {
    "farmland": (_farmland, (180, 320)),
    "hills": (_hills, (250, 600)),
    "mountains": (_mountains, (1500, 2400)),
    "desert": (_desert, (600, 1400)),
    "lakes": (_lakes, (300, 500)),
    "river": (_river, (80, 300)),
    "coast": (_coast, (0, 0)),
    "wetland": (_wetland, (2, 150)),
    "forest": (_forest, (300, 900)),
    "suburb": (_suburb, (50, 400)),
    "downtown": (_downtown, (5, 300)),
    "industrial": (_industrial, (5, 300)),
}


def shape_relief(plan: SitePlan) -> None:
    """Fill ``plan.H`` with the biome's height field (absolute metres above sea level)."""
    fn, (lo, hi) = RELIEF[plan.biome]
    rng = plan.rng("relief")
    x, y = plan.grid.vertex_xy()
    plan.base_elevation = float(rng.uniform(lo, hi)) if hi > lo else float(lo)
    plan.H = plan.base_elevation + fn(plan, x, y, rng)


# --------------------------------------------------------------------------- water

def distance_to_line(plan: SitePlan, line: np.ndarray, at: str = "vertex", exact_within: float = 40.0) -> np.ndarray:
    """Distance (m) from every vertex (or cell centre) to a polyline.

    A Euclidean distance transform of the pixels the line passes through (on a padded grid,
    so parts of the line just outside the site count) gives every point's distance to about
    a cell; points within ``exact_within`` metres are then refined exactly against the
    line's segments (a bounded KD-tree query, fast near the line, where precision matters).
    """
    c = plan.grid.cell
    m = plan.grid.n + 1 if at == "vertex" else plan.grid.n
    off = 0.0 if at == "vertex" else 0.5 * c
    pad = 16
    samples = resample(line, 0.25 * c, keep_vertices=True)[:, :2]
    x, y = plan.grid.vertex_xy() if at == "vertex" else plan.grid.cell_xy()
    pts = np.column_stack([x.ravel(), y.ravel()])
    gi = np.round((samples[:, 1] - off) / c).astype(np.int64) + pad
    gj = np.round((samples[:, 0] - off) / c).astype(np.int64) + pad
    size = m + 2 * pad
    box = (gi >= 0) & (gj >= 0) & (gi < size) & (gj < size)
    if box.any():
        free = np.ones((size, size), bool)
        free[gi[box], gj[box]] = False
        approx = (ndimage.distance_transform_edt(free) * c)[pad : pad + m, pad : pad + m].ravel()
    else:
        approx = np.full(len(pts), np.inf)
    near = approx < exact_within
    if not box.any():
        near[:] = True
    out = approx.copy()
    tree = cKDTree(samples)
    # The three nearest samples, then the segments on both sides of each: the foot point of
    # the true nearest segment is among them.
    dq, iq = tree.query(pts[near], k=3, distance_upper_bound=exact_within + 2 * c if box.any() else np.inf)
    found = iq[:, 0] < len(samples)
    idx = np.flatnonzero(near)[found]
    best = dq[found, 0]
    for col in range(3):
        k = np.minimum(iq[found, col], len(samples) - 1)
        for a in (np.clip(k - 1, 0, len(samples) - 2), np.clip(k, 0, len(samples) - 2)):
            p0, seg = samples[a], samples[a + 1] - samples[a]
            t = np.clip(np.einsum("ij,ij->i", pts[idx] - p0, seg) / np.maximum(np.einsum("ij,ij->i", seg, seg), 1e-12), 0, 1)
            best = np.minimum(best, np.linalg.norm(pts[idx] - p0 - t[:, None] * seg, axis=1))
    out[idx] = best
    return out.reshape(x.shape)


def carve_river(
    plan: SitePlan, line: np.ndarray, width: float, valley_slope: float = 0.0, bank_slope: float = 0.12
) -> float:
    """Carve a channel of ``width`` metres along ``line`` and fill it with water.

    The water level sits just below the lowest terrain along the line, so the channel is
    continuous; banks rise at ``bank_slope`` (plus an optional valley slope). Returns the level.
    """
    d = distance_to_line(plan, line)
    if valley_slope > 0:
        plan.H = plan.H + valley_slope * d
    pts = resample(line, plan.grid.cell)
    inside = plan.grid.inside(pts[:, 0], pts[:, 1])
    along = plan.z(pts[inside, 0], pts[inside, 1]) if inside.any() else plan.H.ravel()
    level = float(np.min(along)) - 0.4
    half = 0.5 * width
    bank = level + 0.5 + bank_slope * np.maximum(d - half, 0.0)
    bed = level - 1.5 + 1.5 * np.clip(d / max(half, 1e-6), 0, 1) ** 2
    plan.H = np.minimum(plan.H, np.where(d <= half, bed, bank))
    dc = distance_to_line(plan, line, at="cell")
    flood_below(plan, level, region=dc <= half + 2 * plan.grid.cell)
    plan.counts["rivers"] += 1
    return level


def dig_pond(plan: SitePlan, centre: np.ndarray, radius: float, depth: float = 3.0) -> float:
    """A round depression filled with water; returns its level."""
    x, y = plan.grid.vertex_xy()
    noise = plan.noise("pond").fbm(x, y, radius, 3)
    r = np.hypot(x - centre[0], y - centre[1]) / radius * (1 + 0.25 * noise)
    rim = float(plan.z(np.array([centre[0]]), np.array([centre[1]]))[0])
    bowl = rim - depth * np.exp(-(r**2) * 2.0)
    plan.H = np.where(r < 1.6, np.minimum(plan.H, np.maximum(bowl, rim - depth)), plan.H)
    level = rim - 0.45 * depth
    xc, yc = plan.grid.cell_xy()
    region = np.hypot(xc - centre[0], yc - centre[1]) < 1.7 * radius
    flood_below(plan, level, region=region)
    plan.counts["ponds"] += 1
    return level


def flood_below(plan: SitePlan, level: float, region: np.ndarray | None = None, kind: str = "river_lake") -> int:
    """Cover with water at ``level`` every cell (inside ``region``) whose mean height lies below it."""
    wet = plan.grid.cell_mean(plan.H) < level
    if region is not None:
        wet &= region
    wl = plan.water_level
    wl[wet] = np.where(np.isfinite(wl[wet]), np.minimum(wl[wet], level), level)
    plan.ground[wet] = C[kind]
    plan.tone[wet] = np.nan
    return int(wet.sum())


def add_sea(plan: SitePlan, level: float = 0.0) -> None:
    """Cells below ``level`` connected to the site border become sea; enclosed ones lagoons."""
    below = plan.grid.cell_mean(plan.H) < level
    lab, num = ndimage.label(below)
    border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    sea = np.isin(lab, border[border > 0])
    flood_below(plan, level, region=sea, kind="sea")
    flood_below(plan, level, region=below & ~sea, kind="river_lake")


def settle_water(plan: SitePlan) -> None:
    """Flatten the corners of water cells to the water level (lowest adjacent level wins)."""
    wl = plan.water_level
    n = plan.grid.n
    corner = np.full((n + 1, n + 1), np.inf)
    filled = np.where(np.isfinite(wl), wl, np.inf)
    for di in (0, 1):
        for dj in (0, 1):
            view = corner[di : di + n, dj : dj + n]
            np.minimum(view, filled, out=view)
    wet = np.isfinite(corner)
    plan.H[wet] = corner[wet]


def water_distance(plan: SitePlan) -> np.ndarray:
    """Distance (m) from every cell to the nearest water cell (inf-free: large if no water)."""
    if not plan.water.any():
        return np.full(plan.ground.shape, 1e6)
    return ndimage.distance_transform_edt(~plan.water) * plan.grid.cell


def level_cells(plan: SitePlan, cells: np.ndarray, sigma_m: float) -> None:
    """Smooth the terrain under ``cells`` (roads, yards) so they are flat across."""
    if not cells.any():
        return
    smooth = ndimage.gaussian_filter(plan.H, sigma=max(sigma_m / plan.grid.cell, 0.5), mode="nearest")
    verts = plan.grid.cell_corner_mask(cells) & ~plan.grid.cell_corner_mask(plan.water)
    plan.H[verts] = smooth[verts]
