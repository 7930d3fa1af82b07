"""StructVAE: sparse occupancy at L³ <-> structural latents at (L/8)³ × c_s (paper Fig. 4).

Encoder: sin-cos positional encoding of the voxel coords, then per level (L, L/2, L/4)
shifted-window transformer blocks and a stride-2 sparse conv; attention blocks at L/8;
a linear head gives the posterior mean and log-variance (c_s channels each).

Decoder: attention blocks at L/8 (full, or windowed for the ablation), then three
Pseudo-Sparse-to-Sparse (PSS) blocks. A PSS block turns every voxel into its 8 children
(sparse pixel shuffle: a learned C -> 8·C' split; or the naive copy-to-children), runs
Swin blocks with one conv block (C-Block) every ``cblock_every`` Swin blocks on this
pseudo-sparse set, classifies each child (one logit: occupied or not) and prunes. During
training the pruning follows the ground-truth children (teacher forcing, optionally mixed
with predictions); at inference it keeps logit > threshold, and a sample never ends up
empty (its top-k children are kept instead).

Optional latent skip (not in the paper; ``latent_skip``): every PSS block adds a linear
projection of each child's own L/8 latent — one per cell, or one per position inside the cell —
so the fine levels read the code directly (docs/structvae.md says why). ``position`` computes
latents × 8³ × widths[0] values at L: fine at laptop scale, heavy at L=360.

Objective (XCube-style): per level a binary cross-entropy (or focal) loss over the
pseudo-sparse candidates, weighted ``cls_weight`` (XCube: 20), plus the KL divergence of
the posterior normalised by the number of latent voxels, weighted ``kl_weight``. Every
term is a per-sample mean, averaged over the batch.

Coordinates follow earthcrafter.sparse: int32 [N, 4] = (batch, x, y, z); at level with
stride s (1, 2, 4, 8) a voxel's coords are in units of s finest voxels.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from earthcrafter.evaluation.voxel_metrics import coarsen, member
from earthcrafter.seeding import noise_like, rand_per_row, sample_generators
from earthcrafter.sparse import (
    LayerNorm32,
    SinusoidalPosEmbed3D,
    SparseConv3d,
    SparseResBlock,
    SparseTensor,
    SparseTransformerBlock,
    SubMConv3d,
    pixel_shuffle,
    per_sample_mean,
    prune,
    upsample_nearest,
)
from earthcrafter.sparse.keys import SortedKeys, pack, pack_coords

NUM_LEVELS = 3  # L -> L/2 -> L/4 -> L/8
log = logging.getLogger(__name__)


# Mixed pruning draws from per-sample generators seeded apart from the posterior noise's.
MIX_SEED_OFFSET = 0x9E3779B9

class StructVAEConfig(BaseModel):
    """StructVAE hyper-parameters and the Table 3 ablation switches."""

    model_config = ConfigDict(extra="forbid")

    L: int = Field(64, ge=8, description="tile resolution in voxels per side; divisible by 8")
    latent_channels: int = Field(32, ge=1, description="c_s: channels of the L/8 latent (paper 32)")
    widths: tuple[int, int, int, int] = Field((32, 64, 96, 128), description="channels at L, L/2, L/4, L/8")
    head_dim: int = Field(32, ge=6, description="attention head width (heads = width / head_dim)")
    enc_depths: tuple[int, int, int] = Field((2, 2, 2), description="encoder blocks at L, L/2, L/4 (paper 4 each)")
    dec_depths: tuple[int, int, int] = Field((4, 4, 4), description="Swin blocks in the PSS blocks at L/4, L/2, L")
    bottleneck_depth: int = Field(2, ge=0, description="attention blocks at L/8, in the encoder and in the decoder")
    window: int = Field(8, ge=2, description="Swin window edge in voxels of the level")
    mlp_ratio: float = Field(4.0, gt=0)
    qk_norm: bool = True
    rope: bool = Field(True, description="3-D rotary position embedding in self-attention")
    pe_channels: int = Field(48, ge=6, description="sin-cos encoding channels of the input coords")
    conv_stem: bool = Field(
        True, description="add a 3x3x3 submanifold conv of the occupancy to the encoder input (local shape)"
    )
    # ---- ablation switches (Table 3)
    arch: Literal["transformer", "xcube_conv"] = Field(
        "transformer", description="xcube_conv: XCube-style baseline, conv residual blocks everywhere"
    )
    upsample: Literal["pixel_shuffle", "naive"] = Field(
        "pixel_shuffle", description="naive: children copy the parent's features (no learned split)"
    )
    cblock_every: int = Field(4, ge=0, description="one conv block after every k Swin blocks in PSS (0: none)")
    bottleneck_attn: Literal["full", "window"] = Field("full", description="attention at L/8")
    bottleneck_window: int | None = Field(
        None, ge=2, description="window edge of windowed attention at L/8 (None: `window`); keep it "
        "below L/8, or windowed and full attention are the same operation",
    )
    latent_skip: Literal["off", "cell", "position"] = Field(
        "off",
        description="add a projection of each voxel's L/8 latent to its features in every PSS block: "
        "'cell' one projection per latent cell, 'position' one per position inside the cell",
    )
    # ---- objective
    cls_weight: float = Field(20.0, ge=0, description="weight of each level's classification loss (XCube 20)")
    kl_weight: float = Field(1e-3, ge=0, description="weight of the KL term (normalised by latent voxels)")
    logvar_init: float = Field(
        -6.0, le=0, description="initial posterior log-variance: start nearly deterministic (sigma = e^(init/2))"
    )
    cls_loss: Literal["bce", "focal"] = "bce"
    focal_gamma: float = Field(2.0, ge=0)
    # ---- pruning
    train_prune: Literal["gt", "mixed"] = Field("gt", description="teacher forcing; mixed adds predicted voxels")
    mix_prob: float = Field(0.0, ge=0, le=1, description="mixed: probability a predicted-positive non-GT child is kept")
    guard_topk: int = Field(8, ge=1, description="inference: children kept for a sample whose level would be empty")

    @field_validator("L")
    @classmethod
    def _check_L(cls, L: int) -> int:
        if L % 8:
            raise ValueError(f"L={L} must be divisible by 8 (three stride-2 levels)")
        return L

    @model_validator(mode="after")
    def _check(self) -> StructVAEConfig:
        bw = self.bottleneck_window or self.window
        if self.arch == "transformer" and self.bottleneck_attn == "window" and bw >= self.L // 8:
            log.warning("bottleneck_attn='window' with a %d-cell window on the %d-cell L/8 grid is full "
                        "attention; set bottleneck_window below %d to compare the two", bw, self.L // 8, self.L // 8)
        if self.arch == "transformer":
            for i, w in enumerate(self.widths):
                if w % self.head_dim:
                    raise ValueError(f"widths[{i}]={w} must be a multiple of head_dim={self.head_dim}")
        return self

    def heads(self, level: int) -> int:
        return max(self.widths[level] // self.head_dim, 1)


@dataclass
class LevelOutput:
    """One PSS level: the pseudo-sparse candidates, their logits and the kept set."""

    stride: int  # voxel edge of this level in finest voxels (4, 2, 1)
    candidates: torch.Tensor  # int32 [M, 4]
    logits: torch.Tensor  # float32 [M]
    keep: torch.Tensor  # bool [M]
    targets: torch.Tensor | None = None  # bool [M] (training / evaluation)


@dataclass
class StructVAEOutput:
    mean: SparseTensor  # [M8, c_s] at L/8
    logvar: torch.Tensor  # [M8, c_s]
    levels: list[LevelOutput] = field(default_factory=list)
    voxels: SparseTensor | None = None  # the decoded set at L (feats: logits [N, 1])


# --------------------------------------------------------------------------- blocks

def _swin(cfg: StructVAEConfig, level: int, index: int) -> SparseTransformerBlock:
    shift = (cfg.window // 2) * (index % 2)
    return SparseTransformerBlock(
        cfg.widths[level], cfg.heads(level), cfg.mlp_ratio, attn_mode="window", window_size=cfg.window,
        shift=shift, qk_norm=cfg.qk_norm, rope=cfg.rope,
    )


def _conv_block(width: int) -> SparseResBlock:
    return SparseResBlock(width)


def _stage(cfg: StructVAEConfig, level: int, depth: int, cblock_every: int) -> nn.ModuleList:
    """``depth`` Swin blocks (alternating shift) with a C-Block after every ``cblock_every``;
    for the xcube_conv baseline, ``depth`` conv residual blocks."""
    if cfg.arch == "xcube_conv":
        return nn.ModuleList(_conv_block(cfg.widths[level]) for _ in range(depth))
    blocks = []
    for i in range(depth):
        blocks.append(_swin(cfg, level, i))
        if cblock_every and (i + 1) % cblock_every == 0:
            blocks.append(_conv_block(cfg.widths[level]))
    return nn.ModuleList(blocks)


def _bottleneck(cfg: StructVAEConfig) -> nn.ModuleList:
    if cfg.arch == "xcube_conv":
        return nn.ModuleList(_conv_block(cfg.widths[3]) for _ in range(cfg.bottleneck_depth))
    window = cfg.bottleneck_window or cfg.window
    return nn.ModuleList(
        SparseTransformerBlock(
            cfg.widths[3], cfg.heads(3), cfg.mlp_ratio, attn_mode=cfg.bottleneck_attn, window_size=window,
            shift=(window // 2) * (i % 2) if cfg.bottleneck_attn == "window" else 0,
            qk_norm=cfg.qk_norm, rope=cfg.rope,
        )
        for i in range(cfg.bottleneck_depth)
    )


def _run(blocks: nn.ModuleList, x: SparseTensor) -> SparseTensor:
    for block in blocks:
        x = block(x)
    return x


class Upsample(nn.Module):
    """Parent voxels [N, C_in] -> their 8 children [8N, C_out] (sorted), the pseudo-sparse set.

    ``pixel_shuffle``: Linear C_in -> 8·C_out, child i takes channel block i (a learned,
    unambiguous split). ``naive``: Linear C_in -> C_out, copied to all 8 children.
    """

    def __init__(self, c_in: int, c_out: int, mode: str):
        super().__init__()
        self.mode = mode
        self.norm = LayerNorm32(c_in, eps=1e-6)
        self.proj = nn.Linear(c_in, 8 * c_out if mode == "pixel_shuffle" else c_out)

    def forward(self, x: SparseTensor) -> SparseTensor:
        h = x.replace(self.proj(self.norm(x.feats)))
        return pixel_shuffle(h, 2) if self.mode == "pixel_shuffle" else upsample_nearest(h, 2)


class PSSBlock(nn.Module):
    """Pseudo-Sparse to Sparse: upsample x2, Swin (+ C-Block) blocks, classify children."""

    def __init__(self, cfg: StructVAEConfig, level: int, depth: int):
        super().__init__()
        self.upsample = Upsample(cfg.widths[level + 1], cfg.widths[level], cfg.upsample)
        self.latent_skip, self.width = cfg.latent_skip, cfg.widths[level]
        # children of this block per latent edge: 2 (L/4), 4 (L/2), 8 (L)
        self.factor = 2 ** (NUM_LEVELS - level)
        positions = self.factor**3 if cfg.latent_skip == "position" else 1
        self.latent_proj = nn.Linear(cfg.latent_channels, positions * self.width) if cfg.latent_skip != "off" else None
        self.blocks = _stage(cfg, level, depth, cfg.cblock_every)
        self.head = nn.Sequential(LayerNorm32(cfg.widths[level], eps=1e-6), nn.Linear(cfg.widths[level], 1))

    def forward(self, x: SparseTensor, latents: SparseTensor | None = None) -> tuple[SparseTensor, torch.Tensor]:
        """-> (pseudo-sparse children with features, logits float32 [8N]).

        ``latents`` (with ``latent_skip``): the L/8 latents; each child adds a projection of its
        ancestor's latent (per cell, or per position inside the cell), a short path from the
        code to every level's decisions.
        """
        h = self.upsample(x)
        if self.latent_proj is not None:
            rows = ancestor_rows(h.coords, latents.coords, self.factor)
            proj = self.latent_proj(latents.feats.to(h.feats.dtype))  # [N8, positions * C]
            if self.latent_skip == "position":  # the child's offset inside its latent cell picks the block
                f = self.factor
                sub = torch.remainder(h.coords[:, 1:].long(), f)
                pos = (sub[:, 0] * f + sub[:, 1]) * f + sub[:, 2]
                skip = proj.view(len(proj), f**3, self.width)[rows, pos]
            else:
                skip = proj[rows]
            h = h.replace(h.feats + skip)
        h = _run(self.blocks, h)
        return h, self.head(h.feats).squeeze(-1).float()


# --------------------------------------------------------------------------- model

def ancestor_rows(coords: torch.Tensor, ancestors: torch.Tensor, factor: int) -> torch.Tensor:
    """int64 [M]: row of ``ancestors`` [N, 4] holding ``(b, xyz // factor)`` of each row of
    ``coords`` [M, 4]; every ancestor must exist."""
    keys = pack(coords[:, 0], torch.div(coords[:, 1:].long(), factor, rounding_mode="floor"))
    rows = SortedKeys(pack_coords(ancestors)).lookup(keys)
    if bool((rows < 0).any()):
        raise ValueError("ancestor_rows: a voxel has no ancestor among the latents")
    return rows


def guard_nonempty(keep: torch.Tensor, logits: torch.Tensor, batch: torch.Tensor, batch_size: int, k: int) -> torch.Tensor:
    """``keep`` with the top-``k`` candidates switched on for every sample that has
    candidates but would keep none (inference must never return an empty sample)."""
    kept = torch.bincount(batch[keep], minlength=batch_size)
    has = torch.bincount(batch, minlength=batch_size)
    empty = ((kept == 0) & (has > 0)).nonzero(as_tuple=True)[0]
    if len(empty) == 0:
        return keep
    keep = keep.clone()
    for b in empty.tolist():  # rare: a loop over the affected samples only
        rows = (batch == b).nonzero(as_tuple=True)[0]
        top = torch.topk(logits[rows], min(k, len(rows))).indices
        keep[rows[top]] = True
    return keep


class StructVAE(nn.Module):
    """Occupancy VAE; see the module docstring. Build from a :class:`StructVAEConfig`."""

    def __init__(self, config: StructVAEConfig):
        super().__init__()
        cfg = self.config = config
        w = cfg.widths
        # encoder
        self.pos_embed = SinusoidalPosEmbed3D(cfg.pe_channels)
        self.enc_in = nn.Linear(cfg.pe_channels, w[0])
        self.enc_stem = SubMConv3d(1, w[0], 3) if cfg.conv_stem else None
        no_cblock = 0
        self.enc_stages = nn.ModuleList(_stage(cfg, lvl, cfg.enc_depths[lvl], no_cblock) for lvl in range(NUM_LEVELS))
        self.enc_down = nn.ModuleList(SparseConv3d(w[lvl], w[lvl + 1], kernel_size=2, stride=2) for lvl in range(NUM_LEVELS))
        self.enc_mid = _bottleneck(cfg)
        self.enc_out = nn.Sequential(LayerNorm32(w[3], eps=1e-6), nn.Linear(w[3], 2 * cfg.latent_channels))
        # Posterior noise at sigma = 1 would drown an untrained encoder's signal for thousands of
        # steps (the log-variance moves by ~lr per step): start from a small, uniform sigma.
        with torch.no_grad():
            head = self.enc_out[1]
            head.weight[cfg.latent_channels :].zero_()
            head.bias[cfg.latent_channels :].fill_(cfg.logvar_init)
        # decoder
        self.dec_in = nn.Linear(cfg.latent_channels, w[3])
        self.dec_mid = _bottleneck(cfg)
        # PSS blocks from coarse to fine: outputs at L/4, L/2, L (width levels 2, 1, 0)
        self.pss = nn.ModuleList(PSSBlock(cfg, lvl, cfg.dec_depths[NUM_LEVELS - 1 - lvl]) for lvl in (2, 1, 0))

    # ------------------------------------------------------------------ encoder
    def encode_posterior(self, voxels: SparseTensor) -> tuple[SparseTensor, torch.Tensor]:
        """Occupancy at L (coords; feats ignored) -> (mean SparseTensor [M, c_s] at L/8, logvar [M, c_s])."""
        h = self.enc_in(self.pos_embed(voxels).to(self.enc_in.weight.dtype))
        if self.enc_stem is not None:  # occupancy of the 3x3x3 neighbourhood: explicit local shape
            ones = voxels.replace(torch.ones(len(voxels), 1, device=h.device, dtype=h.dtype))
            h = h + self.enc_stem(ones).feats
        x = voxels.replace(h)
        for stage, down in zip(self.enc_stages, self.enc_down):
            x = down(_run(stage, x))
        x = _run(self.enc_mid, x)
        stats = self.enc_out(x.feats).float()
        mean, logvar = stats.chunk(2, dim=-1)
        return x.replace(mean), logvar.clamp(-30.0, 20.0)

    def encode(self, voxels: SparseTensor, sample: bool = False, seeds: torch.Tensor | None = None) -> SparseTensor:
        """Structural latents at L/8 (c_s channels): the posterior mean, or a sample of it."""
        mean, logvar = self.encode_posterior(voxels)
        return self.reparameterize(mean, logvar, seeds) if sample else mean

    @staticmethod
    def reparameterize(mean: SparseTensor, logvar: torch.Tensor, seeds: torch.Tensor | None = None) -> SparseTensor:
        """mean + σ·ε. With per-sample ``seeds`` [B] the noise of sample b depends only on
        seeds[b], so a batch split over ranks draws exactly the single-process noise."""
        eps = noise_like(mean, seeds)
        return mean.replace(mean.feats + torch.exp(0.5 * logvar) * eps)

    # ------------------------------------------------------------------ decoder
    def decode(
        self,
        latents: SparseTensor,
        threshold: float = 0.0,
        gt: SparseTensor | torch.Tensor | None = None,
        return_levels: bool = False,
        mix_generators: list[torch.Generator] | None = None,
    ) -> SparseTensor | tuple[SparseTensor, list[LevelOutput]]:
        """Latents at L/8 -> occupied voxels at L (feats: logits [N, 1]).

        ``gt`` (coords at L) switches on teacher forcing: each level keeps exactly the
        ground-truth children (mixed with predictions if ``train_prune='mixed'`` in training,
        drawn from ``mix_generators``, one per sample, when given).
        Otherwise a child is kept when its logit > ``threshold``.
        """
        gt_coords = gt.coords if isinstance(gt, SparseTensor) else gt
        x = _run(self.dec_mid, latents.replace(self.dec_in(latents.feats.to(self.dec_in.weight.dtype))))
        levels: list[LevelOutput] = []
        for i, pss in enumerate(self.pss):
            stride = 2 ** (NUM_LEVELS - 1 - i)
            h, logits = pss(x, latents)
            targets = member(h.coords, coarsen(gt_coords, stride)) if gt_coords is not None else None
            keep = self._decide(h, logits, targets, threshold, mix_generators)
            levels.append(LevelOutput(stride, h.coords, logits, keep, targets))
            x = prune(h, keep)
        out = x.replace(levels[-1].logits[levels[-1].keep][:, None])
        return (out, levels) if return_levels else out

    def _decide(
        self, h: SparseTensor, logits: torch.Tensor, targets: torch.Tensor | None, threshold: float,
        mix_generators: list[torch.Generator] | None = None,
    ) -> torch.Tensor:
        cfg = self.config
        if targets is not None:
            keep = targets
            if self.training and cfg.train_prune == "mixed" and cfg.mix_prob > 0:
                u = torch.rand_like(logits) if mix_generators is None else rand_per_row(h.batch_idx, mix_generators)
                extra = (logits.detach() > threshold) & (u < cfg.mix_prob)
                keep = keep | extra
            return keep
        keep = logits > threshold
        return guard_nonempty(keep, logits, h.batch_idx, h.batch_size, cfg.guard_topk)

    # ------------------------------------------------------------------ training
    def forward(self, voxels: SparseTensor, seeds: torch.Tensor | None = None) -> StructVAEOutput:
        """Training pass: posterior sample, teacher-forced decoding against ``voxels``."""
        mean, logvar = self.encode_posterior(voxels)
        z = self.reparameterize(mean, logvar, seeds)
        # mixed pruning's draws: per sample too, from generators of their own (offset seeds)
        mixed = self.training and self.config.train_prune == "mixed" and self.config.mix_prob > 0
        mix = None if seeds is None or not mixed else sample_generators(
            [int(s) + MIX_SEED_OFFSET for s in seeds.tolist()], z.device)
        out, levels = self.decode(z, gt=voxels.coords, return_levels=True, mix_generators=mix)
        return StructVAEOutput(mean, logvar, levels, out)

    @torch.no_grad()
    def reconstruct(self, voxels: SparseTensor, threshold: float = 0.0) -> tuple[SparseTensor, list[LevelOutput]]:
        """Free-running reconstruction from the posterior mean, with per-level targets
        (for metrics): (voxels at L, levels)."""
        mean, _ = self.encode_posterior(voxels)
        out, levels = self.decode(mean, threshold=threshold, return_levels=True)
        for lvl in levels:
            lvl.targets = member(lvl.candidates, coarsen(voxels.coords, lvl.stride))
        return out, levels


# --------------------------------------------------------------------------- objective

def classification_loss(logits: torch.Tensor, targets: torch.Tensor, kind: str = "bce", gamma: float = 2.0) -> torch.Tensor:
    """Element-wise loss [M] of occupancy logits against bool targets."""
    t = targets.float()
    bce = F.binary_cross_entropy_with_logits(logits.float(), t, reduction="none")
    if kind == "focal":
        p_t = torch.exp(-bce)
        return (1.0 - p_t) ** gamma * bce
    return bce


def kl_per_sample(mean: SparseTensor, logvar: torch.Tensor) -> torch.Tensor:
    """[B] KL(q(z|x) || N(0, I)) summed over channels, averaged over the latent voxels."""
    mu = mean.feats.float()
    kl = -0.5 * (1.0 + logvar - mu.square() - logvar.exp()).sum(-1)
    return per_sample_mean(kl, mean.batch_idx, mean.batch_size)


def struct_vae_loss(out: StructVAEOutput, cfg: StructVAEConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss (mean over samples) and its parts for logging."""
    batch_size = out.mean.batch_size
    logs: dict[str, torch.Tensor] = {}
    total = out.mean.feats.new_zeros(())
    for lvl in out.levels:
        cand_batch = lvl.candidates[:, 0].long()
        per = classification_loss(lvl.logits, lvl.targets, cfg.cls_loss, cfg.focal_gamma)
        level_loss = per_sample_mean(per, cand_batch, batch_size).mean()
        total = total + cfg.cls_weight * level_loss
        logs[f"cls_s{lvl.stride}"] = level_loss.detach()
        logs[f"tf_acc_s{lvl.stride}"] = ((lvl.logits > 0) == lvl.targets).float().mean().detach()
    kl = kl_per_sample(out.mean, out.logvar).mean()
    logs["kl"] = kl.detach()
    return total + cfg.kl_weight * kl, logs
