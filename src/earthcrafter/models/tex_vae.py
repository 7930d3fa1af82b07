"""TexVAE: voxel features -> textural latents T_La (c_t per voxel) -> per-voxel 2D Gaussians.

Architecture (paper, "TexVAE"; TRELLIS SLat VAE with a Gaussian decoder):

- ``arch="tube"`` (the paper's choice): no spatial down-sampling. Encoder: Linear(C_in -> W)
  + sin-cos position of the voxel index, ``enc_depth`` sparse Swin transformer blocks (window
  ``window``, every other block shifted by ``window // 2``), LayerNorm, Linear(W -> 2 c_t) giving
  the posterior mean and log-variance on the same voxels. Decoder: Linear(c_t -> W) + position,
  ``dec_depth`` Swin blocks, :class:`~earthcrafter.models.gaussian_head.GaussianHead`.
- ``arch="unet2"`` (Table 2, TexF): the same blocks split over two levels. The encoder runs
  half its blocks at full resolution, folds each 2^3 cell into one voxel (pixel unshuffle +
  Linear), runs the rest and emits the latent on the *coarse* voxels — spatial compression.
  The decoder mirrors it: coarse blocks, Linear(W -> 8 W) + pixel shuffle up to the children,
  keeps the children that belong to the known fine structure, fine blocks, Gaussian head.
  There are no skip connections from encoder to decoder: only the latent crosses.

Features (``features``, Table 2): which channel groups of the tile's feature layout feed the
encoder — ``f0`` (16), ``f0_f1_f2`` (48), ``f_feat`` (all 66: f0, f1, f2, f_rgb, f_n; the
default) or ``dinov2`` (every ``dino*`` group, tiles voxelized with a DINOv2 extractor).

Frames: voxel ``ijk`` has its centre at ``(ijk + 0.5) * voxel_size`` (the tile-local metric
frame of :mod:`earthcrafter.io.tiles`); decoded Gaussians are in that frame.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor, nn

from earthcrafter.io.atomic import atomic_path
from earthcrafter.models.flow_net import WINDOW_SHIFTS, check_window_shifts
from earthcrafter.models.gaussian_head import GaussianHead, GaussianLayout
from earthcrafter.render.gaussians import Gaussians2D
from earthcrafter.seeding import noise_like
from earthcrafter.sparse import (
    LayerNorm32,
    SparseTensor,
    SparseTransformerBlock,
    per_sample_mean,
    pixel_shuffle,
    pixel_unshuffle,
    sinusoidal_embedding_3d,
)
from earthcrafter.sparse import keys as sparse_keys

FeatureSet = Literal["f0", "f0_f1_f2", "f_feat", "dinov2"]
FEATURE_GROUPS: dict[str, tuple[str, ...]] = {
    "f0": ("f0",),
    "f0_f1_f2": ("f0", "f1", "f2"),
    "f_feat": ("f0", "f1", "f2", "f_rgb", "f_n"),
}
CHECKPOINT_FORMAT = "earthcrafter.tex_vae/1"


class TexVAEConfig(BaseModel):
    """Architecture of one TexVAE (``train_texvae.model`` in the parameters)."""

    model_config = ConfigDict(extra="forbid")

    features: FeatureSet = Field("f_feat", description="input channel groups (Table 2 FeatType)")
    arch: Literal["tube", "unet2"] = Field("tube", description="tube: no down-sampling; unet2: two levels (TexF)")
    width: int = Field(64, ge=8, description="transformer channels")
    num_heads: int = Field(4, ge=1)
    window: int = Field(8, ge=1, description="Swin window edge in voxels")
    enc_depth: int = Field(4, ge=1, description="encoder Swin blocks (paper: 12)")
    dec_depth: int = Field(4, ge=1, description="decoder Swin blocks (paper: 12)")
    mlp_ratio: float = Field(4.0, gt=0)
    qk_norm: bool = False
    latent_channels: int = Field(8, ge=1, description="c_t (paper: 8)")
    logvar_clamp: tuple[float, float] = (-30.0, 20.0)
    logvar_init: float = Field(
        -6.0, le=0, description="initial posterior log-variance: start nearly deterministic (sigma = e^(init/2))"
    )
    # Gaussian head (see earthcrafter.models.gaussian_head)
    gaussians_per_voxel: int = Field(1, ge=1, le=64)
    sh_degree: int = Field(0, ge=0, le=3)
    scale_dims: Literal[2, 3] = Field(3, description="3 gives the paper's 16 values per voxel (third unused)")
    rotation: Literal["6d", "quat"] = "6d"
    offset_range: float = Field(0.75, gt=0.5, description="tanh bound of surfel centres, voxels from the centre")
    init_scale: float = Field(0.5, gt=0, description="initial tangent scale, voxels")
    min_scale: float = Field(0.01, ge=0, description="tangent scale floor, voxels")
    init_opacity: float = Field(0.5, gt=0, lt=1)

    @model_validator(mode="after")
    def _check(self) -> TexVAEConfig:
        if self.width % self.num_heads:
            raise ValueError(f"width {self.width} is not divisible by num_heads {self.num_heads}")
        if self.arch == "unet2" and (self.enc_depth < 2 or self.dec_depth < 2):
            raise ValueError("arch 'unet2' needs enc_depth >= 2 and dec_depth >= 2 (blocks on both levels)")
        lo, hi = self.logvar_clamp
        if lo >= hi:
            raise ValueError(f"logvar_clamp must be (low, high) with low < high, got {self.logvar_clamp}")
        return self

    @property
    def gaussian_layout(self) -> GaussianLayout:
        return GaussianLayout(self.gaussians_per_voxel, self.scale_dims, self.rotation, self.sh_degree)


# --------------------------------------------------------------------------- features

def feature_groups(features: FeatureSet, layout: dict[str, slice]) -> list[str]:
    """Names of the layout groups a feature set uses; a clear error when the layout lacks one."""
    if features == "dinov2":
        names = [n for n in layout if n.lower().startswith("dino")]
        if not names:
            raise ValueError(f"features 'dinov2' need 'dino*' channel groups; the tile layout has {list(layout)}")
        return names
    names = list(FEATURE_GROUPS[features])
    missing = [n for n in names if n not in layout]
    if missing:
        raise ValueError(f"features {features!r} need groups {missing} absent from the tile layout {list(layout)}")
    return names


def feature_index(features: FeatureSet, layout: dict[str, slice]) -> np.ndarray:
    """Channel indices (int64) of the feature set in a tile's feature vector, in layout order."""
    return np.concatenate([np.arange(layout[n].start, layout[n].stop) for n in feature_groups(features, layout)])


# --------------------------------------------------------------------------- model

def _swin_blocks(cfg: TexVAEConfig, depth: int, start: int = 0) -> nn.ModuleList:
    """``depth`` window-attention blocks, regular and shifted windows alternating from block
    number ``start`` (a level's decoder blocks continue its encoder's count, so a level with one
    block on each side still has one of each)."""
    return nn.ModuleList(
        SparseTransformerBlock(
            cfg.width, cfg.num_heads, cfg.mlp_ratio, attn_mode="window", window_size=cfg.window,
            shift=(cfg.window // 2) * ((start + i) % 2), qk_norm=cfg.qk_norm,
        )
        for i in range(depth)
    )  # fmt: skip


def _run(blocks: nn.ModuleList, x: SparseTensor) -> SparseTensor:
    for block in blocks:
        x = block(x)
    return x


def _add_position(x: SparseTensor, feats: Tensor, stride: int = 1) -> SparseTensor:
    """feats + sin-cos embedding of the voxel centre in fine-voxel units (``stride``: level's voxel edge)."""
    xyz = (x.coords[:, 1:].float() + 0.5) * stride - 0.5
    return x.replace(feats + sinusoidal_embedding_3d(xyz, feats.shape[1]).to(feats.dtype))


def match_rows(source: Tensor, target: Tensor) -> Tensor:
    """For coords ``target`` [M, 4] (rows present in ``source`` [N, 4], sorted by key), the
    int64 row of ``source`` holding each. Raises when a target voxel is absent."""
    skeys = sparse_keys.pack_coords(source)
    tkeys = sparse_keys.pack_coords(target)
    order = torch.argsort(skeys)
    pos = torch.searchsorted(skeys[order], tkeys).clamp_max(max(len(skeys) - 1, 0))
    rows = order[pos]
    if len(tkeys) and not bool((skeys[rows] == tkeys).all()):
        raise ValueError("match_rows: the structure holds voxels that are not children of the latent voxels")
    return rows


class TexVAE(nn.Module):
    """Sparse Swin VAE from voxel features to 2D Gaussian surfels.

    Args:
        config: architecture.
        in_channels: input feature channels (the selected groups of the tile layout).
    """

    def __init__(self, config: TexVAEConfig, in_channels: int):
        super().__init__()
        self.config, self.in_channels = config, int(in_channels)
        c = config
        w = c.width
        enc_fine = c.enc_depth // 2 if c.arch == "unet2" else c.enc_depth
        dec_fine = c.dec_depth // 2 if c.arch == "unet2" else c.dec_depth
        self.enc_in = nn.Linear(self.in_channels, w)
        self.enc_fine = _swin_blocks(c, enc_fine)
        self.enc_coarse = _swin_blocks(c, c.enc_depth - enc_fine, start=enc_fine)
        self.enc_norm = LayerNorm32(w, eps=1e-6)
        self.enc_out = nn.Linear(w, 2 * c.latent_channels)
        # At sigma = 1 the posterior noise drowns an untrained encoder's signal (c_t = 8 channels
        # of unit noise vs. means of ~0.5), the decoder learns the tile's mean colour, and the
        # log-variance only moves by ~lr per step under the tiny KL weight: start from a small sigma.
        with torch.no_grad():
            self.enc_out.weight[c.latent_channels :].zero_()
            self.enc_out.bias[c.latent_channels :].fill_(c.logvar_init)
        self.dec_in = nn.Linear(c.latent_channels, w)
        self.dec_coarse = _swin_blocks(c, c.dec_depth - dec_fine)
        self.dec_fine = _swin_blocks(c, dec_fine, start=c.dec_depth - dec_fine)
        if c.arch == "unet2":
            self.down = nn.Linear(8 * w, w)  # pixel unshuffle (2^3 children -> channels) then mix
            self.up = nn.Linear(w, 8 * w)  # mix then pixel shuffle (channels -> 2^3 children)
        self.head = GaussianHead(
            w, c.gaussian_layout, offset_range=c.offset_range, init_scale=c.init_scale,
            min_scale=c.min_scale, init_opacity=c.init_opacity,
        )  # fmt: skip

    @property
    def latent_stride(self) -> int:
        """Voxel edge of the latent grid in fine voxels (1 for tube, 2 for unet2)."""
        return 2 if self.config.arch == "unet2" else 1

    # ------------------------------------------------------------------ encoder

    def encode_posterior(self, x: SparseTensor) -> tuple[SparseTensor, SparseTensor]:
        """Features [N, in_channels] -> posterior (mean, logvar), each [N', c_t] on the latent grid.

        N' = N for the tube; for unet2 the latent voxels are ``unique(coords // 2)``.
        """
        if x.feats.ndim != 2 or x.feats.shape[1] != self.in_channels:
            raise ValueError(f"TexVAE.encode: expected feats [N, {self.in_channels}], got {tuple(x.feats.shape)}")
        # the loader's features come in the tile's float16: cast to the weights' precision (autocast may lower it)
        h = _run(self.enc_fine, _add_position(x, self.enc_in(x.feats.to(self.enc_in.weight.dtype))))
        if self.config.arch == "unet2":
            h = pixel_unshuffle(h, 2)
            h = _run(self.enc_coarse, _add_position(h, self.down(h.feats), 2))
        moments = self.enc_out(self.enc_norm(h.feats))
        mean, logvar = moments.chunk(2, dim=1)
        logvar = logvar.clamp(*self.config.logvar_clamp)
        return h.replace(mean), h.replace(logvar)

    def encode(self, x: SparseTensor, sample: bool = False, generator: torch.Generator | None = None) -> SparseTensor:
        """Latents T_La: the posterior mean, or a sample ``mean + std * eps`` when ``sample``."""
        check_features(x)
        mean, logvar = self.encode_posterior(x)
        if not sample:
            return mean
        eps = torch.randn(mean.feats.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean.replace(mean.feats + torch.exp(0.5 * logvar.feats) * eps)

    # ------------------------------------------------------------------ decoder

    def decode_features(self, latents: SparseTensor, structure: Tensor | None = None) -> SparseTensor:
        """Latents -> decoder trunk features on the fine voxels.

        ``structure``: int coords [M, 4] of the fine voxels (needed by unet2, whose latents
        live on the coarse grid; sorted by (batch, x, y, z) within each batch element or not —
        the output follows its row order). Ignored by the tube, which decodes on the latents' voxels.
        """
        if latents.feats.ndim != 2 or latents.feats.shape[1] != self.config.latent_channels:
            raise ValueError(
                f"TexVAE.decode: expected latents [N, {self.config.latent_channels}], got {tuple(latents.feats.shape)}"
            )
        h = latents.replace(self.dec_in(latents.feats))
        if self.config.arch == "unet2":
            if structure is None:
                raise ValueError("TexVAE.decode: arch 'unet2' needs the fine voxel structure [M, 4]")
            h = _run(self.dec_coarse, _add_position(h, h.feats, 2))
            children = pixel_shuffle(h.replace(self.up(h.feats)), 2)
            rows = match_rows(children.coords, structure.to(children.coords.device))
            h = SparseTensor(children.feats[rows], structure.to(children.coords.device).int(), latents.batch_size)
        return _run(self.dec_fine, _add_position(h, h.feats))

    def decode_batch(
        self, latents: SparseTensor, voxel_size: Tensor | float = 1.0, structure: Tensor | None = None
    ) -> list[Gaussians2D]:
        """Latents of a batch -> one :class:`Gaussians2D` per batch element (tile-local metres).

        ``voxel_size``: scalar or [B] voxel edge in metres (1.0: voxel units).
        """
        h = self.decode_features(latents, structure)
        vs = torch.as_tensor(voxel_size, dtype=torch.float32, device=h.device).reshape(-1)  # fp32 even under autocast
        if vs.numel() == 1:
            vs = vs.expand(h.batch_size)
        if vs.numel() != h.batch_size:
            raise ValueError(f"voxel_size: expected a scalar or [{h.batch_size}] values, got {vs.numel()}")
        g = self.head(h.feats, h.coords[:, 1:], vs[h.batch_idx])
        k = self.config.gaussians_per_voxel
        off = h.offsets_host()
        return [g.index(torch.arange(off[b] * k, off[b + 1] * k, device=h.device)) for b in range(h.batch_size)]

    def decode(self, latents: SparseTensor, voxel_size: float = 1.0, structure: Tensor | None = None) -> Gaussians2D:
        """Latents of ONE tile -> its Gaussians (``decode_batch`` for batches)."""
        if latents.batch_size != 1:
            raise ValueError(f"TexVAE.decode takes one tile (batch size 1), got {latents.batch_size}; use decode_batch")
        return self.decode_batch(latents, voxel_size, structure)[0]

    # ------------------------------------------------------------------ training forward

    def forward(
        self, x: SparseTensor, voxel_size: Tensor | float = 1.0, sample: bool = True, seeds: Tensor | None = None
    ) -> tuple[list[Gaussians2D], SparseTensor, SparseTensor]:
        """Encode, sample the posterior (``sample``), decode: (Gaussians per sample, mean, logvar).
        With per-sample ``seeds`` [B] sample b's posterior noise depends on seeds[b] alone (the
        same under any split of the batch over ranks)."""
        mean, logvar = self.encode_posterior(x)
        z = mean
        if sample:
            z = mean.replace(mean.feats + torch.exp(0.5 * logvar.feats) * noise_like(mean, seeds))
        return self.decode_batch(z, voxel_size, structure=x.coords), mean, logvar

    # ------------------------------------------------------------------ persistence

    def export_config(self) -> dict[str, Any]:
        return export_config(self.config, self.in_channels)

    @classmethod
    def from_export(cls, exported: dict[str, Any]) -> TexVAE:
        if exported.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"not a TexVAE export (format {exported.get('format')!r}, expected {CHECKPOINT_FORMAT!r})")
        config = TexVAEConfig.model_validate(exported["config"])
        check_window_shifts(exported, config.arch == "unet2", "TexVAE export")
        return cls(config, int(exported["in_channels"]))

    def save(self, path: str | Path) -> Path:
        """Write ``{"model": "texvae", "config": ..., "state_dict": ...}`` atomically (the trainer's export format)."""
        path = Path(path)
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        with atomic_path(path) as tmp:
            torch.save({"model": "texvae", "config": self.export_config(), "state_dict": state}, tmp)
        return path

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> TexVAE:
        """Rebuild from a file written by :meth:`save` or by the trainer's ``model.pt`` export."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"TexVAE checkpoint not found: {path}")
        blob = torch.load(path, map_location=map_location, weights_only=True)
        if not isinstance(blob, dict) or "config" not in blob or "state_dict" not in blob:
            raise ValueError(f"{path}: not a TexVAE checkpoint (expected keys 'config' and 'state_dict')")
        try:
            model = cls.from_export(blob["config"])
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        model.load_state_dict(blob["state_dict"])
        return model.eval()


def check_features(x: SparseTensor, what: str = "features") -> None:
    """Raise on an empty input or non-finite feature values (naming the count)."""
    if len(x) == 0:
        raise ValueError(f"TexVAE: {what} has zero voxels")
    bad = ~torch.isfinite(x.feats)
    if bool(bad.any()):
        raise ValueError(
            f"TexVAE: {what} holds {int(bad.sum())} non-finite value(s) in {int(bad.any(1).sum())} voxel(s)"
        )


def tile_to_sparse(tile, features: FeatureSet, device: torch.device | str = "cpu") -> SparseTensor:
    """A :class:`~earthcrafter.io.tiles.VoxelTile` -> SparseTensor (batch 1) of the selected features."""
    if len(tile.coords) == 0:
        raise ValueError(f"tile {tile.tile_id}: zero voxels, nothing to encode")
    idx = feature_index(features, tile.layout)
    feats = torch.from_numpy(np.asarray(tile.feats)[:, idx].astype(np.float32)).to(device)
    coords = torch.from_numpy(np.asarray(tile.coords, dtype=np.int32)).to(device)
    x = SparseTensor.from_list([feats], [coords])
    check_features(x, f"tile {tile.tile_id}")
    return x


def encode_tile(model: TexVAE, tile, sample: bool = False) -> SparseTensor:
    """``encode(tile) -> latents``: the tile's T_La on its voxels (tube) or the coarse grid (unet2)."""
    device = next(model.parameters()).device
    return model.encode(tile_to_sparse(tile, model.config.features, device), sample=sample)


def export_config(config: TexVAEConfig, in_channels: int) -> dict[str, Any]:
    """What rebuilds a TexVAE from exported weights (the trainer's export and :meth:`TexVAE.save`)."""
    unet = {"window_shifts": WINDOW_SHIFTS} if config.arch == "unet2" else {}
    return {"format": CHECKPOINT_FORMAT, "config": config.model_dump(mode="json"), "in_channels": int(in_channels),
            **unet}


def kl_divergence(mean: Tensor, logvar: Tensor, batch_idx: Tensor | None = None, batch_size: int = 1) -> Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)) summed over channels, averaged over voxels; with the
    rows' ``batch_idx``, averaged over each sample's voxels and then over the samples."""
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)
    return kl.mean() if batch_idx is None else per_sample_mean(kl, batch_idx, batch_size).mean()
