"""Blocks and lots: the land between roads split into parcels, each with a local frame
facing its street, and a footprint fitter that only accepts buildings lying wholly inside
their parcel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from earthcrafter.world.buildings import to_world
from earthcrafter.world.grid import points_in_polygon
from earthcrafter.world.plan import C, SitePlan
from earthcrafter.world.roads import RoadRaster

NOT_BUILDABLE = [C[k] for k in ("road", "sidewalk_path", "railway", "river_lake", "sea", "parking_paved")]


@dataclass
class Lot:
    id: int
    block: int
    rows: np.ndarray  # cell rows
    cols: np.ndarray  # cell columns
    centroid: np.ndarray  # world xy
    u: np.ndarray  # unit vector along the street frontage
    origin: np.ndarray  # world xy of the local (0, 0): the lot's front-left corner
    width: float  # along u
    depth: float  # away from the street
    road_kind: str  # kind of the nearest road
    road_dist: float  # distance from the lot front to that road's centreline

    @property
    def area(self) -> float:
        return float(len(self.rows))

    @property
    def v(self) -> np.ndarray:
        return np.array([-self.u[1], self.u[0]])

    def world(self, local: np.ndarray) -> np.ndarray:
        return to_world(np.asarray(local, float), self.origin, self.u)

    def mask(self, n: int) -> np.ndarray:
        m = np.zeros((n, n), bool)
        m[self.rows, self.cols] = True
        return m


def buildable(plan: SitePlan) -> np.ndarray:
    return plan.land() & ~plan.occupied & ~np.isin(plan.ground, NOT_BUILDABLE)


def subdivide(
    plan: SitePlan,
    ras: RoadRaster,
    rng: np.random.Generator,
    *,
    frontage: tuple[float, float],
    depth: float,
    min_block_m2: float = 400.0,
    min_lot_m2: float = 120.0,
) -> tuple[list[Lot], np.ndarray]:
    """Split every block (connected buildable land) into rows of about ``depth`` metres
    along its long axis, and rows into lots of random ``frontage``. Returns lots and a lot-id
    raster (0 = no lot)."""
    c = plan.grid.cell
    n = plan.grid.n
    lab, nb = ndimage.label(buildable(plan))
    lot_raster = np.zeros((n, n), np.int32)
    xc, yc = plan.grid.cell_xy()
    next_id = 1
    axes: dict[int, np.ndarray] = {}
    for b, sl in enumerate(ndimage.find_objects(lab), start=1):
        if sl is None:
            continue
        rr, cc = np.nonzero(lab[sl] == b)
        rr, cc = rr + sl[0].start, cc + sl[1].start
        if len(rr) * c * c < min_block_m2:
            plan.skipped["blocks_too_small"] += 1
            continue
        xy = np.column_stack([xc[rr, cc], yc[rr, cc]])
        mean = xy.mean(0)
        cov = np.cov((xy - mean).T) if len(xy) > 2 else np.eye(2)
        w, vec = np.linalg.eigh(cov)
        major, minor = vec[:, 1], vec[:, 0]
        s, t = (xy - mean) @ major, (xy - mean) @ minor
        extent_t = t.max() - t.min() + c
        n_rows = max(1, int(round(extent_t / depth)))
        row = np.minimum(((t - t.min()) / (extent_t / n_rows)).astype(int), n_rows - 1)
        for r in range(n_rows):
            sel = row == r
            if not sel.any():
                continue
            s0, s1 = s[sel].min(), s[sel].max() + c
            cuts = [s0]
            while cuts[-1] < s1:
                cuts.append(cuts[-1] + rng.uniform(*frontage))
            if len(cuts) > 2 and s1 - cuts[-2] < 0.5 * frontage[0]:
                cuts.pop(-2)  # fold a thin remainder into the last lot
            k = np.clip(np.searchsorted(cuts, s[sel], side="right") - 1, 0, len(cuts) - 2)
            ids = next_id + k
            lot_raster[rr[sel], cc[sel]] = ids
            for lid in range(next_id, next_id + len(cuts) - 1):
                axes[lid] = major
            next_id += len(cuts) - 1
    lots = []
    for lid, sl in enumerate(ndimage.find_objects(lot_raster), start=1):
        if sl is None:
            continue
        rr, cc = np.nonzero(lot_raster[sl] == lid)
        rr, cc = rr + sl[0].start, cc + sl[1].start
        if len(rr) * c * c < min_lot_m2:
            lot_raster[rr, cc] = 0
            plan.skipped["lots_too_small"] += 1
            continue
        lots.append(_lot_frame(plan, ras, lid, int(lab[rr[0], cc[0]]), rr, cc, axes[lid]))
    return lots, lot_raster


def _lot_frame(plan: SitePlan, ras: RoadRaster, lid: int, block: int, rr: np.ndarray, cc: np.ndarray,
               major: np.ndarray) -> Lot:
    """Local frame of a lot: ``u`` runs along the street (the nearest road's direction when it
    roughly follows the block's long axis, else that axis), ``v`` points away from the street."""
    c = plan.grid.cell
    xc, yc = plan.grid.cell_xy()
    xy = np.column_stack([xc[rr, cc], yc[rr, cc]])
    centroid = xy.mean(0)
    near = np.argmin(ras.dist[rr, cc])
    u = ras.tangent[rr[near], cc[near]].astype(float)
    u /= max(np.linalg.norm(u), 1e-9)
    if abs(u @ major) < np.cos(np.radians(30)):  # a side street: keep the strip's orientation
        u = major.astype(float)
    elif u @ major < 0:
        u = -u
    v = np.array([-u[1], u[0]])
    # v must point away from the street: farther cells have larger road distance.
    pv = (xy - centroid) @ v
    d = ras.dist[rr, cc]
    if np.mean((pv - pv.mean()) * (d - d.mean())) < 0:
        u, v = -u, -v
        pv = -pv
    pu = (xy - centroid) @ u
    u0, v0 = pu.min() - 0.5 * c, pv.min() - 0.5 * c
    origin = centroid + u0 * u + v0 * v
    return Lot(
        id=lid, block=block, rows=rr, cols=cc, centroid=centroid, u=u, origin=origin,
        width=float(pu.max() - pu.min() + c), depth=float(pv.max() - pv.min() + c),
        road_kind=str(ras.kind[rr[near], cc[near]]), road_dist=float(ras.dist[rr[near], cc[near]]),
    )


def lot_allowed(plan: SitePlan, lot_raster: np.ndarray, lot: Lot) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Predicate: points inside this lot and not yet occupied."""
    def ok(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        i, j = plan.grid.cell_of(x, y)
        return (lot_raster[i, j] == lot.id) & ~plan.occupied[i, j] & plan.grid.inside(x, y)
    return ok


def free_allowed(plan: SitePlan) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Predicate: points on buildable land that is not yet occupied."""
    mask = buildable(plan)
    def ok(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        i, j = plan.grid.cell_of(x, y)
        return mask[i, j] & ~plan.occupied[i, j] & plan.grid.inside(x, y)
    return ok


def rect_fits(plan: SitePlan, allowed, origin: np.ndarray, u: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> bool:
    """True when the local rectangle ``[lo, hi]`` (frame ``origin``, ``u``) lies on allowed cells,
    checked on a half-cell sample grid including the edges."""
    step = 0.5 * plan.grid.cell
    gx = np.linspace(lo[0], hi[0], max(2, int(np.ceil((hi[0] - lo[0]) / step)) + 1))
    gy = np.linspace(lo[1], hi[1], max(2, int(np.ceil((hi[1] - lo[1]) / step)) + 1))
    X, Y = np.meshgrid(gx, gy)
    pts = to_world(np.column_stack([X.ravel(), Y.ravel()]), origin, u)
    return bool(allowed(pts[:, 0], pts[:, 1]).all())


def occupy(plan: SitePlan, poly: np.ndarray, dilate_m: float = 0.0) -> None:
    """Mark cells under a polygon as occupied: cells whose centre it covers, cells holding
    its corners, then (optionally) a dilation by ``dilate_m``. Works in a local window."""
    n, c = plan.grid.n, plan.grid.cell
    k = int(round(dilate_m / c)) if dilate_m > 0 else 0
    lo = np.floor(poly.min(0) / c).astype(int) - k - 1
    hi = np.ceil(poly.max(0) / c).astype(int) + k + 1
    j0, i0 = np.clip(lo, 0, n)
    j1, i1 = np.clip(hi, 0, n)
    if i1 <= i0 or j1 <= j0:
        return
    X, Y = np.meshgrid((np.arange(j0, j1) + 0.5) * c, (np.arange(i0, i1) + 0.5) * c)
    m = points_in_polygon(np.column_stack([X.ravel(), Y.ravel()]), poly).reshape(X.shape)
    ci, cj = plan.grid.cell_of(poly[:, 0], poly[:, 1])
    ok = (ci >= i0) & (ci < i1) & (cj >= j0) & (cj < j1)
    m[ci[ok] - i0, cj[ok] - j0] = True
    if k:
        m = ndimage.binary_dilation(m, iterations=k)
    plan.occupied[i0:i1, j0:j1] |= m


def paint_rect(plan: SitePlan, origin, u, lo, hi, cls: str, within: np.ndarray | None = None, tone=None, stripe=None) -> np.ndarray:
    """Paint the cells whose centres lie in a local rectangle (optionally only ``within`` cells)."""
    poly = to_world(np.array([[lo[0], lo[1]], [hi[0], lo[1]], [hi[0], hi[1]], [lo[0], hi[1]]]), origin, u)
    m = plan.grid.rasterize_polygon(poly)
    if within is not None:
        m &= within
    m &= plan.land()
    plan.paint(m, cls, tone=tone, stripe=stripe)
    return m


def inner_rect(plan: SitePlan, allowed, origin: np.ndarray, u: np.ndarray, width: float, depth: float) -> tuple[np.ndarray, np.ndarray] | None:
    """A large allowed rectangle inside the local box ``[0, width] x [0, depth]``.

    Samples the box every half cell, then greedily trims whichever side holds the most
    disallowed samples until none are left (2-D prefix sums keep each step O(1)).
    Returns local ``(lo, hi)`` corners, or None when nothing is left.
    """
    step = 0.5 * plan.grid.cell
    xs = np.arange(0.25 * step, width, step)
    ys = np.arange(0.25 * step, depth, step)
    if len(xs) < 2 or len(ys) < 2:
        return None
    X, Y = np.meshgrid(xs, ys)
    pts = to_world(np.column_stack([X.ravel(), Y.ravel()]), origin, u)
    bad = (~allowed(pts[:, 0], pts[:, 1])).reshape(X.shape).astype(np.int64)
    S = np.zeros((bad.shape[0] + 1, bad.shape[1] + 1), np.int64)
    S[1:, 1:] = bad.cumsum(0).cumsum(1)

    def count(r0, r1, c0, c1):  # inclusive ranges
        return S[r1 + 1, c1 + 1] - S[r0, c1 + 1] - S[r1 + 1, c0] + S[r0, c0]

    r0, r1, c0, c1 = 0, bad.shape[0] - 1, 0, bad.shape[1] - 1
    while r0 <= r1 and c0 <= c1 and count(r0, r1, c0, c1) > 0:
        sides = (
            count(r0, r0, c0, c1) / (c1 - c0 + 1),
            count(r1, r1, c0, c1) / (c1 - c0 + 1),
            count(r0, r1, c0, c0) / (r1 - r0 + 1),
            count(r0, r1, c1, c1) / (r1 - r0 + 1),
        )
        k = int(np.argmax(sides))
        if k == 0:
            r0 += 1
        elif k == 1:
            r1 -= 1
        elif k == 2:
            c0 += 1
        else:
            c1 -= 1
    if r0 > r1 or c0 > c1:
        return None
    return np.array([xs[c0], ys[r0]]), np.array([xs[c1], ys[r1]])


def merge_block(plan: SitePlan, ras: RoadRaster, lots: list[Lot], lot_raster: np.ndarray, block: int) -> tuple[list[Lot], Lot]:
    """Merge every lot of ``block`` into one lot (for parks, schools, big plots)."""
    members = [l for l in lots if l.block == block]
    keep = [l for l in lots if l.block != block]
    rr = np.concatenate([l.rows for l in members])
    cc = np.concatenate([l.cols for l in members])
    lid = members[0].id
    lot_raster[rr, cc] = lid
    # Orient along the block's long axis (the first member's frame runs along it).
    merged = _lot_frame(plan, ras, lid, block, rr, cc, members[0].u)
    return keep + [merged], merged
