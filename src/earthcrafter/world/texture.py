"""Procedural ground colours: per-class albedo modulated by multi-scale noise, stripes
(crop rows, mowing patterns, parking bays), rock strata and water depth tints.

Colours are evaluated at the four corners of every cell. Noise depends only on position,
so two neighbouring cells of one class agree along their shared edge (continuous texture)
while class boundaries stay sharp.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from earthcrafter.semantics import NUM_CLASSES
from earthcrafter.world.plan import C, SitePlan

_ALBEDO = {
    "grass_lawn": ((102, 132, 66), 0.13),
    "shrub": ((90, 102, 62), 0.2),
    "cropland": ((150, 150, 80), 0.06),
    "bare_soil": ((142, 118, 88), 0.12),
    "sand_desert": ((214, 192, 150), 0.07),
    "rock_cliff": ((128, 122, 112), 0.16),
    "snow_ice": ((238, 240, 246), 0.035),
    "river_lake": ((52, 82, 96), 0.04),
    "sea": ((30, 62, 92), 0.04),
    "wetland": ((92, 106, 74), 0.16),
    "road": ((80, 80, 84), 0.07),
    "parking_paved": ((112, 112, 114), 0.06),
    "sidewalk_path": ((182, 176, 166), 0.05),
    "railway": ((116, 104, 92), 0.16),
    "sports_field": ((72, 140, 70), 0.04),
    "construction_site": ((165, 135, 100), 0.15),
    "swimming_pool": ((70, 175, 205), 0.03),
}
ALBEDO = np.full((NUM_CLASSES, 3), 128.0)
AMPLITUDE = np.full(NUM_CLASSES, 0.08)
for _name, (_rgb, _amp) in _ALBEDO.items():
    ALBEDO[C[_name]] = _rgb
    AMPLITUDE[C[_name]] = _amp

SHALLOW = {"river_lake": np.array([78, 110, 104.0]), "sea": np.array([62, 120, 130.0])}


def ground_colors(plan: SitePlan, cx: np.ndarray, cy: np.ndarray, cz: np.ndarray, corner_ij: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """RGB (float, 0-255) for cell corners.

    ``cx, cy, cz`` are ``[n, n, 4]`` corner positions; ``corner_ij`` the vertex-grid indices
    of those corners, used to look up per-vertex noise evaluated once on the grid.
    """
    g = plan.ground
    base = ALBEDO[g]
    tone = plan.tone
    has_tone = np.isfinite(tone[..., 0])
    base = np.where(has_tone[..., None], tone, base)[:, :, None, :]  # [n, n, 1, 3]
    amp = AMPLITUDE[g][:, :, None]

    vx, vy = plan.grid.vertex_xy()
    nz = plan.noise("texture")
    detail = 0.6 * nz.fbm(vx, vy, 22, 3) + 0.4 * nz.fbm(vx, vy, 4, 2, offset=1)
    region = 1 + 0.07 * nz.fbm(vx, vy, 300, 3, offset=2)
    hue = np.stack([nz.fbm(vx, vy, 60, 2, offset=3 + k) for k in range(3)], -1)
    ci, cj = corner_ij
    shade = (1 + amp * detail[ci, cj]) * region[ci, cj]
    col = base * shade[..., None] + 6.0 * hue[ci, cj]

    # Stripes: crops, mowing patterns, parking bays.
    ang, period, samp = plan.stripe[..., 0][..., None], plan.stripe[..., 1][..., None], plan.stripe[..., 2][..., None]
    striped = period > 0
    if striped.any():
        phase = (cx * np.cos(ang) + cy * np.sin(ang)) / np.where(striped, period, 1.0)
        col *= np.where(striped, 1 + samp * np.sin(2 * np.pi * phase), 1.0)[..., None]

    # Rock strata: bands in height, bent by noise.
    rock = (g == C["rock_cliff"])[..., None] & np.ones(4, bool)
    if rock.any():
        strata = 1 + 0.06 * np.sin(cz / 2.7 + 2.0 * detail[ci, cj])
        col = np.where(rock[..., None], col * strata[..., None], col)

    # Water: lighter and greener near the shore, darker in open water.
    for name, shallow in SHALLOW.items():
        wet = g == C[name]
        if not wet.any():
            continue
        vland = ~plan.grid.cell_corner_mask(wet) | plan.grid.cell_corner_mask(~plan.water)
        depth = ndimage.distance_transform_edt(~vland) * plan.grid.cell
        t = np.clip(depth / (60.0 if name == "sea" else 25.0), 0.0, 1.0)[ci, cj][..., None]
        mix = shallow * (1 - t) + ALBEDO[C[name]] * t
        col = np.where(wet[:, :, None, None], mix * (1 + 0.05 * detail[ci, cj])[..., None], col)

    # Wetland: a mottle of open water and reeds.
    marsh = g == C["wetland"]
    if marsh.any():
        fine = nz.fbm(vx, vy, 9, 3, offset=9)[ci, cj]
        pools = np.clip((fine - 0.1) * 4.0, 0.0, 1.0)[..., None]
        mix = col * (1 - pools) + np.array([60, 80, 80.0]) * pools
        col = np.where(marsh[:, :, None, None], mix, col)
    return np.clip(col, 0, 255)
