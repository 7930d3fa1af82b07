"""TexVAE samples: a voxel tile's selected features and its ground-truth views, augmented.

Per draw (:class:`~earthcrafter.training.sampler.Draw`; an int index means validation: no
augmentation, every view):

1. Read the tile and its views (``views_path`` column of the manifest, else
   ``<tile_id>.views.npz`` beside the tile), optionally cached in memory.
2. ``pool > 1`` (Table 2, TexB: a coarser L): voxels are merged by ``coords // pool`` with the
   mean of their features (normals re-normalised) and the voxel size grows by ``pool``. The
   views need no change: the cell ``ijk'`` spans ``[pool ijk', pool (ijk' + 1)) * voxel_size``
   of the same tile-local frame, whose centre is ``(ijk' + 0.5) * pool * voxel_size``. We pool
   stored tiles instead of voxelizing again so every row of Table 2 sees the same surfaces,
   views and features.
3. Crop to the voxel budget (and to ``crop_size`` windows) with
   :mod:`earthcrafter.geometry.augment`.
4. Flip / rotate the grid with its cameras and features (``GridTransform``).
5. Keep ``views_per_sample`` random views that see the crop: a view's mask is narrowed to the
   crop by its depth (:func:`~earthcrafter.geometry.augment.crop_mask`), one view at a time in
   random order until enough are found, so a paper-scale sample narrows two or three of its 16
   views rather than all. Resize them by area averaging to ``view_width`` and rescale K. Colour is kept *premultiplied* by the mask
   coverage, so any background can be composited exactly afterwards:
   ``gt = colour + (1 - coverage) * background``.
6. Mark the pixels where the sample's voxels lie behind geometry outside the tile or crop
   (:mod:`earthcrafter.geometry.visibility`): the photo does not show them, so the loss
   ignores them (``hidden_pixels: ignore``) instead of calling them background.

Features stay in the tile's float16 up to the model, which casts them to its own precision: half
the bytes through the loader's shared memory and the copy to the GPU, and the same values (the
flips and turns of the normals are exact in float16). Pooled features (``pool > 1``) are means,
kept in float32.

Bad items never crash a run silently: a tile with no voxels, non-finite features, or no view
that sees it becomes a :class:`SkippedSample` with the reason; :func:`collate_tex` drops it,
logs it (once per tile and reason) and counts it in the batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pydantic import Field
from torch.utils.data import Dataset

from earthcrafter.geometry.augment import GridTransform, crop_mask, random_voxel_crop
from earthcrafter.geometry.visibility import hidden_tile_pixels
from earthcrafter.io.tiles import TileViews, read_tile, read_views, tile_views_path
from earthcrafter.models.tex_vae import FeatureSet, feature_index
from earthcrafter.seeding import draw_seed
from earthcrafter.sparse import SparseTensor
from earthcrafter.training.sampler import Draw
from earthcrafter.training.voxel_data import (
    VoxelDataConfig,
    random_window,
    rows_fingerprint,
    split_rows,
)

log = logging.getLogger(__name__)

Background = Literal["random", "black", "white", "grey"]
_FIXED_BACKGROUNDS = {"black": (0.0, 0.0, 0.0), "white": (1.0, 1.0, 1.0), "grey": (0.5, 0.5, 0.5)}


class TexVAEDataConfig(VoxelDataConfig):
    """How tiles and their views become TexVAE samples (``train_texvae.data``)."""

    pool: int = Field(1, ge=1, le=8, description="merge voxels by coords // pool: a coarser L (TexB)")
    rotate: bool = Field(True, description="random 90-degree rotations about z at training")
    view_width: int = Field(64, ge=8, description="views are area-resized to this width (height keeps the aspect)")
    views_per_sample: int = Field(4, ge=0, description="random views per training sample (0: all)")
    val_views: int = Field(0, ge=0, description="views per validation tile, the first ones (0: all)")
    min_view_coverage: float = Field(
        0.002, ge=0, lt=1, description="a view is used when at least this fraction of its pixels shows the tile"
    )
    background: Background = Field("random", description="training background behind the tile (random: per view)")
    val_background: Background = Field("black", description="validation background")
    hidden_pixels: Literal["ignore", "background"] = Field(
        "ignore",
        description="pixels where tile geometry hides behind geometry outside the tile (or crop): "
        "ignore them in the loss, or treat them as background as the mask alone says",
    )


@dataclass
class ViewSet:
    """Ground-truth views of one sample, resized.

    colour: [V, H, W, 3] float32, tile colour in [0, 1] premultiplied by ``coverage``.
    coverage: [V, H, W] float32 in [0, 1], the fraction of each pixel that shows the tile.
    K: [V, 3, 3] float32 pixel intrinsics; world_to_camera: [V, 4, 4] float32 (tile-local frame).
    background: [V, 3] float32 colour to render behind the tile and composite the ground truth on.
    hidden: [V, H, W] float32 in [0, 1], the fraction of each pixel where the tile is hidden
        behind geometry outside it (unknown to the photo; None: none marked).
    """

    colour: torch.Tensor
    coverage: torch.Tensor
    K: torch.Tensor
    world_to_camera: torch.Tensor
    background: torch.Tensor
    names: list[str] = field(default_factory=list)
    hidden: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.colour.shape[0]

    @property
    def height(self) -> int:
        return self.colour.shape[1]

    @property
    def width(self) -> int:
        return self.colour.shape[2]

    def target(self) -> torch.Tensor:
        """[V, H, W, 3] the ground truth composited on ``background``."""
        return self.colour + (1.0 - self.coverage[..., None]) * self.background[:, None, None, :]

    def loss_target(self, pred: torch.Tensor) -> torch.Tensor:
        """:meth:`target` with hidden pixels replaced by the (detached) prediction ``pred``
        [V, H, W, 3]: every image loss is blind to what the photo cannot show."""
        target = self.target()
        if self.hidden is None:
            return target
        h = self.hidden[..., None]
        return target + h * (pred.detach() - target)

    def mask(self, threshold: float = 0.5) -> torch.Tensor:
        """[V, H, W] bool: pixels that mostly show the tile (where metrics are measured)."""
        return self.coverage > threshold

    def to(self, device, non_blocking: bool = False) -> ViewSet:
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> ViewSet:
        return self._map(torch.Tensor.pin_memory)

    def _map(self, fn) -> ViewSet:
        return replace(self, colour=fn(self.colour), coverage=fn(self.coverage), K=fn(self.K),
                       world_to_camera=fn(self.world_to_camera), background=fn(self.background),
                       hidden=None if self.hidden is None else fn(self.hidden))  # fmt: skip


@dataclass
class TexSample:
    tile_id: str
    coords: torch.Tensor  # int32 [N, 3]
    feats: torch.Tensor  # [N, C] selected channels, float16 as stored (float32 when pooled)
    voxel_size: float
    views: ViewSet
    seed: int = 0  # the draw's seed for the model's own randomness (posterior noise)


@dataclass
class SkippedSample:
    tile_id: str
    reason: str


@dataclass
class TexBatch:
    """A collated batch. ``voxels`` is None when every sample of the batch was skipped."""

    voxels: SparseTensor | None
    voxel_size: torch.Tensor  # [B]
    views: list[ViewSet]
    tile_ids: list[str]
    skipped: list[SkippedSample] = field(default_factory=list)
    seeds: torch.Tensor | None = None  # int64 [B]: each sample's draw seed

    def __len__(self) -> int:
        return len(self.tile_ids)

    def to(self, device, non_blocking: bool = False) -> TexBatch:
        return self._map(lambda x: x.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> TexBatch:
        """Page-locked copies of every tensor that goes to the GPU (the DataLoader calls this)."""
        return self._map(lambda x: x.pin_memory())

    def _map(self, fn) -> TexBatch:
        """``fn`` on what goes to the GPU: the voxels, the voxel sizes and each sample's views."""
        return TexBatch(None if self.voxels is None else fn(self.voxels), fn(self.voxel_size),
                        [fn(v) for v in self.views], list(self.tile_ids), list(self.skipped), self.seeds)  # fmt: skip


_reported: set[tuple[str, str]] = set()


def collate_tex(samples: list[TexSample | SkippedSample]) -> TexBatch:
    """Batch the valid samples; log each skipped tile (once per reason) and keep the count."""
    good = [s for s in samples if isinstance(s, TexSample)]
    skipped = [s for s in samples if isinstance(s, SkippedSample)]
    for s in skipped:
        if (s.tile_id, s.reason) not in _reported:
            _reported.add((s.tile_id, s.reason))
            log.warning("TexVAE: skipping tile %s: %s", s.tile_id, s.reason)
    if not good:
        return TexBatch(None, torch.zeros(0), [], [], skipped)
    voxels = SparseTensor.from_list([s.feats for s in good], [s.coords for s in good])
    vs = torch.tensor([s.voxel_size for s in good], dtype=torch.float32)
    seeds = torch.tensor([s.seed for s in good], dtype=torch.int64)
    return TexBatch(voxels, vs, [s.views for s in good], [s.tile_id for s in good], skipped, seeds)


# --------------------------------------------------------------------------- tile transforms

def pool_voxels(
    coords: np.ndarray, feats: np.ndarray, factor: int, normal_slice: slice | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Merge voxels by ``coords // factor``: parents sorted by (x, y, z), features averaged.

    ``normal_slice``: channels holding unit normals, re-normalised after averaging.
    """
    if factor == 1:
        return coords, feats
    parent = np.asarray(coords, np.int64) // factor
    uniq, inverse = np.unique(parent, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    sums = np.zeros((len(uniq), feats.shape[1]), np.float64)
    np.add.at(sums, inverse, feats.astype(np.float64))
    mean = sums / np.bincount(inverse, minlength=len(uniq))[:, None]
    if normal_slice is not None:
        n = mean[:, normal_slice]
        mean[:, normal_slice] = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
    return uniq.astype(np.int32), mean.astype(np.float32)


def resize_views(views: TileViews, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Area-resize to ``width`` (height keeps the aspect): premultiplied colour, coverage, K."""
    h, w = views.rgb.shape[1:3]
    height = max(1, round(h * width / w))
    mask = torch.from_numpy(views.mask).float()[:, None]  # [V, 1, h, w]
    rgb = torch.from_numpy(views.rgb).float().permute(0, 3, 1, 2) / 255.0 * mask
    if (height, width) != (h, w):
        rgb = F.interpolate(rgb, size=(height, width), mode="area")
    K = torch.from_numpy(views.K).float().clone()
    K[:, 0] *= width / w  # pixel-centre convention: continuous coords scale exactly
    K[:, 1] *= height / h
    return rgb.permute(0, 2, 3, 1).contiguous(), resize_mask(views.mask, (height, width)), K


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """[V, h, w] bool -> [V, *size] float32 fraction of each resized pixel, by area averaging."""
    m = torch.from_numpy(mask).float()[:, None]
    if tuple(m.shape[2:]) != tuple(size):
        m = F.interpolate(m, size=size, mode="area")
    return m[:, 0].contiguous()


def backgrounds(kind: Background, n: int, rng: np.random.Generator) -> torch.Tensor:
    if kind == "random":
        return torch.from_numpy(rng.random((n, 3)).astype(np.float32))
    return torch.tensor(_FIXED_BACKGROUNDS[kind], dtype=torch.float32).expand(n, 3).clone()


# --------------------------------------------------------------------------- dataset

@dataclass
class _Tile:
    tile_id: str
    coords: np.ndarray  # int32 [N, 3]
    feats: np.ndarray  # [N, C] selected channels, float16 as stored (float32 when pooled)
    normal_cols: np.ndarray | None  # positions of f_n inside the selected channels
    L: int
    voxel_size: float
    views: TileViews


class TexVAEDataset(Dataset):
    """Map-style dataset over one split of the voxel manifest (see the module docstring)."""

    def __init__(
        self,
        manifest: pd.DataFrame,
        *,
        split: str,
        features: FeatureSet,
        config: TexVAEDataConfig | None = None,
        augment: bool = False,
        read_tile_fn: Callable[[str], Any] = read_tile,
        read_views_fn: Callable[[str], TileViews] = read_views,
    ):
        self.config = config or TexVAEDataConfig()
        self.rows = split_rows(manifest, split, self.config)
        self.split, self.features, self.augment = split, features, augment
        self.read_tile_fn, self.read_views_fn = read_tile_fn, read_views_fn
        self._cache: dict[int, _Tile] = {}
        self.in_channels: int | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def fingerprint(self) -> str:
        return rows_fingerprint(self.rows, ("path",))

    def views_path(self, index: int) -> Path:
        row = self.rows.iloc[index]
        tile_path = Path(row["path"])
        vp = row.get("views_path") if "views_path" in self.rows.columns else None
        if vp is None or (isinstance(vp, float) and np.isnan(vp)):
            return tile_views_path(tile_path, row['tile_id'])
        vp = Path(vp)
        if vp.is_absolute():
            return vp
        return (Path(self.config.root) if self.config.root else Path.cwd()) / vp

    def layout_channels(self) -> int:
        """Selected input channels, from the first tile (all tiles of a manifest share a layout)."""
        if self.in_channels is None:
            tile = self.read_tile_fn(self.rows.at[0, "path"])
            self.in_channels = len(feature_index(self.features, tile.layout))
        return self.in_channels

    def grid(self) -> tuple[int, float]:
        """(L, voxel size in metres) the model sees, from the first tile, after pooling."""
        tile = self.read_tile_fn(self.rows.at[0, "path"])
        pool = self.config.pool
        return -(-int(tile.L) // pool), float(tile.voxel_size) * pool

    def _load(self, index: int) -> _Tile:
        if index in self._cache:
            return self._cache[index]
        path = self.rows.at[index, "path"]
        tile = self.read_tile_fn(path)
        layout = tile.layout
        idx = feature_index(self.features, layout)
        feats = np.asarray(tile.feats)
        if not np.array_equal(idx, np.arange(feats.shape[1])):  # f_feat selects every channel: no copy
            feats = feats[:, idx]
        normal_cols = None
        if "f_n" in layout and layout["f_n"].start in idx:
            normal_cols = np.searchsorted(idx, np.arange(layout["f_n"].start, layout["f_n"].stop))
        coords, L, vs = np.asarray(tile.coords, np.int32), int(tile.L), float(tile.voxel_size)
        pool = self.config.pool
        if pool > 1 and len(coords):
            nslice = slice(int(normal_cols[0]), int(normal_cols[-1]) + 1) if normal_cols is not None else None
            coords, feats = pool_voxels(coords, feats, pool, nslice)
            L, vs = -(-L // pool), vs * pool
        views = self.read_views_fn(str(self.views_path(index)))
        item = _Tile(str(tile.tile_id), coords, feats, normal_cols, L, vs, views)
        if self.config.cache_tiles:
            self._cache[index] = item
        return item

    def __getitem__(self, item: int | Draw) -> TexSample | SkippedSample:
        index, seed = (item.index, item.seed) if isinstance(item, Draw) else (int(item), (0, int(item)))
        rng = np.random.default_rng(list(seed))
        t = self._load(index)
        if len(t.coords) == 0:
            return SkippedSample(t.tile_id, "the tile has zero voxels")
        bad = ~np.isfinite(t.feats)
        if bad.any():
            return SkippedSample(t.tile_id, f"{int(bad.sum())} non-finite feature value(s) in {int(bad.any(1).sum())} voxel(s)")
        coords, feats, box = self._crop(t, rng)
        tr = None
        if self.augment and (self.config.flip or self.config.rotate):
            tr = GridTransform.random(rng, flip=self.config.flip, rotate=self.config.rotate)
            coords = tr.coords(coords, t.L)
            if t.normal_cols is not None:
                n = tr.vectors(feats[:, t.normal_cols])
                feats = feats.copy()
                feats[:, t.normal_cols] = n
        # Views are chosen before they are transformed (a view's coverage does not change when it is
        # mirrored), so only the chosen few are flipped, not all of a tile's views.
        views = t.views
        chosen, masks = self._choose_views(views, box, t.voxel_size, rng)
        if not len(chosen):
            return SkippedSample(
                t.tile_id, f"no view sees the tile (coverage < {self.config.min_view_coverage} in all {len(views)} views)"
            )
        sub = TileViews(views.rgb[chosen], masks, views.depth[chosen], views.K[chosen],
                        views.world_to_camera[chosen], [views.names[i] for i in chosen])  # fmt: skip
        if tr is not None:
            sub = tr.views(sub, t.L, t.voxel_size)
        colour, coverage, K = resize_views(sub, self.config.view_width)
        hidden = None
        if self.config.hidden_pixels == "ignore":
            hidden = resize_mask(hidden_tile_pixels(sub, coords, t.voxel_size), colour.shape[1:3])
        kind = self.config.background if self.augment else self.config.val_background
        vset = ViewSet(colour, coverage, K, torch.from_numpy(sub.world_to_camera).float(),
                       backgrounds(kind, len(chosen), rng), list(sub.names), hidden)  # fmt: skip
        order = np.lexsort((coords[:, 2], coords[:, 1], coords[:, 0]))
        return TexSample(
            t.tile_id,
            torch.from_numpy(np.ascontiguousarray(coords[order]).astype(np.int32)),
            torch.from_numpy(np.ascontiguousarray(feats[order])),
            t.voxel_size,
            vset,
            draw_seed(seed),
        )

    def _crop(self, t: _Tile, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, tuple | None]:
        """Window crop (training, ``crop_size``) and budget crop (always): the sample's coords and
        features, and the crop's box ``(corner, size)`` in voxels (None: the whole tile)."""
        keep = np.arange(len(t.coords))
        if self.augment and self.config.crop_size is not None:
            keep = np.flatnonzero(random_window(t.coords, self.config.crop_size, t.L, rng))
        sub, _ = random_voxel_crop(t.coords[keep], self.config.max_voxels, rng)
        keep = keep[sub]
        if len(keep) == len(t.coords):
            return t.coords, t.feats, None
        # Coords stay in the tile's frame, and so do the cameras: the box only narrows the masks.
        coords = t.coords[keep]
        lo, hi = coords.min(axis=0), coords.max(axis=0) + 1
        return coords, t.feats[keep], (lo, hi - lo)

    def _choose_views(
        self, views: TileViews, box: tuple | None, voxel_size: float, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """The sample's views (sorted indices) and their masks narrowed to ``box``: at training
        ``views_per_sample`` random ones whose narrowed coverage reaches ``min_view_coverage``, at
        validation the first ``val_views`` such (0: all).

        Narrowing only removes pixels, so the views are tried in random order among those whose whole
        mask reaches the coverage, and narrowed one at a time until enough pass: the same uniform
        choice among the passing views as narrowing every view first, for the cost of a few.
        """
        threshold = max(self.config.min_view_coverage, 1e-12)
        whole = views.mask.reshape(len(views), -1).mean(axis=1) if len(views) else np.zeros(0)
        candidates = np.flatnonzero(whole >= threshold)
        if self.augment:
            k, order = self.config.views_per_sample or len(candidates), rng.permutation(candidates)
        else:
            k, order = self.config.val_views or len(candidates), candidates
        chosen, masks = [], []
        for i in order:
            if len(chosen) == k:
                break
            mask = views.mask[i] if box is None else crop_mask(views, i, box[0], box[1], voxel_size)
            if box is None or mask.mean() >= threshold:
                chosen.append(int(i))
                masks.append(mask)
        if not chosen:
            return np.zeros(0, np.int64), views.mask[:0]
        order = np.argsort(chosen)
        return np.asarray(chosen)[order], np.stack([masks[j] for j in order])
