"""The flows' conditions, as rasters over the latent columns of a tile ([G, G, C], G = L/8).

- ``semantic``: the semantic layout — per column, the class fractions of the tile's top surface.
- ``rgbd``: one aerial RGBD view of the tile lifted onto the columns — per column, the mean colour
  of the view's pixels that land in it, the highest point they reach (as a fraction of the tile's
  height) and whether any pixel lands there. The paper lifts an image with monocular depth (its
  "1-view RGBD" and image conditions); the tiles carry the depth of their views, so the lift is
  exact here. The view is the tile's most nadir one.
- ``rgb`` (an input, not a kind of model): a view without depth — an aerial photo. Its columns keep
  their colour and coverage; their height is :data:`UNKNOWN_HEIGHT`. A model trained on ``rgbd`` or
  ``mixed`` with ``height_dropout > 0`` takes it: in training, each sample's view loses its depth
  with that probability. (The paper lifts a photo by monocular depth and gives inputs without depth
  a dummy depth; here a photo's heights are that dummy, and the flows learn to do without them, so
  no depth network is needed.)
- ``mixed``: both rasters concatenated; in training each sample keeps one of them (the other is
  zeroed), as the paper trains on mixed inputs, and generation gives the one it has.
- ``none``: no condition (zeros are also the dropped condition of classifier-free guidance).
"""

from __future__ import annotations

import numpy as np
import torch

from earthcrafter.io.tiles import TileViews, VoxelTile
from earthcrafter.models.flow_net import CONDITION_PARTS, RGBD_CHANNELS, RGBD_HEIGHT, RGBD_SEEN, VIEW_CONDITIONS
from earthcrafter.semantics import NUM_CLASSES


EMPTY = 255  # class raster value of a voxel column with no surface
UNKNOWN_HEIGHT = -1.0  # the height channel of a seen column when the view has no depth (heights are in [0, 1])


def top_surface(coords: np.ndarray, semantic: np.ndarray, L: int) -> tuple[np.ndarray, np.ndarray]:
    """(classes [L, L] uint8: the class of each voxel column's highest voxel, EMPTY where the column
    is empty; heights [L, L] int64: that voxel's z, -1 where empty) of a tile's voxels."""
    classes, top = np.full((L, L), EMPTY, np.uint8), np.full((L, L), -1, np.int64)
    order = np.lexsort((coords[:, 2], coords[:, 1], coords[:, 0]))
    c, s = coords[order], semantic[order]
    last = np.ones(len(c), bool)  # the last (highest) voxel of each column
    last[:-1] = (c[1:, 0] != c[:-1, 0]) | (c[1:, 1] != c[:-1, 1])
    classes[c[last, 0], c[last, 1]] = s[last]
    top[c[last, 0], c[last, 1]] = c[last, 2]
    return classes, top


def cell_layout(raster: np.ndarray, cell: int) -> np.ndarray:
    """[X / cell, Y / cell, classes] float32 of a class raster [X, Y] (:func:`top_surface`'s, or a
    map's): per column of latent cells, the fraction of its voxel columns whose top is of each class
    (empty columns count nowhere). A raster whose sides are not multiples of ``cell`` is padded with
    empty columns."""
    X, Y = raster.shape
    pad = np.full((-(-X // cell) * cell, -(-Y // cell) * cell), EMPTY, np.uint8)
    pad[:X, :Y] = raster
    x, y = np.nonzero(pad != EMPTY)
    out = np.zeros((pad.shape[0] // cell, pad.shape[1] // cell, NUM_CLASSES), np.float32)
    np.add.at(out, (x // cell, y // cell, pad[x, y].astype(np.int64)), 1.0)
    return out / float(cell * cell)


def semantic_layout(coords: np.ndarray, semantic: np.ndarray, L: int, grid: int) -> np.ndarray:
    """[grid, grid, classes] float32: per column of latent cells, the class fractions of the tile's
    top surface (the highest voxel of every voxel column inside it; empty columns count nowhere)."""
    return cell_layout(top_surface(coords, semantic, L)[0], L // grid)


def nadir_view(views: TileViews) -> int:
    """Index of the view looking most straight down among those that see the tile (-1: none)."""
    sees = views.mask.reshape(len(views), -1).any(1) if len(views) else np.zeros(0, bool)
    if not sees.any():
        return -1
    down = views.world_to_camera[:, 2, 2]  # z of the camera's forward axis in the tile frame (-1: nadir)
    return int(np.argmin(np.where(sees, down, np.inf)))


def lift_view(views: TileViews, index: int) -> tuple[np.ndarray, np.ndarray]:
    """(points [N, 3] in the tile frame, colours [N, 3] in 0-1) of the view's pixels on the tile."""
    depth, mask = views.depth[index], views.mask[index]
    v, u = np.nonzero(mask & np.isfinite(depth))
    d = depth[v, u].astype(np.float64)
    K = views.K[index]
    cam = np.stack([(u + 0.5 - K[0, 2]) / K[0, 0] * d, (v + 0.5 - K[1, 2]) / K[1, 1] * d, d], 1)
    E = views.world_to_camera[index]
    points = (cam - E[:3, 3]) @ E[:3, :3]  # R^T (p - t)
    return points, views.rgb[index][v, u].astype(np.float32) / 255.0


def rgbd_layout(views: TileViews, L: int, grid: int, voxel_size: float, index: int | None = None) -> np.ndarray:
    """[grid, grid, RGBD_CHANNELS] float32 of one view (default: :func:`nadir_view`); zeros when
    no view sees the tile."""
    out = np.zeros((grid, grid, RGBD_CHANNELS), np.float32)
    index = nadir_view(views) if index is None else index
    if index < 0:
        return out
    points, rgb = lift_view(views, index)
    ij = np.floor(points[:, :2] / (voxel_size * L / grid)).astype(np.int64)
    inside = (ij >= 0).all(1) & (ij < grid).all(1)
    ij, z, rgb = ij[inside], points[inside, 2] / (voxel_size * L), rgb[inside]
    count = np.zeros((grid, grid), np.float32)
    np.add.at(count, (ij[:, 0], ij[:, 1]), 1.0)
    for c in range(3):
        np.add.at(out[..., c], (ij[:, 0], ij[:, 1]), rgb[:, c])
    seen = count > 0
    out[..., :3][seen] /= count[seen][:, None]
    top = np.full((grid, grid), -np.inf, np.float32)
    np.maximum.at(top, (ij[:, 0], ij[:, 1]), z.astype(np.float32))
    out[..., RGBD_HEIGHT] = np.where(seen, np.clip(top, 0.0, 1.0), 0.0)
    out[..., RGBD_SEEN] = seen
    return out


# Bump when a raster's definition changes: cached rasters of another version are not used.
RASTERS_VERSION = 1


def tile_rasters(tile: VoxelTile, views: TileViews | None, grid: int) -> dict[str, np.ndarray]:
    """The parts every condition is made of, for one tile: ``{"semantic": ..., "rgbd": ...}`` (no
    "rgbd" without ``views``). ``cache_latents`` stores them per tile (:mod:`earthcrafter.io.latents`)."""
    parts = {"semantic": semantic_layout(tile.coords, tile.semantic, tile.L, grid)}
    if views is not None:
        parts["rgbd"] = rgbd_layout(views, tile.L, grid, tile.voxel_size)
    return parts


def join_condition(kind: str, parts: dict[str, np.ndarray], tile_id: str) -> np.ndarray:
    """The ``kind`` condition raster from a tile's :func:`tile_rasters`."""
    if kind not in ("semantic", "none") and kind not in VIEW_CONDITIONS:
        raise ValueError(f"no condition raster for condition {kind!r}")
    if kind in VIEW_CONDITIONS and "rgbd" not in parts:
        raise ValueError(f"tile {tile_id}: the {kind} condition needs the tile's views (<tile_id>.views.npz)")
    names = {"semantic": ["semantic"], "none": ["semantic"], "rgbd": ["rgbd"], "mixed": ["semantic", "rgbd"]}[kind]
    return np.concatenate([parts[n] for n in names], -1)


def condition_raster(kind: str, tile: VoxelTile, views: TileViews | None, grid: int) -> np.ndarray:
    """The ``kind`` condition of a tile ([grid, grid, C]); ``views`` are needed for rgbd / mixed.
    (``none`` gives the semantic layout: the flows zero it, as the dropped condition.)"""
    return join_condition(kind, tile_rasters(tile, views if kind in VIEW_CONDITIONS else None, grid), tile.tile_id)


def keep_part(raster: torch.Tensor, kind: str, part: str) -> torch.Tensor:
    """A ``kind`` raster [..., C] holding only ``part`` ("semantic" or "rgbd"), the rest zeroed —
    what a mixed model is given when only that input exists."""
    if kind != "mixed":
        if part != kind:
            raise ValueError(f"a model trained with condition {kind!r} cannot take the {part} condition "
                             f"(train it with {part!r} or 'mixed')")
        return raster
    out = torch.zeros_like(raster)
    if part == "semantic":
        out[..., :NUM_CLASSES] = raster[..., :NUM_CLASSES]
    elif part == "rgbd":
        out[..., NUM_CLASSES:] = raster[..., NUM_CLASSES:]
    else:
        raise ValueError(f"condition part must be semantic or rgbd, got {part!r}")
    return out


def mix_parts(raster: torch.Tensor, kind: str, generator: torch.Generator | None = None) -> torch.Tensor:
    """Training: for a mixed raster [B, G, G, C], each sample keeps one part, at random."""
    if kind != "mixed":
        return raster
    first = CONDITION_PARTS["mixed"][0]
    pick = torch.rand(raster.shape[0], generator=generator, device=raster.device) < 0.5
    keep = torch.zeros_like(raster)
    keep[..., :first] = pick.reshape(-1, 1, 1, 1).to(raster.dtype)
    keep[..., first:] = (~pick).reshape(-1, 1, 1, 1).to(raster.dtype)
    return raster * keep


def _view_start(kind: str) -> int:
    """The channel where a ``kind`` raster's RGBD view starts (after the classes when mixed)."""
    if kind not in VIEW_CONDITIONS:
        raise ValueError(f"a {kind!r} condition has no RGBD view (condition rgbd or mixed)")
    return NUM_CLASSES if kind == "mixed" else 0


def view_colours(raster: np.ndarray, kind: str) -> np.ndarray:
    """[..., 3] float in 0-1: the view's mean colour per column of a ``kind`` raster, white where the
    view sees nothing (what a photo shows of the tile)."""
    v = _view_start(kind)
    return np.where(raster[..., v + RGBD_SEEN, None] > 0, raster[..., v : v + 3], 1.0)


def without_depth(raster: torch.Tensor, kind: str) -> torch.Tensor:
    """A ``kind`` raster [..., C] whose view has lost its depth: the height of every seen column
    becomes :data:`UNKNOWN_HEIGHT` (colour and coverage stay) — what a model gets from a photo."""
    view = _view_start(kind)
    h, seen = view + RGBD_HEIGHT, raster[..., view + RGBD_SEEN] > 0
    out = raster.clone()
    out[..., h] = torch.where(seen, torch.full_like(out[..., h], UNKNOWN_HEIGHT), out[..., h])
    return out


def drop_depth(raster: torch.Tensor, kind: str, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Training: each sample of a ``kind`` raster [B, G, G, C] loses its view's depth
    (:func:`without_depth`) with probability ``p``. ``p = 0`` draws nothing (the RNG stream of a
    run without it is unchanged)."""
    if p == 0:
        return raster
    if not 0 < p <= 1:
        raise ValueError(f"height dropout must be in [0, 1], got {p}")
    drop = torch.rand(raster.shape[0], generator=generator, device=raster.device) < p
    return torch.where(drop.reshape(-1, 1, 1, 1), without_depth(raster, kind), raster)


def model_condition(raster: torch.Tensor, kind: str, part: str | None = None) -> torch.Tensor | None:
    """What a ``kind``-conditioned model is given for a ``kind`` raster outside training: None for
    "none"; for "mixed", only ``part`` (default: the semantic layout — validation and previews score
    a mixed model on its layout input); ``part = "rgb"``: the view without its depth, a photo."""
    if kind == "none":
        return None
    if part == "rgb":
        return without_depth(keep_part(raster, kind, "rgbd"), kind)
    return keep_part(raster, kind, part or ("semantic" if kind == "mixed" else kind))


def from_semantic(layout: torch.Tensor, kind: str) -> torch.Tensor | None:
    """A ``kind``-conditioned model's input for a semantic layout [..., classes] alone (a map
    without views: large scenes); an rgbd-only model cannot take one."""
    if kind == "none":
        return None
    if kind == "rgbd":
        raise ValueError("this model is conditioned on RGBD views only; it cannot take a semantic map")
    if kind == "mixed":
        return torch.cat([layout, layout.new_zeros(*layout.shape[:-1], RGBD_CHANNELS)], -1)
    return layout
