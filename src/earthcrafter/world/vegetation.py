"""Trees and bushes as low-poly 3-D solids, scattered by density rasters.

Broadleaf crowns are jittered icosahedra, conifers two stacked cones; both stand on a
square trunk. All faces are ``tree`` (or ``shrub`` for bushes). Everything is built for a
whole batch of plants at once (template instancing), so forests of 10^4 trees stay fast.
"""

from __future__ import annotations

import numpy as np

from earthcrafter.world.plan import C, SitePlan
from earthcrafter.world.shapes import cone, frustum, icosahedron, instance

_ICO_V, _ICO_F = icosahedron()
_TRUNK_V, _TRUNK_F = frustum(0.5, 0.35, 1.0)
_CONE_A = cone(7, 1.0, 0.62, 0.0)
_CONE_B = cone(7, 0.72, 0.58, 0.42)
_CONE_V = np.concatenate([_CONE_A[0], _CONE_B[0]])
_CONE_F = np.concatenate([_CONE_A[1], _CONE_B[1] + len(_CONE_A[0])])

LEAF = np.array([[62, 92, 45], [75, 105, 50], [55, 85, 48], [88, 112, 58], [70, 95, 40], [95, 105, 55]], float)
NEEDLE = np.array([[38, 62, 42], [45, 70, 45], [35, 55, 40], [52, 75, 50]], float)
BARK = np.array([95, 75, 55.0])


def jittered_points(plan: SitePlan, rng: np.random.Generator, spacing: float, prob: np.ndarray) -> np.ndarray:
    """Blue-noise-like points: one candidate per ``spacing`` square, jittered, kept with the
    probability of the cell it falls in (``prob [n, n]`` in [0, 1])."""
    size = plan.grid.size
    k = int(np.ceil(size / spacing))
    gx, gy = np.meshgrid((np.arange(k) + 0.5) * spacing, (np.arange(k) + 0.5) * spacing)
    pts = np.column_stack([gx.ravel(), gy.ravel()]) + rng.uniform(-0.45, 0.45, (k * k, 2)) * spacing
    keep_draw = rng.random(len(pts))
    pts = np.clip(pts, 0.01, size - 0.01)
    p = plan.grid.lookup(prob, pts[:, 0], pts[:, 1])
    return pts[keep_draw < p]


_RING = np.array([[0.0, 0.0]] + [[np.cos(a), np.sin(a)] for a in np.linspace(0, 2 * np.pi, 8, endpoint=False)])


def crown_blocked(plan: SitePlan, blocked: np.ndarray, xy: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """True where a disc (centre and 8 rim points, plus half radius ring) touches a ``blocked`` cell."""
    hit = np.zeros(len(xy), bool)
    for scale in (1.0, 0.5):
        pts = xy[:, None, :] + scale * radius[:, None, None] * _RING[None]
        hit |= plan.grid.lookup(blocked, pts[..., 0], pts[..., 1]).any(axis=1)
    return hit


def add_trees(
    plan: SitePlan, rng: np.random.Generator, xy: np.ndarray, *, conifer: float = 0.0,
    height: tuple[float, float] = (7.0, 16.0), avoid: np.ndarray | None = None,
) -> int:
    """Trees at ``xy [N, 2]``; ``conifer`` is the share of conifers. Trees whose crown would
    touch an ``avoid`` cell (buildings, by default every occupied cell) are skipped and counted."""
    if len(xy) == 0:
        return 0
    xy = np.asarray(xy, float)
    h = rng.uniform(*height, len(xy))
    is_con = rng.random(len(xy)) < conifer
    radius = np.where(is_con, rng.uniform(0.18, 0.26, len(xy)) * h, rng.uniform(0.25, 0.38, len(xy)) * h)
    radius = np.clip(radius, 1.0, 7.0)
    blocked = plan.occupied if avoid is None else avoid
    ok = ~crown_blocked(plan, blocked, xy, np.where(is_con, 0.6, 0.8) * radius) & plan.grid.lookup(plan.land(), xy[:, 0], xy[:, 1])
    plan.skipped["trees_no_room"] += int((~ok).sum())
    xy, h, is_con, radius = xy[ok], h[ok], is_con[ok], radius[ok]
    if len(xy) == 0:
        return 0
    z = plan.z(xy[:, 0], xy[:, 1])
    yaw = rng.uniform(0, 2 * np.pi, len(xy))
    _broadleaf(plan, rng, xy[~is_con], z[~is_con], h[~is_con], radius[~is_con], yaw[~is_con])
    _conifer(plan, rng, xy[is_con], z[is_con], h[is_con], radius[is_con], yaw[is_con])
    # Trunks for all.
    trunk_h = np.where(is_con, 0.35 * h, 0.55 * h)
    tw = np.clip(0.05 * h, 0.2, 0.6)
    V, F = instance(_TRUNK_V, _TRUNK_F, np.column_stack([xy, z - 0.3]), yaw, np.column_stack([tw, tw, trunk_h + 0.3]))
    plan.parts.add(V, F, C["tree"], BARK)
    plan.counts["trees"] += len(xy)
    return len(xy)


def _crown_colors(plan: SitePlan, rng, V: np.ndarray, base: np.ndarray, per: int, zc: np.ndarray, rv: np.ndarray) -> np.ndarray:
    base = np.repeat(base, per, axis=0)
    rel = (V[:, 2] - np.repeat(zc, per)) / np.repeat(rv, per)  # -1 (bottom) .. 1 (top)
    light = 0.78 + 0.22 * (rel + 1) / 2  # self-shadowed underside
    return base * light[:, None]


def _broadleaf(plan, rng, xy, z, h, r, yaw) -> None:
    N = len(xy)
    if N == 0:
        return
    rv = 0.42 * h * rng.uniform(0.85, 1.1, N)
    zc = z + h - rv
    V, F = instance(_ICO_V, _ICO_F, np.column_stack([xy, zc]), yaw, np.column_stack([r, r, rv]))
    V = V * 1.0
    jitter = 1 + 0.16 * rng.uniform(-1, 1, (N * len(_ICO_V), 1))
    centre = np.repeat(np.column_stack([xy, zc]), len(_ICO_V), axis=0)
    V = centre + (V - centre) * jitter
    base = LEAF[rng.integers(len(LEAF), size=N)] * rng.uniform(0.85, 1.15, (N, 1))
    plan.parts.add(V, F, C["tree"], _crown_colors(plan, rng, V, base, len(_ICO_V), zc, rv), grain=0.12)


def _conifer(plan, rng, xy, z, h, r, yaw) -> None:
    N = len(xy)
    if N == 0:
        return
    z0 = z + 0.25 * h
    V, F = instance(_CONE_V, _CONE_F, np.column_stack([xy, z0]), yaw, np.column_stack([r, r, 0.75 * h]))
    base = NEEDLE[rng.integers(len(NEEDLE), size=N)] * rng.uniform(0.85, 1.15, (N, 1))
    half = 0.375 * h
    plan.parts.add(V, F, C["tree"], _crown_colors(plan, rng, V, base, len(_CONE_V), z0 + half, half), grain=0.12)


def add_bushes(plan: SitePlan, rng: np.random.Generator, xy: np.ndarray, size: tuple[float, float] = (0.8, 2.2)) -> int:
    """Low shrubs: squashed icosahedra sunk half into the ground (class ``shrub``)."""
    if len(xy) == 0:
        return 0
    ok = plan.grid.lookup(~plan.occupied & plan.land(), xy[:, 0], xy[:, 1])
    plan.skipped["bushes_blocked"] += int((~ok).sum())
    xy = xy[ok]
    N = len(xy)
    if N == 0:
        return 0
    r = rng.uniform(*size, N)
    z = plan.z(xy[:, 0], xy[:, 1])
    V, F = instance(_ICO_V, _ICO_F, np.column_stack([xy, z]), rng.uniform(0, 6.3, N), np.column_stack([r, r * rng.uniform(0.7, 1.0, N), 0.7 * r]))
    base = np.array([85, 100, 60.0]) * rng.uniform(0.75, 1.15, (N, 1))
    plan.parts.add(V, F, C["shrub"], _crown_colors(plan, rng, V, base, len(_ICO_V), z, 0.7 * r), grain=0.12)
    plan.counts["bushes"] += N
    return N


def scatter_forest(plan: SitePlan, *, spacing: float = 6.0, conifer: float = 0.2, height=(8.0, 20.0)) -> int:
    """Trees wherever ``plan.forest`` > 0 (probability per ``spacing`` slot, scaled by tree_density)."""
    rng = plan.rng("forest")
    prob = np.clip(plan.forest * plan.config.tree_density, 0, 1)
    prob = np.where(plan.land() & ~plan.occupied, prob, 0.0)
    return add_trees(plan, rng, jittered_points(plan, rng, spacing, prob), conifer=conifer, height=height)
