"""After training: generate structures from validation layouts, decode them, score and show them."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from earthcrafter import tracking
from earthcrafter.evaluation import voxel_metrics as vm
from earthcrafter.flow.latent_stats import denormalize
from earthcrafter.geometry.cameras import Camera
from earthcrafter.geometry.raycast import MeshRaycaster
from earthcrafter.geometry.voxel_mesh import voxel_mesh
from earthcrafter.io.atomic import atomic_path
from earthcrafter.io.scene import write_mesh_ply
from earthcrafter.models.struct_fm import StructFM
from earthcrafter.render import orbit_cameras
from earthcrafter.semantics import PALETTE
from earthcrafter.sparse.tensor import batched_coords
from earthcrafter.training.conditions import model_condition, view_colours
from earthcrafter.training.distributed import local_device
from earthcrafter.training.voxel_data import evenly_spaced

log = logging.getLogger(__name__)


def height_colors(coords: np.ndarray, top: int) -> np.ndarray:
    import matplotlib

    return (matplotlib.colormaps["viridis"](np.clip(coords[:, 2] / max(top, 1), 0, 1))[:, :3] * 255).astype(np.uint8)


def _render(coords: np.ndarray, L: int, top: int, size: int = 192) -> np.ndarray:
    if len(coords) == 0:
        return np.full((size, size, 3), 255, np.uint8)
    c = np.array([L / 2, L / 2, float(np.median(coords[:, 2]))])
    viewmats, Ks = orbit_cameras(c, 1.1 * L, top - c[2] + 0.6 * L, 1, size, size, 50.0)
    return MeshRaycaster(voxel_mesh(coords, colors=height_colors(coords, top))).render(
        Camera(Ks[0], viewmats[0], size, size)).rgb  # fmt: skip


@torch.no_grad()
def generate_preview(model: StructFM, val, stats: dict, cfg, given: str | None = None) -> dict[str, Any]:
    """Generate one structure per chosen validation layout (CFG), decode it with the StructVAE, and
    compare with the tile: ``gen_cell_*`` (the final cells at L/8, Table 4's mIoU³),
    ``gen_coarse_cell_*`` (the coarse stage's cells: the ClassSFM row), ``gen_*`` (voxels at L, mIoU⁰). Writes ``<output_dir>/preview/{figure.png, <tile>_generated.ply}`` and logs the figure.

    ``given``: generate from something else than the model's own input — ``"rgb"``: the tiles'
    views without their depth (a model trained with ``height_dropout``); ``"none"``: the null
    condition of classifier-free guidance (what the condition adds). The metrics are then
    ``gen_<given>_*`` and the files ``preview_<given>/``."""
    from earthcrafter.training.structvae import load_structvae

    if given not in (None, "rgb", "none"):
        raise ValueError(f"preview input must be None, 'rgb' or 'none', got {given!r}")
    photo = given == "rgb"

    device = local_device(cfg.device)
    model, structvae = model.to(device), load_structvae(cfg.structvae_path).to(device)
    L = structvae.config.L
    picks = evenly_spaced(len(val), cfg.preview_tiles)
    out = Path(cfg.output_dir) / (f"preview_{given}" if given else "preview")
    rows, counts = [], {}
    g = torch.Generator(device=device).manual_seed(0)
    for i in picks:
        s = val[int(i)]
        layout = model_condition(s["layout"][None].to(device), model.config.condition, "rgb" if photo else None)
        if given == "none" and layout is not None:
            layout = torch.zeros_like(layout)
        first, z = model.generate(layout, 1, cfg.sample.steps, cfg.sample.cfg_strength, generator=g, device=device)
        for name, cells in (("cell", z.coords), ("coarse_cell", first.coords)):  # L/8 (Table 4's mIoU^3)
            for k, v in vm.confusion(cells.cpu(), batched_coords(s["cells"]), 1).items():
                counts[f"{name}_{k}"] = counts.get(f"{name}_{k}", 0.0) + float(v.sum())
        voxels = structvae.decode(z.replace(denormalize(z.feats, stats)), threshold=0.0).coords.cpu()
        from earthcrafter.io.tiles import read_tile_coords

        gt, _ = read_tile_coords(val.rows.iloc[int(i)]["tile_path"])
        for k, v in vm.confusion(voxels, batched_coords(gt), 1).items():
            counts[k] = counts.get(k, 0.0) + float(v.sum())
        gen = voxels[:, 1:].numpy()
        write_mesh_ply(out / f"{s['tile_id']}_generated.ply", voxel_mesh(gen, colors=height_colors(gen, L)))
        top = int(max(gt[:, 2].max(), gen[:, 2].max() if len(gen) else 0))
        if photo:  # what the model was given: the view's colours
            first_panel = view_colours(s["layout"].numpy(), model.config.condition) * 255
        else:
            first_panel = PALETTE[s["semantic"].argmax(-1).numpy()] * (s["semantic"].sum(-1, keepdim=True).numpy() > 0)
        rows.append((s["tile_id"], first_panel.astype(np.uint8).transpose(1, 0, 2)[::-1], _render(gt, L, top),
                     _render(gen, L, top)))  # fmt: skip
    metrics = {f"gen_{k}": v for k, v in vm.ratios({k: counts[k] for k in ("tp", "fp", "fn")}).items()}
    for name in ("cell", "coarse_cell"):
        ratios = vm.ratios({k: counts[f"{name}_{k}"] for k in ("tp", "fp", "fn")})
        metrics.update({f"gen_{name}_{k}": v for k, v in ratios.items()})
    metrics["gen_tiles"] = len(picks)
    fig = _figure(rows, "the view's colours" if photo else "semantic layout")
    with atomic_path(out / "figure.png") as tmp:
        fig.savefig(tmp, dpi=100)
    tracking.log_figure(fig, f"figures/structfm_generated{f'_{given}' if given else ''}.png")
    import matplotlib.pyplot as plt

    plt.close(fig)
    log.info("StructFM preview%s: %d layouts, voxel IoU %.3f, cell IoU %.3f", f" ({given})" if given else "",
             len(picks), metrics["gen_iou"], metrics["gen_cell_iou"])  # fmt: skip
    if given:
        return {f"gen_{given}_{k[4:]}": v for k, v in metrics.items()}
    return metrics


def _figure(rows, first: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 3, figsize=(9, 3 * len(rows)), squeeze=False)
    for ax_row, (tile_id, layout, gt, gen) in zip(axes, rows):
        for ax, img, title in zip(ax_row, (layout, gt, gen), (first, "tile", "generated")):
            ax.imshow(img, interpolation="nearest")
            ax.set_title(f"{title}" if title != "tile" else f"tile {tile_id}", fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    return fig
