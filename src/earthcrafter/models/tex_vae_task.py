"""TexVAE as a :class:`~earthcrafter.training.task.Task`: render, compare, validate, draw.

Loss per sample (averaged over the batch's samples): the decoded Gaussians are rendered into
the sample's views over the view's background, and compared with the ground truth composited
on the same background (``colour + (1 - coverage) * background``), so surfels that leak
outside the tile are penalised as wrongly coloured background. Pixels where the tile hides
behind geometry outside it (``ViewSet.hidden``) are unknown to the photo: the loss sees the
prediction there, not background:

    L = w_l1 L1 + w_ssim (1 - SSIM) + w_vgg LPIPS_vgg + w_alex LPIPS_alex + w_kl KL.

LPIPS (VGG and AlexNet, combined as in the paper) is used when its weights are available
locally; otherwise training goes on without it and the run is tagged
``lpips=disabled: <reason>``.

Validation renders the posterior mean over the fixed validation background and measures PSNR,
L1 and SSIM (and LPIPS when available) on the pixels that show the tile (coverage > 0.5).
PSNR is averaged over views; L1 over masked pixels and channels.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from earthcrafter.models.tex_vae import TexVAE, TexVAEConfig, export_config, kl_divergence
from earthcrafter.models.tex_vae_data import TexBatch, ViewSet, collate_tex
from earthcrafter.models.tex_vae_losses import LpipsPair, ssim_map
from earthcrafter.render.gaussians import Gaussians2D
from earthcrafter.render.rasterize import rasterize_2dgs
from earthcrafter.sparse import SparseTensor
from earthcrafter.training.task import Task

log = logging.getLogger(__name__)


class TexVAELossConfig(BaseModel):
    """Loss weights (``train_texvae.loss``)."""

    model_config = ConfigDict(extra="forbid")

    l1: float = Field(1.0, ge=0)
    ssim: float = Field(0.2, ge=0, description="weight of 1 - SSIM (11x11 Gaussian window, sigma 1.5)")
    lpips_vgg: float = Field(0.1, ge=0, description="LPIPS with the VGG backbone (0: off)")
    lpips_alex: float = Field(0.1, ge=0, description="LPIPS with the AlexNet backbone (0: off)")
    kl: float = Field(1e-6, ge=0, description="KL(q(z|x) || N(0, I)) per voxel, summed over channels")
    lpips_weights_dir: str | None = Field(None, description="folder with the LPIPS backbones (else the torch hub cache)")
    require_lpips: bool = Field(False, description="fail at start when LPIPS is weighted but its package or weights "
                                "are missing (otherwise the run trains without it, with a warning)")  # fmt: skip


class RenderConfig(BaseModel):
    """2DGS rasterisation settings (``train_texvae.render``)."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["auto", "torch", "gsplat"] = Field("auto", description="auto: gsplat on CUDA, torch otherwise")
    near: float = Field(0.05, gt=0, description="metres")
    far: float = Field(1e5, gt=0, description="metres")
    tile_size: int = Field(8, ge=1, le=64, description="screen tile edge for binning surfels (pixels; the torch "
                           "renderer's: gsplat always bins by 16)")


def render_views(g: Gaussians2D, views: ViewSet, render: RenderConfig) -> Tensor:
    """[V, H, W, 3] float32 colour of ``g`` in every view of ``views`` over its background.

    Rasterisation runs in float32 outside autocast (the rasterisers expect it).
    """
    with torch.autocast(device_type=g.device.type, enabled=False):
        out = rasterize_2dgs(
            g.to(torch.float32), views.world_to_camera, views.K, views.width, views.height,
            near=render.near, far=render.far, background=views.background, backend=render.backend,
            tile_size=render.tile_size,
        )  # fmt: skip
    return out.rgb


def masked_view_stats(pred: Tensor, target: Tensor, mask: Tensor) -> dict[str, Tensor]:
    """Per-view error sums on the masked pixels: sq [V], abs [V], pixels [V] (x 3 channels)."""
    m = mask[..., None].to(pred.dtype)
    diff = (pred - target) * m
    return {
        "sq": diff.pow(2).flatten(1).sum(1),
        "abs": diff.abs().flatten(1).sum(1),
        "px": m.flatten(1).sum(1) * 3,
    }


def psnr_from_mse(mse: Tensor) -> Tensor:
    return -10.0 * torch.log10(mse.clamp_min(1e-10))


class TexVAETask(Task):
    """TexVAE training recipe for :class:`~earthcrafter.training.trainer.Trainer`."""

    name = "texvae"

    def __init__(
        self,
        model_config: TexVAEConfig,
        in_channels: int,
        loss: TexVAELossConfig | None = None,
        render: RenderConfig | None = None,
        lpips: LpipsPair | None = None,
        max_figure_views: int = 4,
    ):
        self.model_config, self.in_channels = model_config, int(in_channels)
        self.loss = loss or TexVAELossConfig()
        self.render = render or RenderConfig()
        self.lpips = lpips or LpipsPair.disabled("not requested")
        self.max_figure_views = max_figure_views

    def build_model(self) -> nn.Module:
        return TexVAE(self.model_config, self.in_channels)

    def collate(self, samples: list[Any]) -> TexBatch:
        return collate_tex(samples)

    def count(self, batch: TexBatch) -> dict[str, int]:
        return {
            "samples": len(batch),
            "voxels": len(batch.voxels) if batch.voxels is not None else 0,
            "views": sum(len(v) for v in batch.views),
        }

    def export_config(self) -> dict[str, Any]:
        return export_config(self.model_config, self.in_channels)

    # ------------------------------------------------------------------ training

    def _image_losses(self, pred: Tensor, target: Tensor) -> dict[str, Tensor]:
        out = {"l1": (pred - target).abs().mean()}
        if self.loss.ssim > 0:
            out["ssim"] = ssim_map(pred, target).mean()
        out.update(self.lpips.losses(pred, target, vgg=self.loss.lpips_vgg > 0, alex=self.loss.lpips_alex > 0))
        return out

    def training_step(self, model: nn.Module, batch: TexBatch) -> tuple[Tensor, dict[str, float]]:
        if batch.voxels is None:  # every sample skipped
            return self._blank_step(model), {"skipped": float(len(batch.skipped)), "loss": None}
        gaussians, mean, logvar = model(batch.voxels, batch.voxel_size, sample=True, seeds=batch.seeds)
        terms: dict[str, Tensor] = {}
        psnr = []
        for g, views in zip(gaussians, batch.views):
            pred = render_views(g, views, self.render)
            target = views.loss_target(pred)
            for k, v in self._image_losses(pred, target).items():
                terms[k] = terms.get(k, 0.0) + v / len(batch)
            with torch.no_grad():
                s = masked_view_stats(pred.clamp(0, 1), target, views.mask())
                psnr.append(psnr_from_mse(s["sq"] / s["px"].clamp_min(1)).mean())
        kl = kl_divergence(mean.feats.float(), logvar.feats.float(), mean.batch_idx, mean.batch_size)
        loss = self.loss.l1 * terms["l1"] + self.loss.kl * kl
        if "ssim" in terms:
            loss = loss + self.loss.ssim * (1.0 - terms["ssim"])
        if "lpips_vgg" in terms:
            loss = loss + self.loss.lpips_vgg * terms["lpips_vgg"]
        if "lpips_alex" in terms:
            loss = loss + self.loss.lpips_alex * terms["lpips_alex"]
        logs = {k: float(v.detach()) for k, v in terms.items()}
        logs.update(kl=float(kl.detach()), psnr=float(torch.stack(psnr).mean()), skipped=float(len(batch.skipped)))
        return loss, logs

    def _blank_step(self, model: nn.Module) -> Tensor:
        """A zero loss through a forward pass of ``model`` on a blank 2 x 2 x 2 block of voxels: under
        DDP the forward is what makes this rank join the step's gradient all-reduce (a loss built
        from the weights alone never calls it, and the ranks' collectives fall out of step)."""
        device = next(model.parameters()).device
        coords = torch.cat([torch.zeros(8, 1, dtype=torch.long), torch.cartesian_prod(*[torch.arange(2)] * 3)], 1)
        blank = SparseTensor(torch.zeros(8, self.in_channels, device=device), coords.int().to(device), 1)
        gaussians, mean, logvar = model(blank, torch.ones(1, device=device), sample=False)
        fields = [t for g in gaussians for t in (g.means, g.quats, g.scales, g.opacities, g.sh)]
        out = [mean.feats, logvar.feats, *fields]
        return sum(t.float().sum() for t in out) * 0.0

    # ------------------------------------------------------------------ validation

    def _predict(self, model: nn.Module, batch: TexBatch) -> list[Tensor]:
        gaussians, _, _ = model(batch.voxels, batch.voxel_size, sample=False)
        return [render_views(g, v, self.render).clamp(0, 1) for g, v in zip(gaussians, batch.views)]

    def validation_stats(self, model: nn.Module, batch: TexBatch) -> dict[str, Tensor]:
        f64 = lambda v: torch.as_tensor(v, dtype=torch.float64)  # noqa: E731
        stats = {"skipped": f64(len(batch.skipped))}
        if batch.voxels is None:
            return stats
        sums = {"psnr_sum": 0.0, "ssim_sum": 0.0, "views": 0.0, "sq_err": 0.0, "abs_err": 0.0, "px": 0.0}
        lp = {"lpips_vgg_sum": 0.0, "lpips_alex_sum": 0.0}
        for pred, views in zip(self._predict(model, batch), batch.views):
            target, mask = views.target(), views.mask()
            s = masked_view_stats(pred, target, mask)
            sums["psnr_sum"] += float(psnr_from_mse(s["sq"] / s["px"].clamp_min(1)).sum())
            smap = ssim_map(pred, target)  # [V, H, W]
            m = mask.to(smap.dtype)
            sums["ssim_sum"] += float(((smap * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1)).sum())
            sums["views"] += len(views)
            sums["sq_err"] += float(s["sq"].sum())
            sums["abs_err"] += float(s["abs"].sum())
            sums["px"] += float(s["px"].sum())
            if self.lpips.available:
                for k, v in self.lpips.losses(pred, target, per_view=True).items():
                    lp[f"{k}_sum"] += float(v.sum())
        stats.update({k: f64(v) for k, v in sums.items()})
        if self.lpips.available:
            stats.update({k: f64(v) for k, v in lp.items()})
        return stats

    def metrics_from_stats(self, stats: dict[str, Tensor]) -> dict[str, float]:
        views = float(stats.get("views", 0.0))
        out = {"skipped": float(stats.get("skipped", 0.0)), "views": views}
        if views == 0:
            return out
        px = max(float(stats["px"]), 1.0)
        out.update(
            psnr=float(stats["psnr_sum"]) / views,
            psnr_pooled=float(psnr_from_mse(torch.tensor(float(stats["sq_err"]) / px))),
            l1=float(stats["abs_err"]) / px,
            ssim=float(stats["ssim_sum"]) / views,
        )
        for k in ("lpips_vgg", "lpips_alex"):
            if f"{k}_sum" in stats:
                out[k] = float(stats[f"{k}_sum"]) / views
        return out

    # ------------------------------------------------------------------ figures

    def figures(self, model: nn.Module, batch: TexBatch) -> dict[str, Any]:
        """``val_views``: ground truth | reconstruction | |error| for a few validation views."""
        if batch.voxels is None:
            return {}
        preds = self._predict(model, batch)
        rows = []
        for tile_id, pred, views in zip(batch.tile_ids, preds, batch.views):
            target = views.target()
            hidden = views.hidden if views.hidden is not None else torch.zeros_like(views.coverage)
            for i in range(len(views)):
                name = views.names[i] if views.names else str(i)
                rows.append((tile_id, name, target[i], pred[i], views.mask()[i], hidden[i].to(pred.device)))
        rows = rows[: self.max_figure_views]
        fig, axes = plt.subplots(len(rows), 3, figsize=(9, 3 * len(rows)), dpi=100, squeeze=False)
        for r, (tile_id, name, gt, pr, mask, hid) in enumerate(rows):
            s = masked_view_stats(pr[None], gt[None], mask[None])
            psnr = float(psnr_from_mse(s["sq"] / s["px"].clamp_min(1))[0])
            err = (pr - gt).abs().mean(-1) * (1.0 - hid.to(pr.dtype))  # not scored where hidden
            # hidden tile pixels (unknown to the photo, not scored) tinted magenta in the ground truth
            magenta = torch.tensor([0.8, 0.1, 0.8], device=gt.device)
            gt = gt + 0.6 * hid[..., None].to(gt.dtype) * (magenta - gt)
            for ax, img, title in (
                (axes[r, 0], gt, f"{tile_id} / {name}: ground truth\n(magenta: hidden behind off-tile geometry)"),
                (axes[r, 1], pr, f"reconstruction, PSNR {psnr:.2f} dB (tile pixels)"),
                (axes[r, 2], err, "|error| (mean over RGB)"),
            ):
                kw = {"cmap": "magma", "vmin": 0, "vmax": 0.5} if img.dim() == 2 else {}
                ax.imshow(img.detach().float().cpu().clamp(0, 1).numpy(), **kw)
                ax.set_title(title, fontsize=8)
                ax.set_xticks([]), ax.set_yticks([])
        fig.tight_layout()
        return {"val_views": fig}
