"""TexFM: flow matching of the texture latents T_La (c_t = 8 per voxel) on a given structure.

Given the voxels V_c (from the StructVAE, or a tile's own), TexFM generates their texture latents,
which the TexVAE decodes to 2DGS surfels. Two networks (``arch``):

- ``unet``: the paper's — :class:`~earthcrafter.models.flow_unet.SparseFlowUNet`, shifted-window
  attention at 1/1, 1/2, 1/4 of the voxels and full attention at 1/8, with skips;
- ``transformer``: the shared one-resolution
  :class:`~earthcrafter.models.flow_net.SparseFlowNet` on the voxels at L (shifted windows).

Both: timestep AdaLN, cross-attention to the condition tokens (placed at voxel scale).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from earthcrafter.flow.sampler import guidance
from earthcrafter.models.flow_net import COND_BLOCKS_HELP, HEIGHT_DROPOUT_HELP, SparseFlowNet, check_height_dropout
from earthcrafter.models.flow_unet import SparseFlowUNet, check_widths
from earthcrafter.sparse import SparseTensor


class TexFMConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    latent_channels: int = Field(8, ge=1, description="c_t")
    layout_grid: int = Field(8, ge=1, description="semantic layout raster (L/8 columns of the tile)")
    layout_stride: int = Field(8, ge=1, description="voxels per layout column (L / layout_grid)")
    arch: Literal["transformer", "unet"] = Field("transformer", description="one resolution, or the paper's U-Net")
    width: int = Field(128, ge=16, description="transformer width; the timestep embedding of both")
    depth: int = Field(4, ge=1, description="transformer blocks")
    unet_widths: list[int] = Field([64, 96, 128, 128], description="U-Net widths at 1/1, 1/2, 1/4, 1/8 (the last: "
                                   "full attention)")
    unet_depths: list[int] = Field([1, 1, 1, 2], description="U-Net blocks per level, on the way down and again on "
                                   "the way up (the last: the middle)")
    num_heads: int = Field(4, ge=1)
    mlp_ratio: float = 4.0
    attn: Literal["full", "window"] = "window"
    window: int = Field(8, ge=2)
    condition: Literal["semantic", "rgbd", "mixed", "none"] = "semantic"  # as StructFMConfig.condition
    cond_dropout: float = Field(0.1, ge=0, le=1)
    height_dropout: float = Field(0.0, ge=0, le=1, description=HEIGHT_DROPOUT_HELP)
    cond_blocks: int = Field(0, ge=0, description=COND_BLOCKS_HELP)

    @model_validator(mode="after")
    def _check(self) -> TexFMConfig:
        unet = self.arch == "unet"
        check_widths([self.width] + (self.unet_widths if unet else []), self.num_heads, self.unet_depths if unet else None)
        check_height_dropout(self.condition, self.height_dropout)
        return self


def check_layout_stride(cfg: TexFMConfig, L: int, where: str = "") -> None:
    """Raise unless a conditioned TexFM's condition columns tile the ``L``-voxel tiles it runs on:
    ``layout_grid * layout_stride == L`` (the tokens sit at the centres of ``layout_stride``-voxel
    columns, the raster has ``layout_grid`` of them per edge). An unconditioned TexFM has no tokens."""
    if cfg.condition == "none" or cfg.layout_grid * cfg.layout_stride == L:
        return
    fix = f"layout_stride {L // cfg.layout_grid}" if L % cfg.layout_grid == 0 else "a layout_grid that divides L"
    raise ValueError(f"{where}TexFM layout_grid {cfg.layout_grid} x layout_stride {cfg.layout_stride} = "
                     f"{cfg.layout_grid * cfg.layout_stride} voxels, but the tiles have L = {L}: its condition "
                     f"tokens would sit in the wrong columns (use {fix})")  # fmt: skip


def build_texfm(cfg: TexFMConfig) -> SparseFlowNet | SparseFlowUNet:
    net = SparseFlowUNet if cfg.arch == "unet" else SparseFlowNet
    return net(cfg, cfg.latent_channels, cfg.latent_channels, layout_scale=cfg.layout_stride)


@torch.no_grad()
def generate_texture(
    net: SparseFlowNet | SparseFlowUNet,
    structure: SparseTensor,
    layout: torch.Tensor | None,
    steps: int = 25,
    cfg_strength: float = 3.0,
    generator: torch.Generator | None = None,
    known: tuple[torch.Tensor, torch.Tensor] | None = None,
    resample: int = 0,
) -> SparseTensor:
    """Normalised texture latents [N, c_t] on the voxels of ``structure`` (coords at L).

    ``known`` = (mask [N], latents [N, c_t]): voxels whose latents are already decided (outpainting;
    :func:`~earthcrafter.flow.euler_sample`, ``resample`` times resampled per step); they come back
    as given.
    """
    from earthcrafter.flow import euler_sample

    c = net.out.out_features
    noise = SparseTensor(torch.randn(len(structure), c, generator=generator, device=structure.device),
                         structure.coords, structure.batch_size)  # fmt: skip
    uncond, strength = guidance(layout, cfg_strength)  # none for the dropped (all-zero) condition
    z = euler_sample(lambda z, t, cond: net(z, t, cond), noise, steps, layout, uncond, strength, known=known,
                     resample=resample if known is not None else 0, generator=generator)  # fmt: skip
    if known is not None:
        z = z.replace(torch.where(known[0][:, None], known[1].to(z.feats.dtype), z.feats))
    return z
