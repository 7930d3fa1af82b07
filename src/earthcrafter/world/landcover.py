"""Natural land cover from slope, relative altitude and moisture noise, and cultivated
fields for farmland."""

from __future__ import annotations

import numpy as np

from earthcrafter.world.plan import SitePlan
from earthcrafter.world.terrain import smoothstep, water_distance

CROPS = {  # name: (class, base colour, stripe period m, stripe amplitude)
    "corn": ("cropland", (72, 112, 48), 9.0, 0.10),
    "wheat": ("cropland", (198, 178, 112), 10.0, 0.08),
    "soy": ("cropland", (104, 146, 66), 8.0, 0.10),
    "young": ("cropland", (125, 150, 80), 8.0, 0.16),
    "harvested": ("cropland", (176, 152, 108), 14.0, 0.12),
    "hay": ("cropland", (150, 160, 90), 16.0, 0.10),
    "fallow": ("bare_soil", (138, 112, 84), 12.0, 0.12),
    "pasture": ("grass_lawn", (110, 138, 70), 0.0, 0.0),
}
CROP_P = np.array([0.2, 0.17, 0.17, 0.1, 0.1, 0.08, 0.1, 0.08])


def relative_height(plan: SitePlan) -> np.ndarray:
    """Rank of each cell's height within the site, in [0, 1]."""
    h = plan.grid.cell_mean(plan.H).ravel()
    rank = np.empty(len(h))
    rank[np.argsort(h, kind="stable")] = np.linspace(0, 1, len(h))
    return rank.reshape(plan.ground.shape)


def natural_cover(
    plan: SitePlan,
    *,
    shrub: float = 0.2,
    forest: float = 0.2,
    forest_density: float = 0.6,
    soil_slope: float = 28.0,
    rock_slope: float = 38.0,
    base: str = "grass_lawn",
    riparian: float = 0.0,
) -> None:
    """Assign land cells: ``base`` cover, patches of shrub (share ``shrub``) and woodland
    (share ``forest``, tree probability ``forest_density``), bare soil and rock on steep
    slopes, and an optional band of riparian trees near water."""
    land = plan.land()
    x, y = plan.grid.cell_xy()
    nz = plan.noise("cover")
    m = nz.fbm(x, y, 150, 4) + 0.35 * nz.fbm(x, y, 35, 3, offset=3)
    slope = plan.grid.slope_deg(plan.H)
    q_forest = np.quantile(m[land], 1 - forest) if land.any() and forest > 0 else np.inf
    q_shrub = np.quantile(m[land], 1 - forest - shrub) if land.any() and shrub > 0 else np.inf
    plan.paint(land, base)
    plan.paint(land & (m > q_shrub), "shrub")
    woods = land & (m > q_forest)
    plan.forest[woods] = forest_density * (0.5 + 0.5 * smoothstep(q_forest, q_forest + 0.15, m[woods]))
    plan.paint(woods, "shrub" if base != "sand_desert" else base)
    if riparian > 0 and plan.water.any():
        near = land & (water_distance(plan) < 25.0)
        plan.forest[near] = np.maximum(plan.forest[near], riparian)
    plan.paint(land & (slope > soil_slope), "bare_soil")
    rock = land & (slope > rock_slope)
    plan.paint(rock, "rock_cliff")
    plan.forest[rock] = 0.0
    plan.forest[land & (slope > soil_slope)] *= 0.4


def wetland_margins(plan: SitePlan, height_above: float = 0.5, width: float = 30.0) -> np.ndarray:
    """Low, wet land next to water becomes ``wetland``."""
    level = np.nanmax(plan.water_level) if plan.water.any() else -np.inf
    h = plan.grid.cell_mean(plan.H)
    x, y = plan.grid.cell_xy()
    wet = plan.land() & (water_distance(plan) < width) & (h < level + height_above + 0.5 * plan.noise("wet").fbm(x, y, 40, 3))
    plan.paint(wet, "wetland")
    return wet


def beaches(plan: SitePlan, width: float = 14.0, max_rise: float = 2.5, share: float = 1.0) -> np.ndarray:
    """Sand on low, gentle land within ``width`` m of water (on a noise-chosen ``share`` of the shore)."""
    level = plan.grid.cell_mean(plan.H)
    wl = np.nanmin(plan.water_level) if plan.water.any() else 0.0
    x, y = plan.grid.cell_xy()
    pick = plan.noise("beach").fbm(x, y, 120, 3) > np.quantile(plan.noise("beach").fbm(x, y, 120, 3), 1 - share) if share < 1 else True
    sand = plan.land() & (water_distance(plan) < width) & (level < wl + max_rise) & (plan.grid.slope_deg(plan.H) < 15) & pick
    plan.paint(sand, "sand_desert", tone=np.array([222, 205, 165.0]))
    plan.forest[sand] = 0.0
    return sand


def fields(plan: SitePlan, rng: np.random.Generator, angle: float, size: tuple[float, float], strips: float = 0.35) -> list[np.ndarray]:
    """Patchwork of crop fields on a rotated grid; some fields are split into strips and
    some carry a centre-pivot circle. Returns the field-boundary lines (for windbreaks)."""
    x, y = plan.grid.cell_xy()
    u = np.array([np.cos(angle), np.sin(angle)])
    v = np.array([-u[1], u[0]])
    pu, pv = x * u[0] + y * u[1], x * v[0] + y * v[1]
    fu, fv = rng.uniform(*size), rng.uniform(*size)
    ou, ov = rng.uniform(0, fu), rng.uniform(0, fv)
    iu, iv = np.floor((pu - ou) / fu).astype(int), np.floor((pv - ov) / fv).astype(int)
    land = plan.land()
    keys = np.unique(np.stack([iu[land], iv[land]], 1), axis=0) if land.any() else np.zeros((0, 2), int)
    names = list(CROPS)
    for a, b in keys:
        cell = land & (iu == a) & (iv == b)
        parts = [cell]
        if rng.random() < strips:  # strip cropping: split along the long axis
            k = int(rng.integers(2, 5))
            local = (pv - ov - b * fv) / fv
            parts = [cell & (local >= s / k) & (local < (s + 1) / k) for s in range(k)]
        for part in parts:
            crop = names[rng.choice(len(names), p=CROP_P)]
            cls, col, period, amp = CROPS[crop]
            tone = np.array(col, float) * rng.uniform(0.9, 1.1)
            stripe = (angle + (np.pi / 2 if rng.random() < 0.5 else 0.0), period, amp) if period else None
            plan.paint(part, cls, tone=tone, stripe=stripe)
        if rng.random() < 0.2 and fu > 150 and fv > 150:  # centre pivot
            cu, cv = ou + (a + 0.5) * fu, ov + (b + 0.5) * fv
            disc = cell & (np.hypot(pu - cu, pv - cv) < 0.48 * min(fu, fv))
            plan.paint(disc, "cropland", tone=np.array(CROPS["corn"][1], float) * rng.uniform(0.85, 1.15),
                       stripe=(rng.uniform(0, np.pi), 10.0, 0.08))
            plan.counts["centre_pivots"] += 1
    plan.counts["fields"] += len(keys)
    size_m = plan.grid.size
    lines = []
    for k in range(-3, int(size_m * 1.5 / fv) + 4):
        c = ov + k * fv
        p0 = c * v - 2 * size_m * u
        lines.append(np.array([p0, p0 + 4 * size_m * u]))
    for k in range(-3, int(size_m * 1.5 / fu) + 4):
        c = ou + k * fu
        p0 = c * u - 2 * size_m * v
        lines.append(np.array([p0, p0 + 4 * size_m * v]))
    return lines
