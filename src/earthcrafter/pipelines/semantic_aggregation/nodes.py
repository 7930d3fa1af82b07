"""semantic_aggregation nodes: train the feature extractor, aggregate features onto tile voxels."""

from __future__ import annotations

import logging
from itertools import islice

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from tqdm.auto import tqdm

from earthcrafter import config, tracking

log = logging.getLogger(__name__)


def _frames(scenes: dict, limit: int):
    """Frames of every scene, lazily, at most ``limit``."""
    def gen():
        for _, load in sorted(scenes.items()):
            yield from load().frames
    return islice(gen(), limit)


def train_feature_extractor(meshed_scenes: dict, params: dict) -> dict:
    """Train ``tiny_ae`` on the dataset's own frames when it is the configured extractor.

    Other extractors (``flux_vae``, ``dinov2``) load pretrained local weights and train nothing.
    """
    from earthcrafter.features.tiny_ae import save_tiny_ae, train_tiny_ae

    cfg = config.validate("semantic_aggregation", params)
    if cfg.features.extractor != "tiny_ae":
        return {"extractor": cfg.features.extractor, "trained": False}
    frames = list(_frames(meshed_scenes, cfg.tiny_ae_training.max_frames))
    if not frames:
        raise ValueError("semantic_aggregation: no frames to train tiny_ae on (run meshing first)")
    model, metrics = train_tiny_ae(frames, cfg.tiny_ae_training, cfg.tiny_ae_model)
    save_tiny_ae(cfg.tiny_ae_weights, model)
    tracking.log_metrics({f"tiny_ae/{k}": v for k, v in metrics.items() if isinstance(v, (int, float))})
    _log_reconstructions(model, frames[:4])
    log.info("tiny_ae trained on %d frames: %s", len(frames), metrics)
    return {"extractor": "tiny_ae", "trained": True, "weights": cfg.tiny_ae_weights, "num_frames": len(frames), **metrics}


def _log_reconstructions(model, frames) -> None:
    import torch

    if not tracking.active() or not frames:
        return
    with torch.no_grad():
        x = torch.stack([torch.from_numpy(f.rgb.copy()).permute(2, 0, 1).float() / 255 for f in frames])
        h, w = (x.shape[2] // 8) * 8, (x.shape[3] // 8) * 8
        x = x[:, :, :h, :w]
        y = model(x).clamp(0, 1)
    fig, axes = plt.subplots(2, len(frames), figsize=(2.5 * len(frames), 5), squeeze=False)
    for j in range(len(frames)):
        axes[0, j].imshow(x[j].permute(1, 2, 0).numpy())
        axes[1, j].imshow(y[j].permute(1, 2, 0).numpy())
        axes[0, j].axis("off")
        axes[1, j].axis("off")
    axes[0, 0].set_title("frame", fontsize=8)
    axes[1, 0].set_title("tiny_ae reconstruction", fontsize=8)
    fig.tight_layout()
    tracking.log_figure(fig, "semantic_aggregation/tiny_ae_reconstructions.png")
    plt.close(fig)


def aggregate_scenes(meshed_scenes: dict, extractor_info: dict, params: dict) -> dict:
    """Per scene: features of every frame, score-aggregated with semantics onto the voxels of
    its tiles (lazily; the dataset writes each scene as it is made)."""
    from earthcrafter.features.extractors import build_extractor
    from earthcrafter.geometry.voxelize import voxelize_scene

    cfg = config.validate("semantic_aggregation", params)
    features = cfg.features
    if features.extractor == "tiny_ae":
        features = features.model_copy(
            update={"tiny_ae": features.tiny_ae.model_copy(update={"weights_path": extractor_info["weights"]})}
        )
    extractor = build_extractor(features)
    bar = tqdm(total=len(meshed_scenes), desc="aggregation", unit="scene")

    def run(sid, load, step):
        out = voxelize_scene(load(), extractor, cfg.grid)
        tracking.log_metrics(
            {"aggregation/tiles": len(out.tiles), "aggregation/skipped": len(out.skipped),
             "aggregation/seconds": out.report.get("seconds", 0.0)},
            step=step,
        )
        bar.update()
        return out

    return {sid: (lambda sid=sid, load=load, i=i: run(sid, load, i)) for i, (sid, load) in enumerate(sorted(meshed_scenes.items()))}
