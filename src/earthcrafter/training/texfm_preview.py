"""After TexFM training: textures generated on validation structures, next to the photo and the
TexVAE's reconstruction of the same tile, rendered from the tile's best-covered view."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from earthcrafter import tracking
from earthcrafter.flow.latent_stats import denormalize
from earthcrafter.io.atomic import atomic_path
from earthcrafter.io.latents import read_latent_tile
from earthcrafter.io.tiles import read_views, tile_views_path
from earthcrafter.models.tex_fm import generate_texture
from earthcrafter.models.tex_vae import TexVAE
from earthcrafter.models.tex_vae_task import masked_view_stats, psnr_from_mse
from earthcrafter.render import rasterize_2dgs
from earthcrafter.sparse import SparseTensor
from earthcrafter.training.conditions import model_condition
from earthcrafter.training.distributed import local_device
from earthcrafter.training.voxel_data import evenly_spaced

log = logging.getLogger(__name__)


def _psnr(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> float:
    """PSNR on the masked pixels, as the TexVAE's validation scores a view."""
    s = masked_view_stats(*(torch.from_numpy(np.asarray(x))[None] for x in (pred, target, mask)))
    return float(psnr_from_mse(s["sq"] / s["px"])[0])


@torch.no_grad()
def texture_preview(net, val, stats: dict, cfg) -> dict[str, Any]:
    """``gen_psnr`` (generated texture vs photo, on the tile's pixels) and ``recon_psnr`` (the
    TexVAE's reconstruction from the cached latents, the ceiling) over ``preview_tiles`` tiles;
    for a model trained with ``height_dropout`` also ``gen_rgb_psnr`` (generated from the view
    without its depth); writes ``<output_dir>/preview/figure.png`` and logs it."""
    device = local_device(cfg.device)
    net, texvae = net.to(device), TexVAE.load(cfg.texvae_path).to(device)
    g = torch.Generator(device=device).manual_seed(0)
    # generated from the model's own input; a model trained with height dropout also from photos
    inputs = {"gen": None, "gen_rgb": "rgb"} if net.cfg.height_dropout > 0 else {"gen": None}
    rows, psnr = [], {kind: [] for kind in (*inputs, "recon")}
    for i in evenly_spaced(len(val), cfg.preview_tiles):
        s, r = val[int(i)], val.rows.iloc[int(i)]
        views_path = tile_views_path(r["tile_path"], r["tile_id"])
        if not views_path.is_file():
            log.warning("TexFM preview: %s has no views (%s); not shown", r["tile_id"], views_path)
            continue
        views = read_views(views_path)
        if len(views) == 0:
            log.warning("TexFM preview: %s has zero views; not shown", r["tile_id"])
            continue
        v = int(views.mask.reshape(len(views), -1).sum(1).argmax())
        lt = read_latent_tile(r["tex_path"])
        coords = torch.from_numpy(lt.coords).to(device)
        structure = SparseTensor.from_list([torch.zeros(len(coords), 1, device=device)], [coords])
        raster = s["layout"][None].to(device)
        latents = {}
        for kind, part in inputs.items():
            z = generate_texture(net, structure, model_condition(raster, net.cfg.condition, part), cfg.sample.steps,
                                 cfg.sample.cfg_strength, generator=g)  # fmt: skip
            latents[kind] = z.replace(denormalize(z.feats, stats))
        latents["recon"] = structure.replace(torch.from_numpy(lt.mean).to(device))
        h, w = views.rgb.shape[1:3]
        photo = views.rgb[v].astype(np.float32) / 255.0
        mask = views.mask[v]
        images = [photo * mask[..., None]]  # the tile's own pixels, as the TexVAE is scored
        for kind, zz in latents.items():
            gs = texvae.decode(zz, voxel_size=float(lt.meta["voxel_size_m"]))
            out = rasterize_2dgs(gs, torch.as_tensor(views.world_to_camera[v : v + 1], dtype=torch.float32, device=device),
                                 torch.as_tensor(views.K[v : v + 1], dtype=torch.float32, device=device), w, h,
                                 background=torch.zeros(3, device=device))  # fmt: skip (black, as TexVAE validates)
            img = out.rgb[0].clamp(0, 1).cpu().numpy()
            psnr[kind].append(_psnr(img, photo, mask))
            if kind != "gen_rgb":  # the figure shows the model's own input
                images.append(img)
        rows.append((r["tile_id"], images, psnr["recon"][-1], psnr["gen"][-1]))
    metrics = {f"{kind}_psnr": float(np.mean(v)) if v else float("nan") for kind, v in psnr.items()}
    metrics["preview_tiles"] = len(rows)
    if rows:
        fig = _figure(rows)
        with atomic_path(Path(cfg.output_dir) / "preview" / "figure.png") as tmp:
            fig.savefig(tmp, dpi=100)
        tracking.log_figure(fig, "figures/texfm_generated.png")
        import matplotlib.pyplot as plt

        plt.close(fig)
    log.info("TexFM preview: %d tiles, generated %.2f dB, TexVAE reconstruction %.2f dB", len(rows),
             metrics["gen_psnr"], metrics["recon_psnr"])  # fmt: skip
    return metrics


def _figure(rows):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 3 * len(rows)), squeeze=False)
    for ax_row, (tile_id, images, recon, gen) in zip(axes, rows):
        titles = (f"photo, tile {tile_id}", f"TexVAE reconstruction {recon:.1f} dB", f"TexFM generated {gen:.1f} dB")
        for ax, img, title in zip(ax_row, images, titles):
            ax.imshow(img, interpolation="nearest")
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    return fig
