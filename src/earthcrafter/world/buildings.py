"""Buildings: closed prisms over rectangle, L and U footprints, with flat, gable or hip
roofs. Roof faces are ``building_roof``; walls (and the buried floor that closes the
solid) are ``building_facade``. Walls are cut into horizontal bands so storeys read as
window rows and spandrels in the vertex colours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from earthcrafter.world.grid import points_in_polygon
from earthcrafter.world.plan import C, BuildingRecord, SitePlan
from earthcrafter.world.shapes import box, instance, polygon_area, triangulate_polygon

FACADES = np.array(
    [[205, 200, 190], [180, 170, 155], [150, 120, 100], [215, 210, 200], [120, 125, 130],
     [170, 160, 140], [195, 180, 160], [140, 140, 135], [225, 220, 210], [160, 100, 80]], float
)
GLASS = np.array([[60, 75, 90], [40, 55, 70], [80, 95, 105], [55, 65, 60], [95, 110, 120]], float)
FLAT_ROOFS = np.array([[150, 150, 148], [185, 185, 180], [120, 120, 118], [205, 205, 200], [95, 95, 98], [160, 150, 135]], float)
PITCHED_ROOFS = np.array([[120, 60, 50], [85, 80, 80], [60, 60, 65], [140, 100, 70], [105, 90, 75], [70, 85, 95], [150, 80, 60]], float)


@dataclass(frozen=True)
class Style:
    facade: np.ndarray
    glass: np.ndarray
    roof: np.ndarray
    floor_h: float = 3.2
    window_frac: float = 0.45  # share of each storey taken by the window band

    @staticmethod
    def draw(rng: np.random.Generator, pitched: bool, windows: bool = True) -> "Style":
        facade = FACADES[rng.integers(len(FACADES))] * rng.uniform(0.9, 1.08)
        glass = GLASS[rng.integers(len(GLASS))] if windows else facade * 0.8
        roofs = PITCHED_ROOFS if pitched else FLAT_ROOFS
        return Style(facade, glass, roofs[rng.integers(len(roofs))] * rng.uniform(0.9, 1.1),
                     floor_h=float(rng.uniform(3.0, 3.8)), window_frac=float(rng.uniform(0.3, 0.6) if windows else 0.0))


# --------------------------------------------------------------------------- footprints (local frame)

def footprint(shape: str, w: float, d: float, rng: np.random.Generator) -> np.ndarray:
    """CCW footprint in a local frame: x in [0, w] along the street, y in [0, d] away from it."""
    if shape == "rect":
        return np.array([[0, 0], [w, 0], [w, d], [0, d]], float)
    if shape == "L":  # rear-right corner cut away
        nw, nd = w * rng.uniform(0.35, 0.6), d * rng.uniform(0.35, 0.6)
        return np.array([[0, 0], [w, 0], [w, d - nd], [w - nw, d - nd], [w - nw, d], [0, d]], float)
    if shape == "U":  # courtyard open to the rear
        t = w * rng.uniform(0.25, 0.35)
        c = d * rng.uniform(0.3, 0.55)
        return np.array([[0, 0], [w, 0], [w, d], [w - t, d], [w - t, c], [t, c], [t, d], [0, d]], float)
    raise ValueError(f"unknown footprint shape {shape!r}")


def to_world(local: np.ndarray, origin: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Local (x along ``u``, y along ``u`` turned left) to world; keeps CCW order."""
    v = np.array([-u[1], u[0]])
    return origin + local[:, :1] * u + local[:, 1:2] * v


# --------------------------------------------------------------------------- meshes

def _walls(poly: np.ndarray, levels: np.ndarray, colors: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Wall quads for every polygon edge and every band ``[levels[k], levels[k+1]]``.

    ``colors [B, 3]`` is the colour of each band. Vertices are not shared between bands, so
    colours change sharply at band edges.
    """
    K, B = len(poly), len(levels) - 1
    p0, p1 = poly, np.roll(poly, -1, axis=0)
    zl, zh = levels[:-1], levels[1:]
    corners = np.empty((K, B, 4, 3))
    corners[:, :, 0, :2], corners[:, :, 1, :2] = p0[:, None], p1[:, None]
    corners[:, :, 2, :2], corners[:, :, 3, :2] = p1[:, None], p0[:, None]
    corners[:, :, 0, 2] = corners[:, :, 1, 2] = zl[None]
    corners[:, :, 2, 2] = corners[:, :, 3, 2] = zh[None]
    V = corners.reshape(-1, 3)
    base = np.arange(K * B)[:, None] * 4
    F = np.concatenate([base + [0, 1, 2], base + [0, 2, 3]])
    col = np.broadcast_to(colors[None, :, None, :], (K, B, 4, 3)).reshape(-1, 3)
    return V, F, col


def wall_levels(z_base: float, z_ground: float, z_top: float, style: Style) -> tuple[np.ndarray, np.ndarray]:
    """Band boundaries and band colours: plinth, then per storey spandrel + window band."""
    levels = [z_base]
    colors = []
    plinth = min(z_ground + 0.6, z_top - 0.1)
    if plinth > z_base + 1e-3:
        levels.append(plinth)
        colors.append(style.facade * 0.75)
    z = plinth
    if style.window_frac > 0:
        while z + style.floor_h <= z_top + 1e-6:
            sill = z + 0.5 * (1 - style.window_frac) * style.floor_h
            head = sill + style.window_frac * style.floor_h
            levels += [sill, head]
            colors += [style.facade, style.glass]
            z += style.floor_h
    if z_top > levels[-1] + 1e-3:
        levels.append(z_top)
        colors.append(style.facade)
    return np.array(levels), np.array(colors)


def add_prism_building(
    plan: SitePlan, poly: np.ndarray, z_base: float, z_ground: float, z_top: float, style: Style, kind: str,
    roof: str = "flat", ridge: float = 0.0,
) -> BuildingRecord:
    """Add one closed building. ``roof`` gable/hip needs a 4-corner (rectangular) footprint."""
    if polygon_area(poly) <= 0:
        raise ValueError("building footprint must be counter-clockwise")
    levels, band_col = wall_levels(z_base, z_ground, z_top, style)
    V, F, col = _walls(poly, levels, band_col)
    plan.parts.add(V, F, C["building_facade"], col, grain=0.05)
    cap = triangulate_polygon(poly)
    bottom = np.column_stack([poly, np.full(len(poly), z_base)])
    plan.parts.add(bottom, cap[:, ::-1], C["building_facade"], style.facade * 0.5)
    if roof == "flat":
        top = np.column_stack([poly, np.full(len(poly), z_top)])
        plan.parts.add(top, cap, C["building_roof"], style.roof, grain=0.08)
    else:
        _pitched_roof(plan, poly, z_top, ridge, style, hip=roof == "hip")
    rec = BuildingRecord(poly.copy(), z_base, z_top, roof, kind)
    plan.buildings.append(rec)
    plan.counts["buildings"] += 1
    return rec


def _pitched_roof(plan: SitePlan, poly: np.ndarray, z: float, ridge: float, style: Style, hip: bool) -> None:
    if len(poly) != 4:
        raise ValueError("pitched roofs need a rectangular footprint")
    if np.linalg.norm(poly[1] - poly[0]) < np.linalg.norm(poly[2] - poly[1]):
        poly = np.roll(poly, -1, axis=0)  # make edge 0-1 a long side
    p = np.column_stack([poly, np.full(4, z)])
    r0 = 0.5 * (p[3] + p[0])
    r1 = 0.5 * (p[1] + p[2])
    r0[2] = r1[2] = z + ridge
    if hip:
        along = (r1 - r0)[:2] / np.linalg.norm((r1 - r0)[:2])
        inset = min(0.5 * np.linalg.norm(poly[2] - poly[1]), 0.45 * np.linalg.norm((r1 - r0)[:2]))
        r0[:2] += inset * along
        r1[:2] -= inset * along
    V = np.concatenate([p, [r0, r1]])  # 0..3 eaves, 4 = r0, 5 = r1
    slopes = np.array([[0, 1, 5], [0, 5, 4], [2, 3, 4], [2, 4, 5]])
    ends = np.array([[1, 2, 5], [3, 0, 4]])
    if hip:
        plan.parts.add(V, np.concatenate([slopes, ends]), C["building_roof"], style.roof, grain=0.1)
    else:
        plan.parts.add(V, slopes, C["building_roof"], style.roof, grain=0.1)
        plan.parts.add(V, ends, C["building_facade"], np.tile(style.facade, (6, 1)))


def add_rooftop_units(plan: SitePlan, rng: np.random.Generator, poly: np.ndarray, z_roof: float, count: int) -> int:
    """HVAC boxes and stair huts on a flat roof (``other_manmade``); only where they fit inside."""
    lo, hi = poly.min(0), poly.max(0)
    placed = 0
    for _ in range(count * 3):
        if placed >= count:
            break
        size = rng.uniform([1.5, 1.5, 1.0], [4.5, 3.5, 2.8])
        c = rng.uniform(lo, hi)
        corners = c + np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * (0.5 * size[:2] + 0.8)
        if not points_in_polygon(corners, poly).all():
            continue
        V, F = box(size)
        V, F = instance(V, F, np.array([[c[0], c[1], z_roof - 0.05]]), np.array([0.0]))
        col = np.array([175, 175, 172.0]) * rng.uniform(0.85, 1.1)
        plan.parts.add(V, F, C["other_manmade"], col)
        placed += 1
    plan.counts["rooftop_units"] += placed
    return placed
