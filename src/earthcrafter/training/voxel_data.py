"""Voxel tiles as training samples: manifest checks, random crops under a voxel budget, flips,
quarter turns and sub-cell shifts.

Tiles are listed by a manifest table (``tile_id, scene_id, num_voxels, split, path``) and
read with a ``read_tile(path) -> tile`` callable whose result has ``tile_id``, ``coords``
[N, 3] ints in ``[0, L)``, optional ``feats`` [N, C], ``semantic`` [N] and a ``meta`` dict
with ``L`` (earthcrafter.io.tiles.read_tile is the real one). Augmentation is a pure
function of the draw's seed (see training.sampler), so it is identical whichever worker or
rank loads the sample, and identical again after resuming.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch.utils.data import Dataset

from earthcrafter.geometry.augment import GridTransform
from earthcrafter.io.import_common import some_names
from earthcrafter.seeding import draw_seed
from earthcrafter.training.sampler import Draw

log = logging.getLogger(__name__)


class VoxelDataConfig(BaseModel):
    """How tiles become samples (``data:`` in a model's parameters)."""

    model_config = ConfigDict(extra="forbid")

    max_voxels: int = Field(250_000, ge=1, description="voxel budget per sample: larger tiles are cropped (paper 250k)")
    crop_size: int | None = Field(
        None, ge=8, multiple_of=8, description="random xy crop edge in voxels at training (None: whole tile)"
    )
    flip: bool = Field(True, description="random x / y flips at training")
    rotate: bool = Field(False, description="random quarter turns about z at training (with flip: all 8 symmetries)")
    subcell_shift: bool = Field(
        False,
        description="random shifts of up to 7 voxels either way per axis at training, so a tile's content falls on the "
        "L/8 cell grid at every offset (never moves a voxel out of the tile)",
    )
    train_split: str = "train"
    val_split: str = "val"
    max_val_tiles: int = Field(0, ge=0, description="validate on this many evenly spaced tiles (0: all)")
    train_fraction: float = Field(
        1.0, gt=0, le=1,
        description="train on this fraction of the training tiles, evenly spaced over the tile_id-sorted split so "
        "every scene keeps some (paper Table 3's smaller 'ablation' dataset against the whole 'global' one)",
    )
    cache_tiles: bool = Field(False, description="keep decoded tiles in memory (small datasets)")
    root: str | None = Field(None, description="folder that relative manifest paths start from (default: cwd)")


@dataclass
class VoxelSample:
    """One (augmented) tile. ``coords`` int32 [N, 3] sorted by (x, y, z), in ``[0, L)``."""

    tile_id: str
    coords: torch.Tensor
    L: int
    seed: int  # per-draw seed for any randomness the model needs (e.g. VAE posterior noise)
    feats: torch.Tensor | None = None
    semantic: torch.Tensor | None = None


def check_manifest(
    manifest: pd.DataFrame,
    split: str,
    root: str | Path | None = None,
    path_columns: tuple[str, ...] = ("path",),
    what: str = "voxel manifest",
    optional_path_columns: tuple[str, ...] = (),
) -> pd.DataFrame:
    """The manifest rows of ``split`` with the files of ``path_columns`` resolved against ``root``
    (default: cwd) and present; fail clearly on any problem. ``what`` names the manifest in errors.
    ``optional_path_columns`` are resolved where the manifest has them, and may name absent files."""
    missing_cols = [c for c in ("tile_id", "split", *path_columns) if c not in manifest.columns]
    if missing_cols:
        raise ValueError(f"{what} lacks column(s) {missing_cols}; has {list(manifest.columns)}")
    rows = manifest[manifest["split"] == split].reset_index(drop=True)
    if rows.empty:
        counts = manifest["split"].value_counts().to_dict()
        hint = ""
        if "scene_id" in manifest.columns and manifest["scene_id"].nunique() < 5:
            hint = (f"; with {manifest['scene_id'].nunique()} scene(s), a split by scene may leave it empty: "
                    "voxelization.split.by: block splits inside them, by blocks (docs/features_and_tiles.md)")  # fmt: skip
        raise ValueError(f"{what} has no tiles in split {split!r} (splits present: {counts}){hint}")
    base = Path(root) if root is not None else Path.cwd()
    resolve = lambda p: Path(p) if Path(p).is_absolute() else base / p  # noqa: E731
    for col in path_columns:
        paths = [resolve(p) for p in rows[col]]
        absent = missing_files(paths)
        if absent:
            label = "tile" if col == "path" else col
            raise FileNotFoundError(f"{what} split {split!r}: {len(absent)} {label} file(s) missing: "
                                    f"{some_names(absent)}")  # fmt: skip
        rows[col] = [str(p) for p in paths]
    for col in (c for c in optional_path_columns if c in rows.columns):  # blank or NA: no file
        rows[col] = [str(resolve(p)) if isinstance(p, str) and p else "" for p in rows[col]]
    return rows


def missing_files(paths: list[Path]) -> list[str]:
    """The ``paths`` that are not files, found with one directory listing per folder instead of a
    ``stat`` per file (447k tiles on a network filesystem, on every rank)."""
    by_folder: dict[Path, list[Path]] = {}
    for p in paths:
        by_folder.setdefault(p.parent, []).append(p)
    absent = []
    for folder, members in by_folder.items():
        try:
            with os.scandir(folder) as entries:
                names = {e.name for e in entries if e.is_file()}
        except (FileNotFoundError, NotADirectoryError):
            names = set()
        absent += [str(p) for p in members if p.name not in names]
    return absent


def rows_fingerprint(rows: pd.DataFrame, path_columns: tuple[str, ...]) -> str:
    """SHA-256 of a dataset's identity: its tile ids with the byte sizes of their files (the
    trainer resumes a checkpoint only onto the data it was trained on)."""
    h = hashlib.sha256()
    ordered = rows.sort_values("tile_id")
    for tile_id, *paths in zip(ordered["tile_id"], *(ordered[c] for c in path_columns)):
        sizes = [str(os.stat(p).st_size) if p else "-" for p in paths]
        h.update(f"{tile_id}|{'|'.join(sizes)}\n".encode())
    return h.hexdigest()


def evenly_spaced(n: int, k: int) -> np.ndarray:
    """Sorted unique indices of about ``k`` rows spread evenly over ``n`` (first and last included)."""
    return np.unique(np.linspace(0, n - 1, k).round().astype(int))


def split_rows(manifest: pd.DataFrame, split: str, config: VoxelDataConfig) -> pd.DataFrame:
    """The manifest rows a dataset of ``split`` uses: checked (:func:`check_manifest`), then thinned
    to ``max_val_tiles`` (validation) or ``train_fraction`` (training) evenly spaced tiles."""
    rows = check_manifest(manifest, split, config.root)
    if split == config.val_split:
        keep = config.max_val_tiles
    elif split == config.train_split and config.train_fraction < 1:
        keep = max(1, round(config.train_fraction * len(rows)))
    else:
        keep = 0
    if 0 < keep < len(rows):
        # evenly spaced over the (tile_id-sorted) split, so every scene stays represented
        rows = rows.iloc[evenly_spaced(len(rows), keep)].reset_index(drop=True)
    return rows


def crop_to_budget(coords: np.ndarray, max_voxels: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of a square xy crop holding at most ``max_voxels`` voxels.

    The crop is the largest Chebyshev (xy) ring around a random occupied column that fits
    the budget, so whole columns are kept: no voxel loses its vertical neighbours.
    """
    n = len(coords)
    if n <= max_voxels:
        return np.ones(n, dtype=bool)
    centre = coords[rng.integers(n), :2]
    d = np.abs(coords[:, :2] - centre).max(axis=1)
    counts = np.bincount(d)
    cum = np.cumsum(counts)
    fits = np.nonzero(cum <= max_voxels)[0]
    if len(fits):
        return d <= fits[-1]
    # Even the centre column exceeds the budget: keep a random subset of it.
    mask = np.zeros(n, dtype=bool)
    column = np.nonzero(d == 0)[0]
    mask[rng.choice(column, size=max_voxels, replace=False)] = True
    return mask


def random_window(coords: np.ndarray, size: int, L: int, rng: np.random.Generator) -> np.ndarray:
    """Mask of a random xy window of edge ``size`` containing a random occupied voxel.

    The window origin is a multiple of 8 (``size`` is one too), so the L/8 cells inside the
    window stay whole (until ``subcell_shift`` moves the sample).
    """
    if size >= L:
        return np.ones(len(coords), dtype=bool)
    anchor = coords[rng.integers(len(coords)), :2]
    lo = np.empty(2, dtype=np.int64)
    for axis in range(2):
        first = -(-max(0, anchor[axis] - size + 1) // 8)  # ceil to a multiple of 8
        last = min(anchor[axis], L - size) // 8
        lo[axis] = 8 * rng.integers(first, last + 1)
    inside = (coords[:, :2] >= lo) & (coords[:, :2] < lo + size)
    return inside.all(axis=1)


def subcell_shift(coords: np.ndarray, L: int, rng: np.random.Generator, cell: int = 8) -> np.ndarray:
    """``coords`` moved by a random integer offset of at most ``cell - 1`` per axis that keeps
    every voxel inside ``[0, L)``.

    Why: crops start on the cell grid, so without this every training sample cuts the world into
    the same L/8 cells, and a latent sees each cell's content in one placement only (a dataset of
    a few thousand cell patterns, which a decoder learns by heart). Axes with no room (content
    touching both faces) are not moved.
    """
    lo, hi = coords.min(axis=0), coords.max(axis=0)
    down = np.minimum(cell - 1, lo)
    up = np.minimum(cell - 1, L - 1 - hi)
    offset = np.array([rng.integers(-d, u + 1) for d, u in zip(down, up)], dtype=coords.dtype)
    return coords + offset


class VoxelTileDataset(Dataset):
    """Map-style dataset over one split of the manifest.

    Index with an int (deterministic, no augmentation: validation) or a
    :class:`~earthcrafter.training.sampler.Draw` (seeded augmentation: training).
    """

    def __init__(
        self,
        manifest: pd.DataFrame,
        read_tile: Callable[[str], Any],
        *,
        split: str,
        L: int,
        config: VoxelDataConfig | None = None,
        augment: bool = False,
        with_feats: bool = False,
    ):
        self.config = config or VoxelDataConfig()
        self.rows = split_rows(manifest, split, self.config)
        self.read_tile, self.split, self.L = read_tile, split, L
        self.augment, self.with_feats = augment, with_feats
        self._cache: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.rows)

    def fingerprint(self) -> str:
        return rows_fingerprint(self.rows, ("path",))

    def _tile(self, index: int) -> Any:
        if index in self._cache:
            return self._cache[index]
        path = self.rows.at[index, "path"]
        tile = self.read_tile(path)
        L = int(tile.meta.get("L", self.L)) if getattr(tile, "meta", None) else self.L
        if L != self.L:
            raise ValueError(f"tile {path}: meta L={L} but the model is configured for L={self.L}")
        coords = np.asarray(tile.coords)
        if coords.ndim != 2 or coords.shape[1] != 3:
            raise ValueError(f"tile {path}: coords must be [N, 3], got {coords.shape}")
        if len(coords) == 0:
            raise ValueError(f"tile {path}: no voxels")
        if coords.min() < 0 or coords.max() >= self.L:
            raise ValueError(f"tile {path}: coords outside [0, {self.L}) (min {coords.min()}, max {coords.max()})")
        if self.config.cache_tiles:
            self._cache[index] = tile
        return tile

    def __getitem__(self, item: int | Draw) -> VoxelSample:
        if isinstance(item, Draw):
            index, seed = item.index, item.seed
        else:
            index, seed = int(item), (0, int(item))
        tile = self._tile(index)
        rng = np.random.default_rng(list(seed))
        coords = np.asarray(tile.coords, dtype=np.int64)
        keep = np.ones(len(coords), dtype=bool)
        if self.augment and self.config.crop_size is not None:
            keep = random_window(coords, self.config.crop_size, self.L, rng)
        sub = np.nonzero(keep)[0]
        # The budget applies always: a validation tile larger than it is cropped too (seeded).
        sub = sub[crop_to_budget(coords[sub], self.config.max_voxels, rng)]
        coords = coords[sub]
        if self.augment and (self.config.flip or self.config.rotate):
            # flips drawn as x then y, the turn after: configurations without `rotate` keep their draws
            fx, fy = (bool(rng.random() < 0.5), bool(rng.random() < 0.5)) if self.config.flip else (False, False)
            turns = int(rng.integers(4)) if self.config.rotate else 0
            coords = GridTransform.make(fx, fy, turns).coords(coords, self.L)
        if self.augment and self.config.subcell_shift:
            coords = subcell_shift(coords, self.L, rng)
        order = np.lexsort((coords[:, 2], coords[:, 1], coords[:, 0]))
        sub, coords = sub[order], coords[order]
        feats = semantic = None
        if self.with_feats:
            feats = torch.from_numpy(np.asarray(tile.feats)[sub].astype(np.float32))
            semantic = torch.from_numpy(np.asarray(tile.semantic)[sub].astype(np.int64))
        return VoxelSample(
            tile_id=str(tile.tile_id),
            coords=torch.from_numpy(coords.astype(np.int32)),
            L=self.L,
            seed=draw_seed(seed),
            feats=feats,
            semantic=semantic,
        )
