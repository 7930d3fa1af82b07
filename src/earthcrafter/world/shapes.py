"""Mesh building blocks: a part accumulator, closed primitives, polygon triangulation,
vectorised instancing and profile sweeps.

Every primitive here is closed (each edge shared by two faces once coincident vertices are
merged) with faces wound counter-clockwise seen from outside, so normals point outwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class MeshParts:
    """Collects mesh pieces (vertices, faces, per-face class, per-vertex colour) and merges them once."""

    vertices: list[np.ndarray] = field(default_factory=list)
    faces: list[np.ndarray] = field(default_factory=list)
    classes: list[np.ndarray] = field(default_factory=list)
    colors: list[np.ndarray] = field(default_factory=list)
    grain: list[np.ndarray] = field(default_factory=list)
    _count: int = 0

    def add(self, V: np.ndarray, F: np.ndarray, cls, colors, grain: float = 0.0) -> None:
        """Add a piece; ``cls`` is one class id or ``[F]`` ids, ``colors`` one RGB or ``[V, 3]``.

        ``grain`` is the strength of the noise texture applied to these vertex colours when
        the mesh is assembled (one vectorised pass for all parts).
        """
        V = np.asarray(V, dtype=np.float64).reshape(-1, 3)
        F = np.asarray(F, dtype=np.int64).reshape(-1, 3)
        if len(F) == 0:
            return
        cls = np.broadcast_to(np.asarray(cls, dtype=np.uint8), (len(F),))
        colors = np.broadcast_to(np.clip(np.asarray(colors, dtype=np.float64), 0, 255), (len(V), 3))
        self.vertices.append(V)
        self.faces.append(F + self._count)
        self.classes.append(np.array(cls))
        self.colors.append(np.asarray(colors, dtype=np.float32).copy())
        self.grain.append(np.full(len(V), grain, np.float32))
        self._count += len(V)

    @property
    def num_faces(self) -> int:
        return sum(len(f) for f in self.faces)

    def merged(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Vertices, faces, face classes, float vertex colours and per-vertex grain."""
        if not self.faces:
            return (np.zeros((0, 3)), np.zeros((0, 3), np.int64), np.zeros(0, np.uint8),
                    np.zeros((0, 3), np.float32), np.zeros(0, np.float32))
        return (
            np.concatenate(self.vertices),
            np.concatenate(self.faces),
            np.concatenate(self.classes),
            np.concatenate(self.colors),
            np.concatenate(self.grain),
        )


# --------------------------------------------------------------------------- polygons

def polygon_area(poly: np.ndarray) -> float:
    """Signed area of a polygon ``[K, 2]`` (positive when counter-clockwise)."""
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def triangulate_polygon(poly: np.ndarray) -> np.ndarray:
    """Ear-clipping triangulation of a simple counter-clockwise polygon; ``[K-2, 3]`` indices."""
    poly = np.asarray(poly, dtype=np.float64)
    if polygon_area(poly) <= 0:
        raise ValueError("triangulate_polygon expects a counter-clockwise polygon with positive area")
    idx = list(range(len(poly)))
    tris = []
    guard = 0
    while len(idx) > 3:
        guard += 1
        if guard > 10 * len(poly) ** 2:
            raise ValueError("triangulate_polygon: polygon is not simple")
        for k in range(len(idx)):
            a, b, c = idx[k - 1], idx[k], idx[(k + 1) % len(idx)]
            pa, pb, pc = poly[a], poly[b], poly[c]
            cross = (pb[0] - pa[0]) * (pc[1] - pa[1]) - (pb[1] - pa[1]) * (pc[0] - pa[0])
            if cross <= 1e-12:
                continue  # reflex or degenerate corner: not an ear
            others = [poly[m] for m in idx if m not in (a, b, c)]
            if others and _any_in_triangle(np.array(others), pa, pb, pc):
                continue
            tris.append((a, b, c))
            idx.pop(k)
            break
    tris.append(tuple(idx))
    return np.array(tris, dtype=np.int64)


def _any_in_triangle(p: np.ndarray, a, b, c) -> bool:
    def side(p, u, v):
        return (v[0] - u[0]) * (p[:, 1] - u[1]) - (v[1] - u[1]) * (p[:, 0] - u[0])

    s1, s2, s3 = side(p, a, b), side(p, b, c), side(p, c, a)
    return bool(np.any((s1 >= -1e-12) & (s2 >= -1e-12) & (s3 >= -1e-12)))


def rotate2d(pts: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return pts @ np.array([[c, s], [-s, c]])


# --------------------------------------------------------------------------- closed primitives

def prism(poly: np.ndarray, z0: float, z1: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closed vertical prism over a CCW polygon ``[K, 2]``.

    Returns vertices, faces and a per-face part code: 0 bottom, 1 top, 2 wall.
    """
    K = len(poly)
    cap = triangulate_polygon(poly)
    bottom = np.column_stack([poly, np.full(K, z0)])
    top = np.column_stack([poly, np.full(K, z1)])
    V = np.concatenate([bottom, top])
    k = np.arange(K)
    k1 = (k + 1) % K
    walls = np.concatenate([np.stack([k, k1, K + k1], 1), np.stack([k, K + k1, K + k], 1)])
    F = np.concatenate([cap[:, ::-1], cap + K, walls])
    part = np.concatenate([np.zeros(len(cap)), np.ones(len(cap)), np.full(len(walls), 2)]).astype(np.int64)
    return V, F, part


def box(size=(1.0, 1.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """Closed box centred on the origin in x, y with its base at z = 0."""
    sx, sy, sz = size[0] / 2, size[1] / 2, size[2]
    poly = np.array([[-sx, -sy], [sx, -sy], [sx, sy], [-sx, sy]])
    V, F, _ = prism(poly, 0.0, sz)
    return V, F


def cylinder(segments: int = 8, radius: float = 1.0, height: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closed vertical cylinder (base at z = 0); part code 0 bottom, 1 top, 2 side."""
    a = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    poly = radius * np.column_stack([np.cos(a), np.sin(a)])
    return prism(poly, 0.0, height)


def cone(segments: int = 6, radius: float = 1.0, height: float = 1.0, z0: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Closed cone: base ring at ``z0``, apex at ``z0 + height``."""
    a = np.linspace(0, 2 * np.pi, segments, endpoint=False)
    ring = np.column_stack([radius * np.cos(a), radius * np.sin(a), np.full(segments, z0)])
    V = np.concatenate([ring, [[0, 0, z0 + height], [0, 0, z0]]])
    k = np.arange(segments)
    k1 = (k + 1) % segments
    apex, base = segments, segments + 1
    F = np.concatenate([np.stack([k, k1, np.full(segments, apex)], 1), np.stack([k1, k, np.full(segments, base)], 1)])
    return V, F


def icosahedron() -> tuple[np.ndarray, np.ndarray]:
    """Unit icosahedron (12 vertices, 20 outward faces)."""
    t = (1 + 5**0.5) / 2
    V = np.array(
        [[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t],
         [0, -1, -t], [0, 1, -t], [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]],
        dtype=np.float64,
    )
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    F = np.array(
        [[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4], [11, 10, 2],
         [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5],
         [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]],
        dtype=np.int64,
    )
    return V, F


def frustum(bottom_half: float, top_half: float, height: float) -> tuple[np.ndarray, np.ndarray]:
    """Closed square frustum (a tapered mast), base at z = 0."""
    b, t = bottom_half, top_half
    V = np.array([[-b, -b, 0], [b, -b, 0], [b, b, 0], [-b, b, 0], [-t, -t, height], [t, -t, height], [t, t, height], [-t, t, height]], float)
    F = np.array(
        [[0, 2, 1], [0, 3, 2], [4, 5, 6], [4, 6, 7], [0, 1, 5], [0, 5, 4], [1, 2, 6], [1, 6, 5],
         [2, 3, 7], [2, 7, 6], [3, 0, 4], [3, 4, 7]],
        dtype=np.int64,
    )
    return V, F


# --------------------------------------------------------------------------- instancing and sweeps

def instance(
    V: np.ndarray, F: np.ndarray, pos: np.ndarray, yaw: np.ndarray | None = None, scale: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Copies of a template: ``scale [N, 3]`` then rotation ``yaw [N]`` about z then ``pos [N, 3]``.

    Returns ``[N * v, 3]`` vertices (instance-major) and offset faces ``[N * f, 3]``.
    """
    pos = np.asarray(pos, dtype=np.float64).reshape(-1, 3)
    N = len(pos)
    P = np.broadcast_to(V, (N,) + V.shape).copy()
    if scale is not None:
        P *= np.asarray(scale, dtype=np.float64).reshape(N, 1, 3)
    if yaw is not None:
        c, s = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
        x, y = P[..., 0].copy(), P[..., 1].copy()
        P[..., 0], P[..., 1] = c * x - s * y, s * x + c * y
    P += pos[:, None, :]
    offs = (np.arange(N) * len(V))[:, None, None]
    return P.reshape(-1, 3), (F[None] + offs).reshape(-1, 3)


def sweep(path: np.ndarray, profile: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closed tube: extrude a CCW 2-D profile ``[K, 2]`` (lateral, up) along a 3-D path ``[P, 3]``.

    The lateral axis is the horizontal normal to the left of the path; the up axis is +z,
    so cross-sections stay upright (decks, walls, rails). End caps close the tube.
    """
    path = np.asarray(path, dtype=np.float64)
    P, K = len(path), len(profile)
    tang = np.gradient(path[:, :2], axis=0)
    tang /= np.maximum(np.linalg.norm(tang, axis=1, keepdims=True), 1e-12)
    left = np.column_stack([-tang[:, 1], tang[:, 0]])
    ring = path[:, None, :2] + profile[None, :, 0:1] * left[:, None, :]
    z = path[:, None, 2] + profile[None, :, 1]
    V = np.concatenate([ring, z[..., None]], axis=2).reshape(-1, 3)
    p = np.arange(P - 1)[:, None]
    k = np.arange(K)[None, :]
    k1 = (k + 1) % K
    a, b = p * K + k, p * K + k1
    c, d = (p + 1) * K + k1, (p + 1) * K + k
    side = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    cap = triangulate_polygon(profile)
    F = np.concatenate([side, cap[:, ::-1], cap + (P - 1) * K])
    return V, F


def merge_close_vertices(V: np.ndarray, F: np.ndarray, decimals: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Weld vertices that coincide (after rounding); used to check closedness."""
    key = np.round(V, decimals)
    uniq, inv = np.unique(key, axis=0, return_inverse=True)
    return uniq, inv.reshape(-1)[F]


def is_closed(F: np.ndarray) -> bool:
    """True when every undirected edge is used by exactly two faces, once in each direction."""
    e = np.concatenate([F[:, [0, 1]], F[:, [1, 2]], F[:, [2, 0]]])
    directed, counts = np.unique(e, axis=0, return_counts=True)
    if np.any(counts != 1):
        return False
    und = np.sort(e, axis=1)
    _, ucounts = np.unique(und, axis=0, return_counts=True)
    return bool(np.all(ucounts == 2))


def signed_volume(V: np.ndarray, F: np.ndarray) -> float:
    """Volume enclosed by a closed outward-wound mesh (divergence theorem)."""
    a, b, c = V[F[:, 0]], V[F[:, 1]], V[F[:, 2]]
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def triangle_areas(V: np.ndarray, F: np.ndarray) -> np.ndarray:
    return 0.5 * np.linalg.norm(np.cross(V[F[:, 1]] - V[F[:, 0]], V[F[:, 2]] - V[F[:, 0]]), axis=1)
