"""What the flow models' tasks share: the flow-matching training step, the fixed-time validation
loss, and a :class:`FlowTask` base whose batches are ``{"x0": SparseTensor, "layout", "seeds"}``."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from earthcrafter.flow import RectifiedFlow, drop_condition, sample_timesteps
from earthcrafter.seeding import randn_per_sample, sample_generators
from earthcrafter.sparse import SparseTensor
from earthcrafter.training.conditions import drop_depth, mix_parts, model_condition
from earthcrafter.training.task import Task

VAL_TIMES = (0.25, 0.5, 0.75)  # fixed times of the validation loss


def flow_training_step(
    flow: RectifiedFlow, model: nn.Module, x0: SparseTensor, layout: torch.Tensor | None, cond_dropout: float,
    condition: str = "semantic", height_dropout: float = 0.0, *, seeds: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, float]]:
    """One flow-matching loss on a batch: logit-normal times, Gaussian noise, CFG dropout of the
    condition raster (for a ``mixed`` condition, each sample first keeps one of its parts; with
    ``height_dropout``, a sample's view then loses its depth with that probability).

    Every draw of sample b comes from its own generator, seeded by ``seeds[b]`` (the batch's draw
    seeds), so W ranks sharing a global batch draw what one process draws."""
    gens = sample_generators(seeds, x0.device)
    t = torch.cat([sample_timesteps(1, generator=g, device=x0.device) for g in gens])
    noise = x0.replace(randn_per_sample(x0, gens))
    if layout is not None:
        layout = torch.cat([drop_condition(drop_depth(mix_parts(part, condition, g), condition, height_dropout, g),
                                           cond_dropout, g) for part, g in zip(layout.split(1), gens)])
    loss = flow.loss(model(flow.interpolate(x0, noise, t), t, layout), x0, noise)
    return loss, {}  # the trainer logs the loss itself


def flow_loss_stats(
    flow: RectifiedFlow, model: nn.Module, x0: SparseTensor, layout: torch.Tensor | None, noise: SparseTensor
) -> dict[str, torch.Tensor]:
    """Summed squared velocity errors at the fixed ``VAL_TIMES`` for the given ``noise`` (additive stats)."""
    stats = {"elements": torch.tensor(float(x0.feats.numel()), dtype=torch.float64)}
    for t in VAL_TIMES:
        tb = torch.full((x0.batch_size,), t, device=x0.device)
        err = model(flow.interpolate(x0, noise, tb), tb, layout).feats - flow.target(x0, noise).feats
        stats[f"sse_t{int(100 * t)}"] = err.double().pow(2).sum().cpu()
    return stats


def flow_loss_metrics(stats: dict[str, torch.Tensor]) -> dict[str, float]:
    n = float(stats["elements"])
    out = {f"loss_t{int(100 * t)}": float(stats[f"sse_t{int(100 * t)}"]) / n for t in VAL_TIMES}
    out["val_loss"] = float(np.mean(list(out.values())))
    return out


class FlowTask(Task):
    """Base of StructFMTask and TexFMTask: ``self.config`` has ``condition``, ``cond_dropout`` and
    ``height_dropout``, ``self.flow`` is the objective."""

    flow: RectifiedFlow

    def count(self, batch: dict) -> dict[str, int]:
        return {"samples": batch["x0"].batch_size, "voxels": len(batch["x0"])}

    def _layout(self, batch: dict) -> torch.Tensor | None:
        """The condition validation gives the model (:func:`~earthcrafter.training.conditions.model_condition`)."""
        return model_condition(batch["layout"], self.config.condition)

    def training_step(self, model: nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        layout = batch["layout"] if self.config.condition != "none" else None
        return flow_training_step(self.flow, model, batch["x0"], layout, self.config.cond_dropout, self.config.condition,
                                  self.config.height_dropout, seeds=batch["seeds"])
