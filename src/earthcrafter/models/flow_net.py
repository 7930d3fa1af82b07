"""The flow network StructFM's two stages and TexFM share: a sparse transformer whose blocks are
AdaLN-modulated by the timestep and cross-attend to semantic-layout tokens (the sparse core's
:class:`~earthcrafter.sparse.SparseTransformerBlock`), zero-initialised output (starts at v = 0)."""

from __future__ import annotations

import torch
from torch import nn

from earthcrafter.semantics import NUM_CLASSES

RGBD_CHANNELS = 5  # per latent column of one aerial RGBD view: mean r, g, b, top height / tile height, seen
RGBD_HEIGHT, RGBD_SEEN = 3, 4  # those channels' indices within the view's part
VIEW_CONDITIONS = ("rgbd", "mixed")  # the conditions that hold a view
CONDITION_PARTS = {"semantic": (NUM_CLASSES,), "rgbd": (RGBD_CHANNELS,), "mixed": (NUM_CLASSES, RGBD_CHANNELS)}


HEIGHT_DROPOUT_HELP = ("training: each sample's RGBD view loses its depth with this probability (its columns' "
                       "height becomes unknown), so that the model also takes a photo without depth (condition rgbd "
                       "or mixed; generation.condition: rgb)")

COND_BLOCKS_HELP = ("CondNet: Swin blocks over the condition's columns before the network cross-attends to them "
                    "(the paper's; 0: each column embedded alone, with its position)")


def check_height_dropout(condition: str, height_dropout: float) -> None:
    """A flow config's ``height_dropout`` needs an RGBD view to drop the depth of."""
    if height_dropout > 0 and condition not in VIEW_CONDITIONS:
        raise ValueError(f"height_dropout = {height_dropout} needs condition rgbd or mixed (a view whose depth it "
                         f"drops), not {condition!r}")


def condition_channels(kind: str) -> int:
    """Channels of a condition raster [B, G, G, C] of this kind ("mixed": the semantic layout, then
    the RGBD raster; in training one of the two is zeroed per sample)."""
    return sum(CONDITION_PARTS[kind])
from earthcrafter.sparse import SparseTensor, SparseTransformerBlock, TimestepEmbedder
from earthcrafter.sparse.embed import sinusoidal_embedding_3d


def column_indices(G: int) -> torch.Tensor:
    """(i, j) of the columns of a G x G raster [G², 2], x-major like the raster's rows."""
    return torch.stack(torch.meshgrid(torch.arange(G), torch.arange(G), indexing="ij"), -1).reshape(-1, 2)


def layout_tokens(layout: torch.Tensor, width: int, scale: float = 1.0) -> torch.Tensor:
    """2-D sinusoidal positions [G², width] of a G x G layout (x-major, like the histogram rows),
    at the centres of its columns in the units of the voxels that attend to it (``scale`` voxels
    per layout column; 1 for the cells of the same grid)."""
    ij = column_indices(layout.shape[1]).float()
    ij = (ij + 0.5) * scale - 0.5 if scale != 1 else ij
    xyz = torch.cat([ij, torch.zeros(len(ij), 1)], 1).to(layout.device)
    return sinusoidal_embedding_3d(xyz, width)


class LayoutEncoder(nn.Module):
    """CondNet: condition raster [B, G, G, C] (per latent column: the semantic layout's class fractions
    and/or the RGBD view's colour, height and coverage) -> tokens [B, G², width].

    Each column is embedded alone (an MLP) with its position; ``blocks`` > 0 then runs that many Swin
    blocks over the G x G columns (windows of ``cfg.window`` columns, every second block shifted by
    half a window), as the paper builds its CondNet, so a token also carries its neighbourhood: where
    a road continues, how high the buildings around a column stand.
    """

    def __init__(self, width: int, classes: int = NUM_CLASSES, scale: float = 1.0, blocks: int = 0, cfg=None):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(classes, width), nn.SiLU(), nn.Linear(width, width))
        self.width, self.scale = width, scale
        self.blocks = transformer_blocks(width, blocks, cfg, "window", None, None) if blocks else None

    def forward(self, layout: torch.Tensor) -> torch.Tensor:
        B, G = layout.shape[:2]
        tokens = self.proj(layout.reshape(B, -1, layout.shape[-1]))
        tokens = tokens + layout_tokens(layout, self.width, self.scale).to(tokens.dtype)[None]
        if self.blocks is None:
            return tokens
        # the columns as a sparse set in the plane z = 0 (rows in the tokens' x-major order), so the
        # sparse core's windowed attention runs on them unchanged
        ij = column_indices(G)
        b = torch.arange(B).repeat_interleave(G * G)[:, None]
        coords = torch.cat([b, ij.repeat(B, 1), torch.zeros(B * G * G, 1, dtype=ij.dtype)], 1).int()
        h = SparseTensor(tokens.reshape(B * G * G, self.width), coords.to(layout.device), B, validate=False)
        for block in self.blocks:
            h = block(h)
        return h.feats.reshape(B, G * G, self.width)


# How window blocks alternate in a U-Net level: its up blocks continue its down blocks' count
# (before, each path started again at "regular", so a level of one block per side never shifted).
# Exports of U-Net models record it; one without it would load and run with other windows.
WINDOW_SHIFTS = "per_level"


def check_window_shifts(exported: dict, uses_unet: bool, where: str) -> None:
    """Refuse a U-Net export made before ``WINDOW_SHIFTS``: its weights would load, and run wrong."""
    if uses_unet and exported.get("window_shifts") != WINDOW_SHIFTS:
        raise ValueError(f"{where}: a U-Net exported before its levels' window shifts ran across the down and up "
                         f"blocks (window_shifts={exported.get('window_shifts')!r}, now {WINDOW_SHIFTS!r}); its "
                         "levels of one block per side would run with other windows than it was trained with: "
                         "train it again")


def transformer_blocks(
    width: int, n: int, cfg, attn: str, context: int | None, cond: int | None, start: int = 0
) -> nn.ModuleList:
    """``n`` transformer blocks (``cfg``: num_heads, mlp_ratio, window), AdaLN-modulated by ``cond``
    channels (None: plain pre-norm blocks) and cross-attending to ``context`` channels; in ``window`` mode
    every second block shifts its windows by half a window (Swin): block i is shifted when
    ``start + i`` is odd (``start``: the blocks before these in the same alternation, e.g. a U-Net
    level's way down before its way up)."""
    return nn.ModuleList(
        SparseTransformerBlock(width, cfg.num_heads, cfg.mlp_ratio, attn, cfg.window,
                               shift=(cfg.window // 2) * ((start + i) % 2) if attn == "window" else 0,
                               qk_norm=True, context_channels=context, cond_channels=cond)
        for i in range(n)
    )  # fmt: skip


class SparseFlowNet(nn.Module):
    """Velocity on a sparse set: noisy values [N, c_in] + time [B] (+ layout) -> [N, c_out].

    ``cfg`` names ``width``, ``depth``, ``num_heads``, ``mlp_ratio``, ``attn`` ("full" | "window"),
    ``window`` and ``condition`` ("semantic" | "rgbd" | "mixed" | "none") — StructFM's and TexFM's configs both do.
    ``layout_scale``: voxels of this net's grid per layout column (1 for StructFM's cells, 8 for
    TexFM's voxels at L under an L/8 layout).
    """

    def __init__(self, cfg, in_channels: int, out_channels: int, layout_scale: float = 1.0):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        self.embed = nn.Linear(in_channels, w)
        self.time = TimestepEmbedder(w)
        self.layout = (LayoutEncoder(w, condition_channels(cfg.condition), layout_scale, cfg.cond_blocks, cfg)
                       if cfg.condition != "none" else None)  # fmt: skip
        ctx = w if self.layout is not None else None
        self.blocks = transformer_blocks(w, cfg.depth, cfg, cfg.attn, ctx, w)
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
                raise ValueError("SparseFlowNet: built with a semantic condition; pass layout (zeros = none)")
            context = self.layout(layout.to(x.feats.dtype))
        for block in self.blocks:
            h = block(h, cond, context) if context is not None else block(h, cond)
        return x.replace(self.out(self.norm(h.feats)))
