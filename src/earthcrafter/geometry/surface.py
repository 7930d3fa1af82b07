"""Surfaces from LiDAR points, and the scene-level meshing entry point.

Two reconstructions of a :class:`~earthcrafter.io.scene.Points` cloud (metres, z up):

**DSM triangulation** (default; suits aerial 2.5D data). Points are rasterised to a height
grid of ``cell_size`` taking the max z per cell (the top surface an aerial sensor sees).
Points within ``top_band`` of that max vote for the cell's colour (mean) and class
(majority). Empty-cell holes of at most ``max_hole_cells`` cells (4-connected) are filled
by harmonic interpolation (a Laplace solve with the surrounding cells as boundary values,
so the fill is the smoothest surface through the hole's rim); their class is that of the
nearest filled cell. Larger holes stay open. Each 2x2 block of cells becomes two
triangles over the cell centres, split along the flatter diagonal. A grid edge whose two
cells differ by more than ``jump_threshold`` is a *jump* (roof edge, cliff). With
``jump_mode``:

- ``"facade"``: blocks with jumps are split marching-squares style: each side keeps its
  own height up to the jump edge's midpoint and the block centre, and vertical wall quads
  join the sides there. Midpoint vertices are shared between neighbouring blocks, so the
  surface stays closed across jumps. Walls under a building roof get class
  ``building_facade``; other walls take the class of their high side.
- ``"drop"``: the same split without the walls (the surface is open along jumps).
- ``"slope"``: ignore jumps; triangles run straight from roof to ground.

Blocks with three filled cells give one triangle if it holds no jump; blocks with fewer give none.

**Screened Poisson** (``method="poisson"``, open3d): normals by k-NN PCA oriented to +z,
Poisson at octree ``depth``, vertices whose density is below the ``density_quantile``
quantile trimmed (they are the extrapolated sheets Poisson adds far from data), the rest
cropped to the points' bounding box. Colours come from Poisson's interpolation; each face
takes the majority class of its ``label_knn`` nearest points.

:func:`mesh_scene` picks a reconstruction from what a scene holds and cleans the result.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import Literal

import numpy as np
import open3d as o3d
from pydantic import BaseModel, ConfigDict, Field
from scipy import ndimage, sparse
from scipy.sparse.linalg import splu
from scipy.spatial import cKDTree

from earthcrafter.geometry.mesh_clean import CleanConfig, clean_mesh
from earthcrafter.geometry.tsdf import TSDFConfig, reconstruct_from_frames
from earthcrafter.io.scene import Mesh, Points, Scene
from earthcrafter.semantics import CLASS_ID, NUM_CLASSES

log = logging.getLogger(__name__)

# Class a vertical wall takes when its top is of the key class.
FACADE_CLASS = {CLASS_ID["building_roof"]: CLASS_ID["building_facade"]}


class DSMConfig(BaseModel):
    """Knobs of DSM triangulation. Lengths in metres."""

    model_config = ConfigDict(extra="forbid")

    cell_size: float = Field(0.5, gt=0)
    top_band: float = Field(0.5, ge=0)
    max_hole_cells: int = Field(256, ge=0)
    jump_threshold: float = Field(2.0, gt=0)
    jump_mode: Literal["facade", "drop", "slope"] = "facade"
    max_grid_cells: int = Field(25_000_000, gt=0)  # guards against a far outlier point or a tiny cell


class PoissonConfig(BaseModel):
    """Knobs of screened Poisson reconstruction."""

    model_config = ConfigDict(extra="forbid")

    depth: int = Field(9, ge=4, le=14)  # octree depth: finest cell = extent / 2**depth
    density_quantile: float = Field(0.02, ge=0, lt=1)
    normal_knn: int = Field(16, ge=3)
    label_knn: int = Field(5, ge=1)
    scale: float = Field(1.1, gt=1)
    threads: int = Field(1, ge=0)  # 0: all cores; 1 keeps results identical run to run


class MeshingConfig(BaseModel):
    """Everything the meshing stage needs.

    ``source="ground_truth"`` passes the scene's own mesh through (cleaned when
    ``clean.enabled``); ``"reconstruct"`` rebuilds it with ``method``: ``"auto"`` takes TSDF
    when the scene has frames with depth, else DSM when it has points, else cleans the
    scene's mesh.
    """

    model_config = ConfigDict(extra="forbid")

    source: Literal["reconstruct", "ground_truth"] = "reconstruct"
    method: Literal["auto", "tsdf", "dsm", "poisson"] = "auto"
    tsdf: TSDFConfig = Field(default_factory=TSDFConfig)
    dsm: DSMConfig = Field(default_factory=DSMConfig)
    poisson: PoissonConfig = Field(default_factory=PoissonConfig)
    clean: CleanConfig = Field(default_factory=CleanConfig)


# --------------------------------------------------------------------------- helpers

def check_points(points: Points) -> None:
    if len(points.xyz) == 0:
        raise ValueError("point cloud is empty (0 points); nothing to reconstruct")
    bad = ~np.isfinite(points.xyz).all(axis=1)
    if bad.any():
        raise ValueError(
            f"point cloud has {int(bad.sum())} points with NaN/inf coordinates (first at index {int(np.argmax(bad))})"
        )


def majority(groups: np.ndarray, labels: np.ndarray, n_groups: int) -> np.ndarray:
    """Most frequent label per group (ties: the smaller label); 0 for empty groups."""
    out = np.zeros(n_groups, np.uint8)
    if len(groups) == 0:
        return out
    keys, counts = np.unique(groups.astype(np.int64) * NUM_CLASSES + labels, return_counts=True)
    g, lab = keys // NUM_CLASSES, keys % NUM_CLASSES
    order = np.lexsort((-lab, counts, g))  # per group, the last row has max count, then min label
    last = np.r_[g[order][1:] != g[order][:-1], True]
    out[g[order][last]] = lab[order][last]
    return out


def face_mode(labels: np.ndarray, heights: np.ndarray) -> np.ndarray:
    """Per face [F, 3]: the label two vertices share, else the label of the highest vertex."""
    a, b, c = labels.T
    top = labels[np.arange(len(labels)), heights.argmax(axis=1)]
    return np.where((a == b) | (a == c), a, np.where(b == c, b, top)).astype(np.uint8)


# --------------------------------------------------------------------------- DSM: grid

def rasterize_top(points: Points, cfg: DSMConfig) -> dict:
    """Height grid of the top surface: z [ny, nx] (NaN = empty), rgb [ny, nx, 3], sem [ny, nx].

    Cell (iy, ix) covers x in origin_x + [ix, ix+1) * cell_size (likewise y); row index is y.
    The origin is a multiple of ``cell_size``, so grids of neighbouring scenes line up.
    """
    xyz, c = points.xyz, cfg.cell_size
    lo = np.floor(xyz[:, :2].min(axis=0) / c) * c
    n_xy = np.floor((xyz[:, :2].max(axis=0) - lo) / c).astype(np.int64) + 1
    nx, ny = int(n_xy[0]), int(n_xy[1])
    if nx * ny > cfg.max_grid_cells:
        raise ValueError(
            f"DSM grid {nx} x {ny} exceeds max_grid_cells={cfg.max_grid_cells}: raise cell_size "
            f"({c} m) or remove outlying points (xy extent {(n_xy * c).tolist()} m)"
        )
    ij = np.minimum(np.floor((xyz[:, :2] - lo) / c).astype(np.int64), n_xy - 1)
    cell = ij[:, 1] * nx + ij[:, 0]
    zmax = np.full(nx * ny, -np.inf)
    np.maximum.at(zmax, cell, xyz[:, 2])
    top = xyz[:, 2] >= zmax[cell] - cfg.top_band
    cnt = np.bincount(cell[top], minlength=nx * ny)
    rgb = np.stack([np.bincount(cell[top], points.rgb[top, k].astype(np.float64), nx * ny) for k in range(3)], 1)
    rgb /= np.maximum(cnt, 1)[:, None]
    sem = majority(cell[top], points.semantic[top], nx * ny)
    z = np.where(cnt > 0, zmax, np.nan)
    return {
        "z": z.reshape(ny, nx),
        "rgb": rgb.reshape(ny, nx, 3),
        "sem": sem.reshape(ny, nx),
        "origin": lo,
        "cell": c,
    }


def fill_holes(grid: dict, max_hole_cells: int) -> dict:
    """Fill empty 4-connected components of at most ``max_hole_cells`` cells in place.

    Heights and colours solve Laplace's equation on the hole with the rim as boundary
    (rows of the graph Laplacian restricted to the hole); classes copy the nearest cell.
    Returns counts: holes and cells filled, holes and cells left open.
    """
    z = grid["z"]
    empty = np.isnan(z)
    lab, n = ndimage.label(empty)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    small = (sizes <= max_hole_cells) & (np.arange(n + 1) > 0)
    fill = small[lab]
    report = {
        "holes_filled": int(small.sum()),
        "cells_filled": int(fill.sum()),
        "holes_left_open": int(n - small.sum()),
        "cells_left_open": int(empty.sum() - fill.sum()),
    }
    if not fill.any() or empty.all():
        return report
    ny, nx = z.shape
    idx = np.full(z.shape, -1, np.int64)
    idx[fill] = np.arange(int(fill.sum()))
    known = np.concatenate([z[..., None], grid["rgb"]], axis=-1)  # [ny, nx, 4] values to interpolate
    rows, cols, diag = [], [], np.zeros(int(fill.sum()))
    rhs = np.zeros((int(fill.sum()), 4))
    fy, fx = np.nonzero(fill)
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        ny_, nx_ = fy + dy, fx + dx
        inside = (ny_ >= 0) & (ny_ < ny) & (nx_ >= 0) & (nx_ < nx)
        r, yy, xx = idx[fy[inside], fx[inside]], ny_[inside], nx_[inside]
        diag[r] += 1
        other = idx[yy, xx]
        unknown = other >= 0
        rows.append(r[unknown])
        cols.append(other[unknown])
        np.add.at(rhs, r[~unknown], known[yy[~unknown], xx[~unknown]])
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    n_fill = len(diag)
    A = sparse.coo_matrix(
        (np.r_[diag, -np.ones(len(rows))], (np.r_[np.arange(n_fill), rows], np.r_[np.arange(n_fill), cols])),
        shape=(n_fill, n_fill),
    ).tocsc()
    sol = splu(A).solve(rhs)
    z[fill] = sol[:, 0]
    grid["rgb"][fill] = sol[:, 1:]
    _, (iy, ix) = ndimage.distance_transform_edt(np.isnan(z) | fill, return_indices=True)
    grid["sem"][fill] = grid["sem"][iy[fill], ix[fill]]
    return report


# --------------------------------------------------------------------------- DSM: triangulation

# Block corners counter-clockwise seen from above: c0=(x, y), c1=(x+1, y), c2=(x+1, y+1), c3=(x, y+1).
# Block edge e joins corners e and (e+1) % 4. Template slots: 0-3 corners; 4 + 2e + s the
# midpoint vertex of edge e at the height of corner e (s=0) or (e+1) % 4 (s=1); 12 + r the
# block-centre vertex of region r.
CORNER_DXY = ((0, 0), (1, 0), (1, 1), (0, 1))


def _mid_slot(e: int, corner: int) -> int:
    return 4 + 2 * e + (0 if corner == e else 1)


def _templates() -> dict[int, dict]:
    """For each non-zero jump mask (bit e: block edge e is a jump): regions and triangles."""
    out = {}
    for mask in range(1, 16):
        broken = [e for e in range(4) if mask >> e & 1]
        start = (broken[0] + 1) % 4  # a corner just after a jump starts a region
        region = [0] * 4
        r = 0
        for step in range(4):
            k = (start + step) % 4
            if step and (k - 1) % 4 in broken:
                r += 1
            region[k] = r
        n_regions = r + 1  # one jump edge leaves a single region, cut by a slit
        top = []
        for reg in range(n_regions):
            ks = [(start + s) % 4 for s in range(4) if region[(start + s) % 4] == reg]
            chain = [_mid_slot((ks[0] - 1) % 4, ks[0])] + ks + [_mid_slot(ks[-1], ks[-1])]
            top += [(12 + reg, chain[i], chain[i + 1]) for i in range(len(chain) - 1)]
        # A wall stands on each jump edge e, from its midpoint to the block centre, between
        # the regions of the edge's corners (or both sides of the slit of a lone jump).
        walls = [(e, _mid_slot(e, e), _mid_slot(e, (e + 1) % 4), region[e], region[(e + 1) % 4]) for e in broken]
        out[mask] = {"region": np.array(region), "n_regions": n_regions, "top": np.array(top), "walls": walls}
    return out


TEMPLATES = _templates()


class _MeshBuilder:
    """Accumulates vertices (position, colour, class) and faces (indices, class)."""

    def __init__(self):
        self.v, self.c, self.s, self.f, self.fs = [], [], [], [], []
        self.n = 0

    def add_vertices(self, xyz, rgb, sem) -> np.ndarray:
        ids = np.arange(self.n, self.n + len(xyz))
        self.v.append(xyz), self.c.append(rgb), self.s.append(sem)
        self.n += len(xyz)
        return ids

    def add_faces(self, faces, sem=None) -> None:
        if len(faces):
            self.f.append(faces)
            self.fs.append(sem)

    def build(self) -> Mesh:
        v, c, s = (np.concatenate(a) for a in (self.v, self.c, self.s))
        f = np.concatenate(self.f) if self.f else np.zeros((0, 3), np.int64)
        fs = [face_mode(s[ff], v[ff, 2]) if fsem is None else fsem for ff, fsem in zip(self.f, self.fs)]
        fs = np.concatenate(fs) if fs else np.zeros(0, np.uint8)
        used = np.zeros(len(v), bool)
        used[f.ravel()] = True
        remap = np.cumsum(used) - 1
        return Mesh(v[used], remap[f], np.clip(np.rint(c[used]), 0, 255), fs)


@dataclass
class _Blocks:
    """2x2 blocks of grid cells by lower-left cell (bx, by) [B]; per corner (c0..c3 order)
    the cell row / column (cy, cx), vertex id (vid, -1 if empty) and height (z) [B, 4]."""

    bx: np.ndarray
    by: np.ndarray
    cy: np.ndarray
    cx: np.ndarray
    vid: np.ndarray
    z: np.ndarray

    @classmethod
    def of_grid(cls, vid: np.ndarray, z: np.ndarray) -> "_Blocks":
        ny, nx = z.shape
        by, bx = np.mgrid[0 : ny - 1, 0 : nx - 1].reshape(2, -1)
        cy = by[:, None] + np.array([d[1] for d in CORNER_DXY])
        cx = bx[:, None] + np.array([d[0] for d in CORNER_DXY])
        return cls(bx, by, cy, cx, vid[cy, cx], z[cy, cx])

    def __getitem__(self, sel) -> "_Blocks":
        return _Blocks(*(getattr(self, f.name)[sel] for f in fields(self)))


def triangulate_grid(grid: dict, cfg: DSMConfig) -> Mesh:
    """Triangulate a filled height grid (see the module docstring for the rules)."""
    z, rgb, sem, c = grid["z"], grid["rgb"], grid["sem"], grid["cell"]
    yy, xx = np.nonzero(np.isfinite(z))
    xy = np.stack([grid["origin"][0] + (xx + 0.5) * c, grid["origin"][1] + (yy + 0.5) * c], -1)
    mb = _MeshBuilder()
    vid = np.full(z.shape, -1, np.int64)
    vid[yy, xx] = mb.add_vertices(np.c_[xy, z[yy, xx]], rgb[yy, xx], sem[yy, xx])

    blocks = _Blocks.of_grid(vid, z)
    n_valid = (blocks.vid >= 0).sum(axis=1)
    T = np.inf if cfg.jump_mode == "slope" else cfg.jump_threshold
    dz = np.abs(blocks.z - np.roll(blocks.z, -1, axis=1))  # block edge e: |z_e - z_{e+1}|
    mask = ((dz > T) * (1 << np.arange(4))).sum(axis=1)  # bit e: edge e is a jump
    mask[n_valid < 4] = 0

    # Smooth full blocks: two triangles along the flatter diagonal.
    full = blocks[(n_valid == 4) & (mask == 0)]
    q, qz = full.vid, full.z
    d02 = np.abs(qz[:, 0] - qz[:, 2]) <= np.abs(qz[:, 1] - qz[:, 3])
    tri = np.where(
        d02[:, None, None],
        np.stack([q[:, [0, 1, 2]], q[:, [0, 2, 3]]], 1),
        np.stack([q[:, [0, 1, 3]], q[:, [1, 2, 3]]], 1),
    )
    mb.add_faces(tri.reshape(-1, 3))

    # Blocks with three cells: one triangle unless it holds a jump.
    three = blocks[n_valid == 3]
    missing = np.argmin(three.vid >= 0, axis=1)
    order = (missing[:, None] + np.arange(1, 4)) % 4  # the other corners, still counter-clockwise
    t3 = np.take_along_axis(three.vid, order, 1)
    z3 = np.take_along_axis(three.z, order, 1)
    mb.add_faces(t3[z3.max(1) - z3.min(1) <= T])

    if cfg.jump_mode != "slope" and (mask > 0).any():
        _split_jump_blocks(mb, grid, blocks, mask, add_walls=cfg.jump_mode == "facade")
    return mb.build()


def _jump_midpoints(mb: _MeshBuilder, grid: dict, blocks: _Blocks, mask: np.ndarray):
    """One vertex pair per jump edge of the grid (one at each side's height), shared by the
    two blocks beside it. Returns ids [..., 2] for horizontal grid edges (y, x)-(y, x+1)
    and vertical ones (y, x)-(y+1, x); side 0 is the lower-index cell."""
    z, rgb, sem, c = grid["z"], grid["rgb"], grid["sem"], grid["cell"]
    ny, nx = z.shape
    ox, oy = grid["origin"]
    h_jump, v_jump = np.zeros((ny, nx - 1), bool), np.zeros((ny - 1, nx), bool)
    for e in range(4):
        sel = mask >> e & 1 == 1
        a, b = np.array(CORNER_DXY[e]), np.array(CORNER_DXY[(e + 1) % 4])
        lo = np.minimum(a, b)
        (h_jump if a[1] == b[1] else v_jump)[blocks.by[sel] + lo[1], blocks.bx[sel] + lo[0]] = True
    ids = []
    for jump, (dx, dy) in ((h_jump, (1, 0)), (v_jump, (0, 1))):
        pair = np.full(jump.shape + (2,), -1, np.int64)
        ey, ex = np.nonzero(jump)
        mid = np.stack([ox + (ex + 0.5 + dx / 2) * c, oy + (ey + 0.5 + dy / 2) * c], -1)
        for side, (sx, sy) in enumerate(((ex, ey), (ex + dx, ey + dy))):
            pair[ey, ex, side] = mb.add_vertices(np.c_[mid, z[sy, sx]], rgb[sy, sx], sem[sy, sx])
        ids.append(pair)
    return ids


def _split_jump_blocks(mb: _MeshBuilder, grid: dict, blocks: _Blocks, mask: np.ndarray, add_walls: bool) -> None:
    """Blocks holding jumps, one jump pattern (template) at a time."""
    rgb, sem, c = grid["rgb"], grid["sem"], grid["cell"]
    ox, oy = grid["origin"]
    h_id, v_id = _jump_midpoints(mb, grid, blocks, mask)
    for m, tpl in TEMPLATES.items():
        blk = blocks[mask == m]
        n = len(blk.bx)
        if n == 0:
            continue
        slots = np.full((n, 12 + tpl["n_regions"]), -1, np.int64)
        slots[:, :4] = blk.vid
        for e in range(4):
            if m >> e & 1:
                a, b = np.array(CORNER_DXY[e]), np.array(CORNER_DXY[(e + 1) % 4])
                lo = np.minimum(a, b)
                pair = (h_id if a[1] == b[1] else v_id)[blk.by + lo[1], blk.bx + lo[0]]
                a_is_low = bool((a == lo).all())
                slots[:, 4 + 2 * e] = pair[:, 0 if a_is_low else 1]  # at corner e's height
                slots[:, 5 + 2 * e] = pair[:, 1 if a_is_low else 0]  # at corner e+1's height
        # Block-centre vertex per region: mean height and colour, class of its highest corner.
        centre_z = np.zeros((n, tpl["n_regions"]))
        centre_xy = np.stack([ox + (blk.bx + 1) * c, oy + (blk.by + 1) * c], -1)
        rows = np.arange(n)
        for r in range(tpl["n_regions"]):
            ks = np.flatnonzero(tpl["region"] == r)
            top_k = ks[np.argmax(blk.z[:, ks], axis=1)]
            centre_z[:, r] = blk.z[:, ks].mean(axis=1)
            col = rgb[blk.cy[:, ks], blk.cx[:, ks]].mean(axis=1)
            cls = sem[blk.cy[rows, top_k], blk.cx[rows, top_k]]
            slots[:, 12 + r] = mb.add_vertices(np.c_[centre_xy, centre_z[:, r]], col, cls)
        mb.add_faces(slots[:, tpl["top"]].reshape(-1, 3))
        if add_walls:
            _add_walls(mb, grid, blk, slots, tpl["walls"], centre_z)


def _add_walls(mb: _MeshBuilder, grid: dict, blk: _Blocks, slots, walls, centre_z) -> None:
    """Vertical wall triangles, wound so their normal points to the jump's low side.

    A wall between regions a and b runs from the jump edge's midpoint pair (m_a, m_b) to
    the centre vertices (c_a, c_b). Centre vertices of other regions whose height lies
    between c_a and c_b sit on the same vertical line, so the wall passes through them
    too; then every centre segment belongs to exactly two walls and the surface stays closed.
    """
    v = np.concatenate(mb.v)  # positions so far (walls add no vertices)
    n_regions = centre_z.shape[1]
    rows = np.arange(len(slots))
    for e, m_a, m_b, ra, rb in walls:
        ma, mb_, ca, cb = slots[:, m_a], slots[:, m_b], slots[:, 12 + ra], slots[:, 12 + rb]
        if ra == rb:  # a lone jump: a slit from the edge midpoint to the centre
            tris = [(np.stack([ma, ca, mb_], 1), rows)]
        else:
            others = [r for r in range(n_regions) if r not in (ra, rb)]
            chain = [ca[:, None]]
            if others:
                t = (centre_z[:, others] - centre_z[:, [ra]]) / (centre_z[:, [rb]] - centre_z[:, [ra]])
                t = np.where((t > 0) & (t < 1), t, np.inf)
                order = np.argsort(t, axis=1)
                cand = np.take_along_axis(slots[:, [12 + r for r in others]], order, 1)
                cand = np.where(np.isfinite(np.take_along_axis(t, order, 1)), cand, cb[:, None])
                chain.append(cand)
            chain = np.concatenate(chain + [cb[:, None]], axis=1)
            tris = []
            for k in range(chain.shape[1] - 1):
                real = chain[:, k] != chain[:, k + 1]  # unused candidate slots repeat c_b
                tris.append((np.stack([ma, chain[:, k], chain[:, k + 1]], 1)[real], rows[real]))
            tris.append((np.stack([ma, cb, mb_], 1), rows))
        a, b = e, (e + 1) % 4
        low = np.where(blk.z[:, a] <= blk.z[:, b], a, b)
        high = np.where(low == a, b, a)
        toward_low = np.array(CORNER_DXY, float)[low] - (np.array(CORNER_DXY[a], float) + CORNER_DXY[b]) / 2
        top_sem = grid["sem"][blk.cy[rows, high], blk.cx[rows, high]]
        wall_sem = top_sem.copy()
        for top_cls, wall_cls in FACADE_CLASS.items():
            wall_sem[top_sem == top_cls] = wall_cls
        for tri, sel in tris:
            p = v[tri]
            n = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])
            flip = (n[:, :2] * toward_low[sel]).sum(axis=1) < 0
            tri = tri.copy()
            tri[flip] = tri[flip][:, ::-1]
            mb.add_faces(tri, wall_sem[sel].astype(np.uint8))


def dsm_mesh(points: Points, cfg: DSMConfig) -> tuple[Mesh, dict]:
    """DSM triangulation of ``points``; returns the mesh and counts."""
    check_points(points)
    grid = rasterize_top(points, cfg)
    occupied = int(np.isfinite(grid["z"]).sum())
    holes = fill_holes(grid, cfg.max_hole_cells)
    mesh = triangulate_grid(grid, cfg)
    if len(mesh.faces) == 0:
        raise ValueError(
            f"DSM triangulation produced no faces ({occupied} occupied cells of {grid['z'].size}); "
            f"cell_size {cfg.cell_size} m is too small for the point density"
        )
    report = {
        "method": "dsm",
        "points": len(points.xyz),
        "grid": list(grid["z"].shape),
        "cell_size": cfg.cell_size,
        "cells_occupied": occupied,
        **holes,
        "vertices": len(mesh.vertices),
        "faces": len(mesh.faces),
    }
    return mesh, report


# --------------------------------------------------------------------------- Poisson

def poisson_mesh(points: Points, cfg: PoissonConfig) -> tuple[Mesh, dict]:
    """Screened Poisson reconstruction of ``points`` (see the module docstring)."""
    check_points(points)
    if len(points.xyz) < cfg.normal_knn:
        raise ValueError(f"Poisson needs at least normal_knn={cfg.normal_knn} points, got {len(points.xyz)}")
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points.xyz))
    pcd.colors = o3d.utility.Vector3dVector(points.rgb / 255.0)
    pcd.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(cfg.normal_knn))
    pcd.orient_normals_to_align_with_direction(np.array([0.0, 0.0, 1.0]))
    lm, density = o3d.geometry.TriangleMesh.create_from_point_cloud_poisson(
        pcd, depth=cfg.depth, scale=cfg.scale, n_threads=cfg.threads if cfg.threads > 0 else -1
    )
    density = np.asarray(density)
    n_poisson = len(lm.triangles)
    if cfg.density_quantile > 0:
        lm.remove_vertices_by_mask(density < np.quantile(density, cfg.density_quantile))
    lo, hi = points.xyz.min(axis=0), points.xyz.max(axis=0)
    lm = lm.crop(o3d.geometry.AxisAlignedBoundingBox(lo - 1e-6, hi + 1e-6))
    vertices, faces = np.asarray(lm.vertices), np.asarray(lm.triangles, dtype=np.int64)
    if len(faces) == 0:
        raise ValueError("Poisson reconstruction left no faces after density trimming and cropping")
    colors = np.clip(np.asarray(lm.vertex_colors) * 255 + 0.5, 0, 255).astype(np.uint8)
    _, nn = cKDTree(points.xyz).query(vertices[faces].mean(axis=1), k=cfg.label_knn, workers=-1)
    nn = nn.reshape(len(faces), -1)
    sem = majority(np.repeat(np.arange(len(faces)), nn.shape[1]), points.semantic[nn.ravel()], len(faces))
    report = {
        "method": "poisson",
        "points": len(points.xyz),
        "faces_poisson": n_poisson,
        "faces": len(faces),
        "vertices": len(vertices),
    }
    return Mesh(vertices, faces, colors, sem), report


def reconstruct_from_points(points: Points, cfg, *, return_report: bool = False):
    """Mesh a LiDAR point cloud by DSM triangulation (default) or screened Poisson.

    ``cfg`` is a :class:`MeshingConfig` (``method="poisson"`` selects Poisson, anything
    else DSM), a :class:`DSMConfig` or a :class:`PoissonConfig`. Returns a
    :class:`~earthcrafter.io.scene.Mesh` with vertex colours and per-face classes, and
    with ``return_report`` also a dict of counts.
    """
    if isinstance(cfg, MeshingConfig):
        cfg = cfg.poisson if cfg.method == "poisson" else cfg.dsm
    if isinstance(cfg, PoissonConfig):
        mesh, report = poisson_mesh(points, cfg)
    elif isinstance(cfg, DSMConfig):
        mesh, report = dsm_mesh(points, cfg)
    else:
        raise TypeError(f"expected MeshingConfig, DSMConfig or PoissonConfig, got {type(cfg).__name__}")
    return (mesh, report) if return_report else mesh


# --------------------------------------------------------------------------- scenes

def pick_method(scene: Scene, cfg: MeshingConfig) -> str:
    """``"ground_truth"``, ``"tsdf"``, ``"dsm"``, ``"poisson"`` or ``"mesh"`` (clean the scene's mesh)."""
    if cfg.source == "ground_truth":
        if scene.mesh is None:
            raise ValueError(f"scene {scene.scene_id!r}: source='ground_truth' but the scene has no mesh")
        return "ground_truth"
    if cfg.method == "tsdf" or (cfg.method == "auto" and any(f.depth is not None for f in scene.frames)):
        if not scene.frames:
            raise ValueError(f"scene {scene.scene_id!r}: method='tsdf' but the scene has no frames")
        return "tsdf"
    if cfg.method in ("dsm", "poisson") or (cfg.method == "auto" and scene.points is not None):
        if scene.points is None:
            raise ValueError(f"scene {scene.scene_id!r}: method={cfg.method!r} but the scene has no points")
        return "dsm" if cfg.method == "auto" else cfg.method
    if scene.mesh is not None:
        return "mesh"
    what = f"{len(scene.frames)} frames without depth" if scene.frames else "no frames"
    raise ValueError(f"scene {scene.scene_id!r} has nothing to mesh: {what}, no points, no mesh")


def mesh_scene(scene: Scene, cfg: MeshingConfig) -> tuple[Mesh, dict]:
    """Mesh one scene: reconstruct (or take the ground truth), then clean.

    Returns the mesh and a report ``{"scene_id", "method", "reconstruction": {...},
    "clean": {...}}`` whose sub-dicts hold the counts of each step.
    """
    if not isinstance(cfg, MeshingConfig):
        raise TypeError(f"mesh_scene expects a MeshingConfig, got {type(cfg).__name__}")
    method = pick_method(scene, cfg)
    report: dict = {"scene_id": scene.scene_id, "source": cfg.source, "method": method}
    if method == "tsdf":
        mesh, report["reconstruction"] = reconstruct_from_frames(scene.frames, cfg.tsdf, return_report=True)
    elif method in ("dsm", "poisson"):
        sec = cfg.dsm if method == "dsm" else cfg.poisson
        mesh, report["reconstruction"] = reconstruct_from_points(scene.points, sec, return_report=True)
    else:
        mesh = scene.mesh
        report["reconstruction"] = {"method": method, "faces": len(mesh.faces), "vertices": len(mesh.vertices)}
    if cfg.clean.enabled:
        mesh, report["clean"] = clean_mesh(mesh, cfg.clean)
    log.info("scene %s meshed by %s: %d faces", scene.scene_id, method, len(mesh.faces))
    return mesh, report
