"""The site grid: a square of ``n x n`` cells of ``cell`` metres, origin at the south-west corner.

Conventions (used by every module of the world package):

- Vertex ``(i, j)`` sits at ``x = j * cell, y = i * cell``; heights ``H`` are ``[n+1, n+1]``.
- Cell ``(i, j)`` spans ``[j, j+1] x [i, i+1]`` cells; ground rasters are ``[n, n]``.
- Each cell is two triangles split along the diagonal from ``(i, j)`` to ``(i+1, j+1)``;
  :meth:`SiteGrid.height_at` interpolates exactly on those triangles, so objects placed with
  it sit on the rendered surface.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SiteGrid:
    n: int
    cell: float

    @property
    def size(self) -> float:
        return self.n * self.cell

    def vertex_xy(self) -> tuple[np.ndarray, np.ndarray]:
        """x, y of every height-field vertex, each ``[n+1, n+1]``."""
        t = np.arange(self.n + 1) * self.cell
        return np.meshgrid(t, t)

    def cell_xy(self) -> tuple[np.ndarray, np.ndarray]:
        """x, y of every cell centre, each ``[n, n]``."""
        t = (np.arange(self.n) + 0.5) * self.cell
        return np.meshgrid(t, t)

    def cell_of(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cell (row, col) holding each point, clipped to the grid."""
        i = np.clip(np.floor(np.asarray(y) / self.cell).astype(np.int64), 0, self.n - 1)
        j = np.clip(np.floor(np.asarray(x) / self.cell).astype(np.int64), 0, self.n - 1)
        return i, j

    def inside(self, x: np.ndarray, y: np.ndarray, margin: float = 0.0) -> np.ndarray:
        x, y = np.asarray(x), np.asarray(y)
        return (x >= margin) & (y >= margin) & (x <= self.size - margin) & (y <= self.size - margin)

    def lookup(self, raster: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Value of a cell raster ``[n, n]`` at points."""
        i, j = self.cell_of(x, y)
        return raster[i, j]

    def height_at(self, H: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Terrain height at points, interpolated on the two triangles of each cell."""
        x = np.clip(np.asarray(x, dtype=np.float64), 0.0, self.size)
        y = np.clip(np.asarray(y, dtype=np.float64), 0.0, self.size)
        gx, gy = x / self.cell, y / self.cell
        j = np.clip(np.floor(gx).astype(np.int64), 0, self.n - 1)
        i = np.clip(np.floor(gy).astype(np.int64), 0, self.n - 1)
        fx, fy = gx - j, gy - i
        z00, z10, z01, z11 = H[i, j], H[i, j + 1], H[i + 1, j], H[i + 1, j + 1]
        lower = z00 + fx * (z10 - z00) + fy * (z11 - z10)  # triangle (00, 10, 11), fx >= fy
        upper = z00 + fy * (z01 - z00) + fx * (z11 - z01)  # triangle (00, 11, 01), fx < fy
        return np.where(fx >= fy, lower, upper)

    def cell_mean(self, H: np.ndarray) -> np.ndarray:
        """Mean of the four corner heights of each cell, ``[n, n]``."""
        return 0.25 * (H[:-1, :-1] + H[:-1, 1:] + H[1:, :-1] + H[1:, 1:])

    def slope_deg(self, H: np.ndarray) -> np.ndarray:
        """Steepest slope of each cell in degrees, ``[n, n]``."""
        gx = 0.5 * ((H[:-1, 1:] - H[:-1, :-1]) + (H[1:, 1:] - H[1:, :-1])) / self.cell
        gy = 0.5 * ((H[1:, :-1] - H[:-1, :-1]) + (H[1:, 1:] - H[:-1, 1:])) / self.cell
        return np.degrees(np.arctan(np.hypot(gx, gy)))

    def cell_corner_mask(self, cells: np.ndarray) -> np.ndarray:
        """Vertices ``[n+1, n+1]`` touched by any True cell of ``cells [n, n]``."""
        m = np.zeros((self.n + 1, self.n + 1), bool)
        m[:-1, :-1] |= cells
        m[:-1, 1:] |= cells
        m[1:, :-1] |= cells
        m[1:, 1:] |= cells
        return m

    def rasterize_polygon(self, poly: np.ndarray) -> np.ndarray:
        """Cells whose centre lies inside polygon ``poly [K, 2]`` (bool ``[n, n]``)."""
        out = np.zeros((self.n, self.n), bool)
        lo = np.floor(poly.min(0) / self.cell).astype(int)
        hi = np.ceil(poly.max(0) / self.cell).astype(int)
        j0, i0 = np.clip(lo, 0, self.n)
        j1, i1 = np.clip(hi, 0, self.n)
        if i1 <= i0 or j1 <= j0:
            return out
        t_x = (np.arange(j0, j1) + 0.5) * self.cell
        t_y = (np.arange(i0, i1) + 0.5) * self.cell
        X, Y = np.meshgrid(t_x, t_y)
        out[i0:i1, j0:j1] = points_in_polygon(np.stack([X.ravel(), Y.ravel()], 1), poly).reshape(X.shape)
        return out


def points_in_polygon(pts: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd test of points ``[N, 2]`` against a simple polygon ``[K, 2]``."""
    x, y = pts[:, 0:1], pts[:, 1:2]
    a, b = poly, np.roll(poly, -1, axis=0)
    ax, ay, bx, by = a[:, 0], a[:, 1], b[:, 0], b[:, 1]
    crosses = (ay > y) != (by > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        xint = ax + (y - ay) * (bx - ax) / (by - ay)
    return np.count_nonzero(crosses & (x < xint), axis=1) % 2 == 1


def polyline_distance(points: np.ndarray, line: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance from points ``[N, 2]`` to a polyline ``[P, 2]`` and the arc length of the foot point."""
    a, b = line[:-1], line[1:]
    seg = b - a
    seg_len = np.linalg.norm(seg, axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg_len)])
    best = np.full(len(points), np.inf)
    s_best = np.zeros(len(points))
    for k in range(len(a)):  # polylines here are short; points are many (vectorised)
        d = points - a[k]
        t = np.clip(d @ seg[k] / max(seg_len[k] ** 2, 1e-12), 0.0, 1.0)
        dist = np.linalg.norm(d - t[:, None] * seg[k], axis=1)
        closer = dist < best
        best[closer] = dist[closer]
        s_best[closer] = cum[k] + t[closer] * seg_len[k]
    return best, s_best
