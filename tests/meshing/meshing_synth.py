"""A known synthetic aerial scene for the meshing tests (imported by the tests and conftest).

``make_town`` builds a 2.5D mesh in the way aerial scenes look: a gently rolling
terrain height field (grass, with a road strip) and two box buildings standing on
flattened pads (roof + four facades). The terrain is cut out under each footprint so
every face of the ground truth is visible from the air and a perfect reconstruction
has Chamfer distance 0 and F-score 1.
"""

from __future__ import annotations

import numpy as np

from earthcrafter.geometry.cameras import Camera, intrinsics_from_fov, look_at
from earthcrafter.io.scene import Mesh, Points
from earthcrafter.semantics import CLASS_ID, PALETTE

GRASS, ROAD, ROOF, FACADE = (CLASS_ID[k] for k in ("grass_lawn", "road", "building_roof", "building_facade"))

# (x0, y0, x1, y1, height above the pad); footprints lie on the 1 m terrain grid lines.
BUILDINGS = ((-14.0, -10.0, -4.0, 2.0, 9.0), (6.0, 4.0, 16.0, 12.0, 5.0))
HALF = 30.0  # terrain spans [-HALF, HALF]^2 metres


def _pad_weight(x: np.ndarray, y: np.ndarray, box, margin: float = 3.0, ramp: float = 4.0) -> np.ndarray:
    """1 on the footprint grown by ``margin``, falling linearly to 0 over ``ramp`` metres."""
    x0, y0, x1, y1, _ = box
    dx = np.maximum(np.maximum(x0 - margin - x, x - x1 - margin), 0.0)
    dy = np.maximum(np.maximum(y0 - margin - y, y - y1 - margin), 0.0)
    return np.clip(1.0 - np.hypot(dx, dy) / ramp, 0.0, 1.0)


def terrain_height(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    z = 0.04 * x + 1.2 * np.sin(x / 9.0) * np.cos(y / 11.0)
    for box in BUILDINGS:
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        zc = 0.04 * cx + 1.2 * np.sin(cx / 9.0) * np.cos(cy / 11.0)
        w = _pad_weight(x, y, box)
        z = (1 - w) * z + w * zc
    return z


def _box(box) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Roof (2 faces) + 4 facades (2 faces each) of a box on its pad; outward winding."""
    x0, y0, x1, y1, h = box
    z0 = float(terrain_height(np.array((x0 + x1) / 2), np.array((y0 + y1) / 2)))
    z1 = z0 + h
    v = np.array(
        [[x0, y0, z0], [x1, y0, z0], [x1, y1, z0], [x0, y1, z0],
         [x0, y0, z1], [x1, y0, z1], [x1, y1, z1], [x0, y1, z1]]
    )
    f = np.array(
        [[4, 5, 6], [4, 6, 7],  # roof, normal +z
         [0, 1, 5], [0, 5, 4],  # y = y0, normal -y
         [1, 2, 6], [1, 6, 5],  # x = x1, normal +x
         [2, 3, 7], [2, 7, 6],  # y = y1, normal +y
         [3, 0, 4], [3, 4, 7]]  # x = x0, normal -x
    )
    sem = np.array([ROOF] * 2 + [FACADE] * 8)
    return v, f, sem


def subdivide(mesh: Mesh, max_edge: float) -> Mesh:
    """Split every face into 4 until no edge is longer than ``max_edge`` (keeps classes)."""
    v, f, c, s = mesh.vertices, mesh.faces, mesh.vertex_colors, mesh.face_semantic
    while True:
        e = np.linalg.norm(v[f[:, [1, 2, 0]]] - v[f], axis=2).max()
        if e <= max_edge:
            return Mesh(v, f, c, s)
        edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
        uniq, inv = np.unique(edges, axis=0, return_inverse=True)
        mid = len(v) + inv.reshape(3, -1).T  # [F, 3] midpoint of edges 01, 12, 20
        v = np.concatenate([v, v[uniq].mean(axis=1)])
        c = np.concatenate([c, c[uniq[:, 0]]])
        a, b, cc = f.T
        m01, m12, m20 = mid.T
        f = np.concatenate([np.stack(t, 1) for t in ((a, m01, m20), (m01, b, m12), (m20, m12, cc), (m01, m12, m20))])
        s = np.tile(s, 4)


def make_town(cell: float = 1.0, box_edge: float = 2.0) -> Mesh:
    """The ground-truth town mesh: terrain at ``cell`` metres plus subdivided boxes."""
    n = int(round(2 * HALF / cell)) + 1
    g = np.linspace(-HALF, HALF, n)
    X, Y = np.meshgrid(g, g, indexing="xy")
    verts = np.stack([X.ravel(), Y.ravel(), terrain_height(X, Y).ravel()], axis=1)
    idx = np.arange(n * n).reshape(n, n)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel(), idx[1:, :-1].ravel()
    faces = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])  # counter-clockwise: up
    cen = verts[faces].mean(axis=1)
    inside = np.zeros(len(faces), bool)
    for x0, y0, x1, y1, _ in BUILDINGS:
        inside |= (cen[:, 0] > x0) & (cen[:, 0] < x1) & (cen[:, 1] > y0) & (cen[:, 1] < y1)
    faces = faces[~inside]
    cen = cen[~inside]
    sem = np.where(np.abs(cen[:, 1] - 18.0) < 3.0, ROAD, GRASS)
    vsem = np.full(len(verts), GRASS)
    vsem[np.abs(verts[:, 1] - 18.0) < 3.0] = ROAD
    colors = PALETTE[vsem]
    terrain = Mesh(verts, faces, colors, sem)

    parts = [terrain]
    for box in BUILDINGS:
        v, f, s = _box(box)
        vc = np.tile(PALETTE[ROOF], (len(v), 1))
        parts.append(subdivide(Mesh(v, f, vc, s), box_edge))
    return concat(parts)


def concat(meshes: list[Mesh]) -> Mesh:
    offs = np.cumsum([0] + [len(m.vertices) for m in meshes[:-1]])
    return Mesh(
        np.concatenate([m.vertices for m in meshes]),
        np.concatenate([m.faces + o for m, o in zip(meshes, offs)]),
        np.concatenate([m.vertex_colors for m in meshes]),
        np.concatenate([m.face_semantic for m in meshes]),
    )


def aerial_cameras(n_ring: int = 8, size: tuple[int, int] = (192, 144)) -> list[Camera]:
    """A nadir view plus an oblique ring, as an aerial survey flies it."""
    w, h = size
    K = intrinsics_from_fov(w, h, 60.0)
    cams = [Camera(K, look_at((0.0, 0.1, 75.0), (0.0, 0.0, 0.0)), w, h)]
    for i in range(n_ring):
        a = 2 * np.pi * i / n_ring
        eye = (45 * np.cos(a), 45 * np.sin(a), 45.0)
        cams.append(Camera(K, look_at(eye, (0.0, 0.0, 0.0)), w, h))
    return cams


def sample_points(mesh: Mesh, n: int, seed: int = 0, noise: float = 0.0) -> Points:
    """LiDAR-like points: area-uniform on surfaces facing up (an aerial scanner sees roofs
    and ground; facades get few returns), with their face's colour and class."""
    rng = np.random.default_rng(seed)
    tri = mesh.vertices[mesh.faces]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = 0.5 * np.linalg.norm(cross, axis=1)
    w = area * np.clip(cross[:, 2] / np.maximum(2 * area, 1e-12), 0.05, 1.0)  # projected area
    fid = rng.choice(len(area), n, p=w / w.sum())
    r1, r2 = rng.random(n), rng.random(n)
    s = np.sqrt(r1)
    bary = np.stack([1 - s, s * (1 - r2), s * r2], 1)
    xyz = np.einsum("nk,nkc->nc", bary, tri[fid]) + rng.normal(0, noise, (n, 3)) * (noise > 0)
    rgb = mesh.vertex_colors[mesh.faces[fid, 0]]
    return Points(xyz, rgb, mesh.face_semantic[fid])
