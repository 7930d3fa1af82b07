"""Assemble the site mesh: the terrain triangulation (two triangles per cell, four
private corners per cell so colours change sharply at class edges) plus every object part."""

from __future__ import annotations

import numpy as np

from earthcrafter.io.scene import Mesh
from earthcrafter.semantics import CLASS_NAMES, NUM_CLASSES
from earthcrafter.world.plan import SitePlan
from earthcrafter.world.shapes import triangle_areas
from earthcrafter.world.texture import ground_colors

# Corner k of a cell sits at vertex (i + DI[k], j + DJ[k]): 0 = (x0, y0), 1 = (x1, y0), 2 = (x0, y1), 3 = (x1, y1).
DI = np.array([0, 0, 1, 1])
DJ = np.array([0, 1, 0, 1])


def terrain_mesh(plan: SitePlan, colors: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Vertices ``[4 n^2, 3]``, faces ``[2 n^2, 3]``, face classes and vertex colours of the
    ground (colours None when ``colors`` is False).

    Triangles are (c0, c1, c3) and (c0, c3, c2): the diagonal runs from (x0, y0) to
    (x1, y1), matching :meth:`SiteGrid.height_at`. Both wind counter-clockwise seen from above.
    """
    n, c = plan.grid.n, plan.grid.cell
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    ci = i[..., None] + DI  # [n, n, 4]
    cj = j[..., None] + DJ
    cx, cy, cz = cj * c, ci * c, plan.H[ci, cj]
    V = np.stack([cx, cy, cz], -1).reshape(-1, 3).astype(np.float64)
    rgb = ground_colors(plan, cx.astype(float), cy.astype(float), cz, (ci, cj)).reshape(-1, 3) if colors else None
    base = (np.arange(n * n) * 4)[:, None]
    F = np.concatenate([base + [0, 1, 3], base + [0, 3, 2]])
    cls = np.concatenate([plan.ground.ravel(), plan.ground.ravel()])
    return V, F, cls, rgb


def site_mesh(plan: SitePlan) -> Mesh:
    """Terrain plus objects as one :class:`Mesh` (per-face semantic, per-vertex colour)."""
    tv, tf, tc, tcol = terrain_mesh(plan)
    ov, of, oc, ocol, grain = plan.parts.merged()
    if len(ov):
        # Object texture: one noise pass over every object vertex (height shears the
        # pattern so walls are not striped vertically).
        nz = plan.noise("objects")
        n = nz.fbm(ov[:, 0] + 0.37 * ov[:, 2], ov[:, 1] - 0.21 * ov[:, 2], 6, 2)
        ocol = ocol * (1 + grain * n)[:, None]
    V = np.concatenate([tv, ov])
    F = np.concatenate([tf, of + len(tv)])
    S = np.concatenate([tc, oc]).astype(np.uint8)
    col = np.round(np.clip(np.concatenate([tcol, ocol]), 0, 255)).astype(np.uint8)
    return Mesh(V, F, col, S)


def class_histogram(mesh: Mesh) -> dict[str, float]:
    """Surface area (m^2) of the mesh per class name, every class listed."""
    area = triangle_areas(mesh.vertices, mesh.faces)
    per = np.bincount(mesh.face_semantic.astype(np.int64), weights=area, minlength=NUM_CLASSES)
    return {name: round(float(a), 3) for name, a in zip(CLASS_NAMES, per)}
