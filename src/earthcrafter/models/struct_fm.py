"""StructFM: coarse-to-fine flow matching of the structure latents S_La (paper, Figure 5).

- **Coarse stage** (ClassSFM): a transformer flow on the full (L/8)³ grid whose single channel is
  the occupancy of each latent cell, +1 / -1. Sampled values > 0 give the cells.
- **Fine stage** (LatentSFM): a flow on those cells predicting their c_s = 32 normalised latents —
  the paper's Swin U-Net (``fine_arch: unet``, :class:`~earthcrafter.models.flow_unet.SparseFlowUNet`)
  or the one-resolution transformer. Cells whose latent comes out near zero are dropped (the "features of
  invalid voxels are zero" rule): trained with *voxel dilation* — extra neighbour cells whose
  target is 0 — so it learns to refine the coarse stage's cells.

The networks (:func:`stage_net`) are made of the sparse core's AdaLN transformer blocks (timestep)
with cross-attention to the condition tokens.
Condition (:mod:`earthcrafter.training.conditions`): per column of latent cells, the tile's
**semantic layout** (the class histogram of its top surface), or **one aerial RGBD view** lifted
onto the columns (colour, top height, coverage; the paper lifts an image by monocular depth, the
tiles carry depth), or both (mixed training), or none (zeros: classifier-free guidance).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from earthcrafter.flow.sampler import guidance
from earthcrafter.models.flow_net import COND_BLOCKS_HELP, HEIGHT_DROPOUT_HELP, SparseFlowNet, check_height_dropout
from earthcrafter.models.flow_unet import SparseFlowUNet, check_widths
from earthcrafter.sparse import SparseTensor
from earthcrafter.sparse.keys import SortedKeys, pack_coords


class StructFMConfig(BaseModel):
    """Sizes of both stages (the paper gives no StructFM widths; TRELLIS' SS flow uses 1024 x 24)."""

    model_config = ConfigDict(extra="forbid")

    grid: int = Field(8, ge=2, description="latent grid edge L/8")
    latent_channels: int = Field(32, ge=1, description="c_s")
    width: int = Field(128, ge=16)
    depth: int = Field(4, ge=1, description="transformer blocks per stage")
    num_heads: int = Field(4, ge=1)
    mlp_ratio: float = 4.0
    attn: Literal["full", "window"] = Field("full", description="self-attention over all cells, or shifted windows")
    window: int = Field(8, ge=2)
    condition: Literal["semantic", "rgbd", "mixed", "none"] = Field(
        "semantic", description="per latent column: the semantic layout, one aerial RGBD view lifted onto the "
        "columns, both (mixed: one of them per training sample, as the paper's mixed inputs), or none")
    cond_dropout: float = Field(0.1, ge=0, le=1, description="classifier-free guidance: condition dropped to zeros")
    height_dropout: float = Field(0.0, ge=0, le=1, description=HEIGHT_DROPOUT_HELP)
    cond_blocks: int = Field(0, ge=0, description=COND_BLOCKS_HELP)
    keep_fraction: float = Field(0.5, gt=0, lt=1, description="fine stage: keep a cell when more than this "
                                 "fraction of its channels has |z| > keep_threshold")  # fmt: skip
    keep_threshold: float = 0.3
    fine_arch: Literal["transformer", "unet"] = Field("transformer", description="the fine stage's (and DenseSFM's) "
                                                      "network: like the coarse stage, or the paper's Swin U-Net")
    unet_widths: list[int] = Field([128, 192, 256], description="fine U-Net widths at 1/1, 1/2, 1/4 of the latent "
                                   "grid (the last: full attention)")
    unet_depths: list[int] = Field([2, 2, 4], description="fine U-Net blocks per level, down and again up (the "
                                   "last: the middle)")
    coarse_patch: int = Field(1, ge=1, description="the coarse stage's tokens: patches of p³ cells of the grid "
                              "(p³ occupancy values each; grid / p tokens per edge), as TRELLIS patches its grid")

    @model_validator(mode="after")
    def _check(self) -> StructFMConfig:
        if self.grid % self.coarse_patch:
            raise ValueError(f"grid {self.grid} is not divisible by coarse_patch {self.coarse_patch}")
        unet = self.fine_arch == "unet"
        check_widths([self.width] + (self.unet_widths if unet else []), self.num_heads, self.unet_depths if unet else None)
        check_height_dropout(self.condition, self.height_dropout)
        return self


def stage_net(config: StructFMConfig, stage: str) -> nn.Module:
    """The network of one stage: ``coarse`` (1 channel, the transformer), ``fine`` or ``dense``
    (c_s channels, ``fine_arch``)."""
    if stage == "coarse":
        p = config.coarse_patch
        return SparseFlowNet(config, p**3, p**3, layout_scale=1 / p)
    C = config.latent_channels
    return SparseFlowUNet(config, C, C) if config.fine_arch == "unet" else SparseFlowNet(config, C, C)


def full_grid(batch: int, G: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Coords [B·G³, 4] of every cell of ``batch`` G³ grids (rows sorted by batch, x, y, z)."""
    ax = torch.arange(G, device=device)
    xyz = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3)
    b = torch.arange(batch, device=device).repeat_interleave(len(xyz))[:, None]
    return torch.cat([b, xyz.repeat(batch, 1)], 1).int()


def patchify_grid(values: torch.Tensor, batch: int, G: int, p: int) -> torch.Tensor:
    """Values [B·G³, C] of full grids (rows as :func:`full_grid`) -> [B·(G/p)³, p³·C], one row per
    p³ patch (rows as ``full_grid(B, G/p)``; columns: the patch's cells x-major, then channels)."""
    if p == 1:
        return values
    g, C = G // p, values.shape[1]
    v = values.reshape(batch, g, p, g, p, g, p, C).permute(0, 1, 3, 5, 2, 4, 6, 7)
    return v.reshape(batch * g**3, p**3 * C)


def unpatchify_grid(values: torch.Tensor, batch: int, G: int, p: int) -> torch.Tensor:
    """The inverse of :func:`patchify_grid`: [B·(G/p)³, p³·C] -> [B·G³, C]."""
    if p == 1:
        return values
    g = G // p
    C = values.shape[1] // p**3
    v = values.reshape(batch, g, g, g, p, p, p, C).permute(0, 1, 4, 2, 5, 3, 6, 7)
    return v.reshape(batch * G**3, C)


@dataclass
class KnownCells:
    """Cells already decided in each grid, for outpainting (a large scene grown window by window).

    ``columns`` [B, G, G] bool: xy columns of cells whose every cell is known; ``cells``: the
    occupied cells inside those columns (coords [K, 4]) with their normalised latents [K, c_s].
    Every other cell of a known column is known to be empty.
    """

    columns: torch.Tensor
    cells: SparseTensor

    def rows(self, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For cells ``coords`` [N, 4]: (in a known column [N] bool, row in ``cells`` or -1 [N])."""
        b, x, y = (coords[:, i].long() for i in range(3))
        in_known = self.columns.to(coords.device)[b, x, y]
        return in_known, SortedKeys(pack_coords(self.cells.coords.to(coords.device))).lookup(pack_coords(coords))


def keep_cells(cfg: StructFMConfig, latents: torch.Tensor) -> torch.Tensor:
    """Cells the fine stage keeps: more than ``keep_fraction`` of the channels with |z| >
    ``keep_threshold`` (dilation cells are trained towards 0, real cells carry unit-variance codes)."""
    return (latents.abs() > cfg.keep_threshold).float().mean(1) > cfg.keep_fraction


class StructFM(nn.Module):
    """The structure flow and its generation: layout -> cells -> normalised latents.

    ``variant``: "two_stage" (the paper's StructFM: coarse then fine) or "dense" (Table 4's
    DenseSFM: one net generates latents on the whole grid, the keep rule decides the cells).
    """

    def __init__(self, config: StructFMConfig, variant: str = "two_stage"):
        super().__init__()
        if variant not in ("two_stage", "dense"):
            raise ValueError(f"StructFM variant must be two_stage or dense, got {variant!r}")
        self.config, self.variant = config, variant
        if variant == "two_stage":
            self.coarse, self.fine = stage_net(config, "coarse"), stage_net(config, "fine")
        else:
            self.dense = stage_net(config, "dense")

    def _sample_coarse(self, sample, grid: torch.Tensor, batch: int, pinned) -> SparseTensor:
        """The coarse stage's occupancy on every cell of ``grid`` (rows of :func:`full_grid`), sampled
        on its patch tokens; ``pinned`` = (known cells [B·G³], their ±1) or None."""
        G, p = self.config.grid, self.config.coarse_patch
        tokens = full_grid(batch, G // p, grid.device)
        if pinned is not None:  # value by value: a patch may be partly known
            fixed, values = pinned
            pinned = (patchify_grid(fixed[:, None], batch, G, p), patchify_grid(values, batch, G, p))
        z = sample(self.coarse, SparseTensor(torch.zeros(len(tokens), p**3, device=grid.device), tokens, batch), pinned)
        return SparseTensor(unpatchify_grid(z.feats, batch, G, p), grid, batch)

    @torch.no_grad()
    def generate(
        self,
        layout: torch.Tensor | None,
        batch: int = 1,
        steps: int = 25,
        cfg_strength: float = 3.0,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        cells: SparseTensor | None = None,
        known: KnownCells | None = None,
        resample: int = 0,
    ) -> tuple[SparseTensor, SparseTensor]:
        """(the first stage's cells — the coarse cells, or for "dense" the kept ones —, the kept
        cells with their normalised latents).

        ``cells``: skip the coarse stage and refine these (e.g. ground-truth cells, for metrics).
        ``known``: outpaint — the cells of its columns are pinned to their known occupancy (coarse
        stage) and latents (fine stage) while the rest is sampled around them (replacement,
        :func:`~earthcrafter.flow.euler_sample`, ``resample`` times resampled per step); they come
        back unchanged. Two-stage only.
        No result is empty: a sample without a positive cell keeps its strongest one — among its free
        cells, as known cells keep their known occupancy. The one exception: a sample whose every cell
        is known and known empty stays empty (the known scene is empty there; nothing is invented).
        """
        from earthcrafter.flow import euler_sample

        cfg = self.config
        if layout is not None:
            batch = layout.shape[0]
        cond = layout if cfg.condition != "none" else None
        uncond, strength = guidance(cond, cfg_strength)

        def sample(net: nn.Module, x: SparseTensor, pinned=None) -> SparseTensor:
            noise = x.replace(torch.randn(x.feats.shape, generator=generator, device=x.device))
            return euler_sample(lambda z, t, c: net(z, t, c), noise, steps, cond, uncond, strength, known=pinned,
                                resample=resample if pinned is not None else 0, generator=generator)  # fmt: skip

        if known is not None and (self.variant != "two_stage" or cells is not None):
            raise ValueError("StructFM.generate: known cells need the two-stage variant and no given cells")
        if self.variant == "dense":
            grid = full_grid(batch, cfg.grid, device)
            cells = SparseTensor(torch.zeros(len(grid), cfg.latent_channels, device=device), grid, batch)
            z = sample(self.dense, cells)
            kept = _keep_nonempty(keep_cells(cfg, z.feats), z, batch)
            out = SparseTensor(z.feats[kept], z.coords[kept], batch, stride=8)
            return out, out
        if cells is None:
            grid = full_grid(batch, cfg.grid, device)
            pinned = None
            if known is not None:
                fixed, row = known.rows(grid)
                pinned = (fixed, torch.where(row >= 0, 1.0, -1.0)[:, None].to(device))
            occupancy = self._sample_coarse(sample, grid, batch, pinned)
            on = occupancy.feats[:, 0] > 0
            if known is not None:  # exactly the known cells there (the pinned values end at ±1 ± σ_min)
                on = torch.where(fixed, row >= 0, on)
            free = ~fixed if known is not None else torch.ones_like(on)
            for b in range(batch):  # never empty: the strongest free cell (known cells stay as known)
                rows = occupancy.batch_idx == b
                if not on[rows].any() and (rows & free).any():
                    idx = torch.nonzero(rows & free)[:, 0]
                    on[idx[occupancy.feats[idx, 0].argmax()]] = True
            cells = SparseTensor(occupancy.feats[on], occupancy.coords[on], batch)
        pinned = None
        if known is not None:
            fixed, row = known.rows(cells.coords)
            fixed = fixed & (row >= 0)  # pinned: the known occupied cells (a known column's others are empty)
            x0 = torch.zeros(len(cells), cfg.latent_channels, device=device)
            x0[fixed] = known.cells.feats.to(device)[row[fixed]]
            pinned = (fixed, x0)
        z = sample(self.fine, SparseTensor(torch.zeros(len(cells), cfg.latent_channels, device=device),
                                           cells.coords, batch), pinned)  # fmt: skip
        keep = keep_cells(cfg, z.feats)
        if known is not None:  # known cells are occupied cells: all kept, with their own latents
            keep = keep | pinned[0]
            z = z.replace(torch.where(pinned[0][:, None], pinned[1], z.feats))
        kept = _keep_nonempty(keep, z, batch)
        return cells, SparseTensor(z.feats[kept], z.coords[kept], batch, stride=8)


def _keep_nonempty(kept: torch.Tensor, z: SparseTensor, batch: int) -> torch.Tensor:
    """A sample that keeps no cell keeps its strongest one (never an empty structure)."""
    for b in range(batch):
        rows = z.batch_idx == b
        if rows.any() and not kept[rows].any():
            idx = torch.nonzero(rows)[:, 0]
            kept[idx[z.feats[idx].abs().mean(1).argmax()]] = True
    return kept
