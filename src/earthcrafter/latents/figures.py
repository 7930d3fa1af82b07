"""Figures of cached latents: channel statistics, and a top view of one tile's latents."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from earthcrafter.io.latents import read_latent_tile
from earthcrafter.io.tiles import read_tile_coords


def channel_stats_figure(stats: dict):
    """Mean ± std of every latent channel (training split), one panel per kind."""
    kinds = [k for k in ("struct", "tex") if k in stats]
    fig, axes = plt.subplots(1, len(kinds), figsize=(5 * len(kinds), 3.2), dpi=100, squeeze=False)
    for ax, kind in zip(axes[0], kinds):
        s = stats[kind]
        c = np.arange(s["channels"])
        ax.bar(c, s["mean"], yerr=s["std"], color="tab:blue", ecolor="tab:gray", capsize=2)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_title(f"{kind} latents: {s['count']:,} voxels")
        ax.set_xlabel("channel")
        ax.set_ylabel("mean ± std")
    fig.tight_layout()
    return fig


def top_view(coords: np.ndarray, values: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per (x, y) column of a ``size``² grid, the value of its highest voxel: ([size, size, ...], mask)."""
    order = np.lexsort((coords[:, 2], coords[:, 1], coords[:, 0]))  # by x, y, then z ascending
    c, v = coords[order], values[order]
    last = np.ones(len(c), bool)
    last[:-1] = (c[1:, 0] != c[:-1, 0]) | (c[1:, 1] != c[:-1, 1])
    img = np.zeros((size, size, *values.shape[1:]), values.dtype)
    mask = np.zeros((size, size), bool)
    img[c[last, 1], c[last, 0]] = v[last]  # rows = y, columns = x
    mask[c[last, 1], c[last, 0]] = True
    return img, mask


def pca_rgb(x: np.ndarray) -> np.ndarray:
    """[N, C] -> [N, 3] in [0, 1]: the first three principal components, each min-max scaled
    (signs fixed so the largest loading is positive, for stable colours)."""
    x = x - x.mean(0)
    vt = np.linalg.svd(x, full_matrices=False)[2][:3]
    vt *= np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(1)])[:, None]
    y = np.pad(x @ vt.T, ((0, 0), (0, 3 - len(vt))))
    lo, hi = y.min(0), y.max(0)
    return (y - lo) / np.where(hi > lo, hi - lo, 1.0)


def latent_map_figure(tile_path: str, struct_path: str, tex_path: str | None, stats: dict):
    """Top view of one tile: surface height, and the first three principal components of the
    normalised latents of the highest latent voxel in each column (structure at L/8, texture at L)."""
    xyz, meta = read_tile_coords(tile_path)
    L = meta["L"]
    height, occupied = top_view(xyz, xyz[:, 2].astype(np.float32) * meta["voxel_size_m"], L)
    panels = [("surface height (m)", np.ma.masked_array(height, ~occupied), "terrain")]
    for kind, path in (("struct", struct_path), ("tex", tex_path)):
        if not path:
            continue
        lt = read_latent_tile(path)
        z = (lt.mean - np.asarray(stats[kind]["mean"])) / np.maximum(np.asarray(stats[kind]["std"]), 1e-6)
        img, mask = top_view(lt.coords, pca_rgb(z), -(-L // lt.stride))
        img[~mask] = 1.0
        panels.append((f"{kind} latents, PCA of {lt.channels} ch ({-(-L // lt.stride)}² cells)", img, None))
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4), dpi=100, squeeze=False)
    extent = (0, L * meta["voxel_size_m"], 0, L * meta["voxel_size_m"])
    for ax, (title, img, cmap) in zip(axes[0], panels):
        im = ax.imshow(img, origin="lower", extent=extent, cmap=cmap, interpolation="nearest")
        if cmap:
            fig.colorbar(im, ax=ax, fraction=0.046)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("x (m)")
    axes[0][0].set_ylabel("y (m)")
    fig.suptitle(f"tile {meta['tile_id']}", fontsize=10)
    fig.tight_layout()
    return fig
