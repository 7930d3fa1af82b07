"""StructFM: coarse-to-fine flow matching of the structure latents S_La (paper, Figure 5).

- **Coarse stage** (ClassSFM): a transformer flow on the full (L/8)³ grid whose single channel is
  the occupancy of each latent cell, +1 / -1. Sampled values > 0 give the cells.
- **Fine stage** (LatentSFM): a transformer flow on those cells predicting their c_s = 32
  normalised latents. Cells whose latent comes out near zero are dropped (the "features of
  invalid voxels are zero" rule): trained with *voxel dilation* — extra neighbour cells whose
  target is 0 — so it learns to refine the coarse stage's cells.

Both stages are one network (:class:`StructFlowNet`) with different in/out channels, made of the
sparse core's AdaLN transformer blocks (timestep) with cross-attention to the condition tokens.
Condition: the tile's **semantic layout** — per column of latent cells, the class histogram of
the tile's top surface — or none (zeros: classifier-free guidance). The paper also lifts an image
by monocular depth; that branch is not built here.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from earthcrafter.semantics import NUM_CLASSES
from earthcrafter.sparse import SparseTensor, SparseTransformerBlock, TimestepEmbedder
from earthcrafter.sparse.embed import sinusoidal_embedding_3d


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
    condition: Literal["semantic", "none"] = "semantic"
    cond_dropout: float = Field(0.1, ge=0, le=1, description="classifier-free guidance: condition dropped to zeros")
    keep_fraction: float = Field(0.5, gt=0, lt=1, description="fine stage: keep a cell when more than this "
                                 "fraction of its channels has |z| > keep_threshold")  # fmt: skip
    keep_threshold: float = 0.3

    @model_validator(mode="after")
    def _check(self) -> StructFMConfig:
        if self.width % self.num_heads or (self.width // self.num_heads) % 2:
            raise ValueError(f"width {self.width} must split into {self.num_heads} heads of even size")
        return self


def layout_tokens(layout: torch.Tensor, width: int) -> torch.Tensor:
    """2-D sinusoidal positions [G², width] of a G x G layout (x-major, like the histogram rows)."""
    G = layout.shape[1]
    ij = torch.stack(torch.meshgrid(torch.arange(G), torch.arange(G), indexing="ij"), -1).reshape(-1, 2)
    xyz = torch.cat([ij, torch.zeros(len(ij), 1, dtype=ij.dtype)], 1).to(layout.device)
    return sinusoidal_embedding_3d(xyz, width)


class LayoutEncoder(nn.Module):
    """Semantic layout [B, G, G, classes] (class fractions per column) -> tokens [B, G², width]."""

    def __init__(self, width: int, classes: int = NUM_CLASSES):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(classes, width), nn.SiLU(), nn.Linear(width, width))
        self.width = width

    def forward(self, layout: torch.Tensor) -> torch.Tensor:
        B = layout.shape[0]
        tokens = self.proj(layout.reshape(B, -1, layout.shape[-1]))
        return tokens + layout_tokens(layout, self.width).to(tokens.dtype)[None]


class StructFlowNet(nn.Module):
    """Velocity of one stage: noisy values on cells [N, c_in] + time [B] (+ layout) -> [N, c_out]."""

    def __init__(self, cfg: StructFMConfig, in_channels: int, out_channels: int):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.embed = nn.Linear(in_channels, w)
        self.time = TimestepEmbedder(w)
        self.layout = LayoutEncoder(w) if cfg.condition == "semantic" else None
        ctx = w if self.layout is not None else None
        self.blocks = nn.ModuleList(
            SparseTransformerBlock(w, cfg.num_heads, cfg.mlp_ratio, cfg.attn, cfg.window,
                                   shift=(cfg.window // 2) * (i % 2) if cfg.attn == "window" else 0,
                                   qk_norm=True, context_channels=ctx, cond_channels=w)
            for i in range(cfg.depth)
        )  # fmt: skip
        self.norm = nn.LayerNorm(w, elementwise_affine=False, eps=1e-6)
        self.out = nn.Linear(w, out_channels)
        nn.init.zeros_(self.out.weight)  # starts as the zero velocity
        nn.init.zeros_(self.out.bias)

    def forward(self, x: SparseTensor, t: torch.Tensor, layout: torch.Tensor | None = None) -> SparseTensor:
        h = self.embed(x.feats) + sinusoidal_embedding_3d(x.coords[:, 1:], self.cfg.width).to(x.feats.dtype)
        h = x.replace(h)
        cond = self.time(1000.0 * t)  # models see 1000·t (TRELLIS)
        context = None
        if self.layout is not None:
            if layout is None:
                raise ValueError("StructFlowNet: built with a semantic condition; pass layout (zeros = none)")
            context = self.layout(layout.to(x.feats.dtype))
        for block in self.blocks:
            h = block(h, cond, context) if context is not None else block(h, cond)
        return x.replace(self.out(self.norm(h.feats)))


def keep_cells(cfg: StructFMConfig, latents: torch.Tensor) -> torch.Tensor:
    """Cells the fine stage keeps: more than ``keep_fraction`` of the channels with |z| >
    ``keep_threshold`` (dilation cells are trained towards 0, real cells carry unit-variance codes)."""
    return (latents.abs() > cfg.keep_threshold).float().mean(1) > cfg.keep_fraction


class StructFM(nn.Module):
    """Both stages and their generation: layout -> cells -> normalised latents."""

    def __init__(self, config: StructFMConfig):
        super().__init__()
        self.config = config
        self.coarse = StructFlowNet(config, 1, 1)
        self.fine = StructFlowNet(config, config.latent_channels, config.latent_channels)

    def full_grid(self, batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Coords [B·G³, 4] of every cell of ``batch`` grids (rows sorted by batch, x, y, z)."""
        G = self.config.grid
        ax = torch.arange(G, device=device)
        xyz = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3)
        b = torch.arange(batch, device=device).repeat_interleave(len(xyz))[:, None]
        return torch.cat([b, xyz.repeat(batch, 1)], 1).int()

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
    ) -> tuple[SparseTensor, SparseTensor]:
        """(the coarse stage's cells with their sampled occupancy value, the kept cells with their
        normalised latents).

        ``cells``: skip the coarse stage and refine these (e.g. ground-truth cells, for metrics).
        The coarse result never is empty: a sample without a positive cell keeps its top cell.
        """
        from earthcrafter.flow import euler_sample

        cfg = self.config
        if layout is not None:
            batch = layout.shape[0]
        cond = layout if cfg.condition == "semantic" else None
        uncond = torch.zeros_like(layout) if cond is not None else None
        strength = cfg_strength if cond is not None else 0.0

        def sample(net: StructFlowNet, x: SparseTensor) -> SparseTensor:
            noise = x.replace(torch.randn(x.feats.shape, generator=generator, device=x.device))
            return euler_sample(lambda z, t, c: net(z, t, c), noise, steps, cond, uncond, strength)

        if cells is None:
            grid = self.full_grid(batch, device)
            occupancy = sample(self.coarse, SparseTensor(torch.zeros(len(grid), 1, device=device), grid, batch))
            on = occupancy.feats[:, 0] > 0
            for b in range(batch):  # never empty
                rows = occupancy.batch_idx == b
                if not on[rows].any():
                    idx = torch.nonzero(rows)[:, 0]
                    on[idx[occupancy.feats[idx, 0].argmax()]] = True
            cells = SparseTensor(occupancy.feats[on], occupancy.coords[on], batch)
        z = sample(self.fine, SparseTensor(torch.zeros(len(cells), cfg.latent_channels, device=device),
                                           cells.coords, batch))  # fmt: skip
        kept = keep_cells(cfg, z.feats)
        for b in range(batch):  # never empty: a sample that keeps nothing keeps its strongest cell
            rows = z.batch_idx == b
            if rows.any() and not kept[rows].any():
                idx = torch.nonzero(rows)[:, 0]
                kept[idx[z.feats[idx].abs().mean(1).argmax()]] = True
        return cells, SparseTensor(z.feats[kept], z.coords[kept], batch, stride=8)
