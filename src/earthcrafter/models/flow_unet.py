"""The paper's Swin U-Net for the flows (TexFM's network; StructFM's fine stage): a sparse U-Net of
transformer blocks — shifted-window (Swin) attention at every level but the coarsest, full attention
there (TexFM: windows at 1/1, 1/2, 1/4 of the voxels, full attention at 1/8) — with timestep AdaLN
and cross-attention to the condition tokens at every level, zero-initialised output (starts at
v = 0).

Levels are built from the voxels themselves: going down, each level's voxels are the occupied
parents of the level above (mean-pooled, :func:`~earthcrafter.sparse.downsample`); going up, each
voxel takes its parent's features (:func:`~earthcrafter.sparse.upsample_like`) and is fused with
its own features from the way down (a skip). The coarse levels see 2×, 4×, ... further per window,
and the coarsest attends over the whole sample: what the paper calls local and global learning.
Same interface as :class:`~earthcrafter.models.flow_net.SparseFlowNet`: ``net(x, t, layout)``.
"""

from __future__ import annotations

import torch
from torch import nn

from earthcrafter.models.flow_net import LayoutEncoder, condition_channels, layout_tokens, transformer_blocks
from earthcrafter.sparse import (
    SparseTensor,
    TimestepEmbedder,
    downsample,
    sinusoidal_embedding_3d,
    upsample_like,
)


def check_widths(widths: list[int], num_heads: int, unet_depths: list[int] | None = None) -> None:
    """What the flow networks' configs require: every width splits into ``num_heads`` heads of even
    size (the rotary / sinusoidal halves), and U-Net levels name a width and at least one block each."""
    for w in widths:
        if w % num_heads or (w // num_heads) % 2:
            raise ValueError(f"width {w} must split into {num_heads} heads of even size")
    if unet_depths is not None:
        unet_widths = widths[1:]
        if len(unet_widths) != len(unet_depths) or len(unet_widths) < 2 or min(unet_depths) < 1:
            raise ValueError(f"unet_widths {unet_widths} and unet_depths {unet_depths} must name the same levels, "
                             "at least 2, each with at least one block")  # fmt: skip


class SparseFlowUNet(nn.Module):
    """Velocity on a sparse set: noisy values [N, c_in] + time [B] (+ condition raster) -> [N, c_out].

    ``cfg`` names ``unet_widths`` and ``unet_depths`` (one entry per level, finest first: level l
    holds the voxels at 1/2^l; the last level is the middle and uses full attention, the others
    shifted windows of ``window``), ``width`` (the timestep embedding), ``num_heads``,
    ``mlp_ratio``, ``window`` and ``condition``. ``layout_scale``: voxels of the finest level per
    condition column. Level l above the middle has ``unet_depths[l]`` blocks on the way down and as
    many on the way up; its blocks alternate regular and shifted windows, counting on from the way
    down to the way up (depth 1: a regular block down, a shifted one up).
    """

    def __init__(self, cfg, in_channels: int, out_channels: int, layout_scale: float = 1.0):
        super().__init__()
        self.cfg = cfg
        widths, depths = list(cfg.unet_widths), list(cfg.unet_depths)
        if len(widths) != len(depths) or len(widths) < 2:
            raise ValueError(f"unet_widths {widths} and unet_depths {depths} must name the same levels (at least 2)")
        self.widths = widths
        self.embed = nn.Linear(in_channels, widths[0])
        self.time = TimestepEmbedder(cfg.width)
        conditioned = cfg.condition != "none"
        channels = condition_channels(cfg.condition)
        self.layouts = self.condnet = self.level_tokens = None
        if conditioned and not cfg.cond_blocks:
            # one condition encoder per level: the tokens sit at the column centres in that level's voxel units
            self.layouts = nn.ModuleList(LayoutEncoder(w, channels, layout_scale / 2**lvl)
                                         for lvl, w in enumerate(widths))  # fmt: skip
        elif conditioned:
            # one Swin CondNet at the finest width, its tokens projected to each coarser level's width and
            # placed in that level's units: the blocks run once, not once per level at up to the widest width
            self.condnet = LayoutEncoder(widths[0], channels, layout_scale, cfg.cond_blocks, cfg)
            self.level_tokens = nn.ModuleList(nn.Linear(widths[0], w) for w in widths[1:])
        self.layout_scale = layout_scale
        ctx = (lambda w: w) if conditioned else (lambda w: None)
        last = len(widths) - 1
        self.down = nn.ModuleList(transformer_blocks(w, d, cfg, "window", ctx(w), cfg.width) for w, d in zip(widths[:-1], depths[:-1]))
        self.middle = transformer_blocks(widths[-1], depths[-1], cfg, "full", ctx(widths[-1]), cfg.width)
        # the way up continues each level's regular / shifted alternation from its way down, so a
        # level of one block per side still has one regular and one shifted block
        self.up = nn.ModuleList(transformer_blocks(w, d, cfg, "window", ctx(w), cfg.width, start=d)
                                for w, d in zip(widths[:-1], depths[:-1]))  # fmt: skip
        self.pool = nn.ModuleList(nn.Linear(widths[lvl], widths[lvl + 1]) for lvl in range(last))
        self.unpool = nn.ModuleList(nn.Linear(widths[lvl + 1], widths[lvl]) for lvl in range(last))
        self.fuse = nn.ModuleList(nn.Linear(2 * widths[lvl], widths[lvl]) for lvl in range(last))
        self.norm = nn.LayerNorm(widths[0], elementwise_affine=False, eps=1e-6)
        self.out = nn.Linear(widths[0], out_channels)
        nn.init.zeros_(self.out.weight)  # starts as the zero velocity
        nn.init.zeros_(self.out.bias)

    @property
    def conditioned(self) -> bool:
        return self.layouts is not None or self.condnet is not None

    def _contexts(self, layout: torch.Tensor) -> list[torch.Tensor]:
        """The condition tokens [B, G², width] of every level."""
        if self.layouts is not None:
            return [enc(layout) for enc in self.layouts]
        tokens = self.condnet(layout)
        return [tokens] + [proj(tokens) + layout_tokens(layout, w, self.layout_scale / 2 ** (lvl + 1)).to(tokens.dtype)
                           for lvl, (proj, w) in enumerate(zip(self.level_tokens, self.widths[1:]))]  # fmt: skip

    @staticmethod
    def _run(blocks: nn.ModuleList, h: SparseTensor, cond: torch.Tensor, context) -> SparseTensor:
        for block in blocks:
            h = block(h, cond, context) if context is not None else block(h, cond)
        return h

    def forward(self, x: SparseTensor, t: torch.Tensor, layout: torch.Tensor | None = None) -> SparseTensor:
        if self.conditioned and layout is None:
            raise ValueError("SparseFlowUNet: built with a condition; pass layout (zeros = none)")
        dtype = x.feats.dtype
        cond = self.time(1000.0 * t)  # models see 1000·t (TRELLIS)
        contexts = self._contexts(layout.to(dtype)) if self.conditioned else [None] * len(self.widths)
        h = x.replace(self.embed(x.feats) + sinusoidal_embedding_3d(x.coords[:, 1:], self.widths[0]).to(dtype))
        skips = []
        for lvl, blocks in enumerate(self.down):
            h = self._run(blocks, h, cond, contexts[lvl])
            skips.append(h)
            h = downsample(h, 2)  # occupied parents, mean of their children
            h = h.replace(self.pool[lvl](h.feats) + sinusoidal_embedding_3d(h.coords[:, 1:], self.widths[lvl + 1]).to(dtype))
        h = self._run(self.middle, h, cond, contexts[-1])
        for lvl in reversed(range(len(self.up))):
            skip = skips[lvl]
            up = upsample_like(h.replace(self.unpool[lvl](h.feats)), skip)  # every voxel takes its parent's features
            h = skip.replace(self.fuse[lvl](torch.cat([up.feats, skip.feats], dim=1)))
            h = self._run(self.up[lvl], h, cond, contexts[lvl])
        return x.replace(self.out(self.norm(h.feats)))
