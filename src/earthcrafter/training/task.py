"""The task interface: what a model must tell the trainer.

A task knows its model, how to batch samples, its loss, its validation statistics and its
figures; the :class:`~earthcrafter.training.trainer.Trainer` knows devices, DDP,
precision, optimisation, EMA, checkpoints, progress and MLflow. StructVAE, TexVAE, StructFM
and TexFM each implement one task.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn


def move_to(obj: Any, device: torch.device) -> Any:
    """Recursively move tensors (and objects with ``.to(device, non_blocking=...)``) inside
    dicts/lists/tuples. The copies are asynchronous: the trainer's loader pins its batches, and a
    copy from pinned memory then overlaps the GPU's work (from pageable memory it waits anyway)."""
    if isinstance(obj, torch.Tensor) or (callable(getattr(obj, "to", None)) and not isinstance(obj, type)):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: move_to(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(move_to(v, device) for v in obj)
    return obj


class Task(ABC):
    """One model's training recipe.

    Subclasses set ``name`` (e.g. ``"structvae"``) and implement the abstract methods.
    ``validation_stats`` returns *additive* statistics (sums and counts as float64
    tensors), which the trainer sums over batches and ranks before calling
    ``metrics_from_stats``: distributed validation is exact, not an average of averages.
    """

    name: str = "model"
    find_unused_parameters: bool = False
    # What the model learned from, stored beside its exported weights for the code that loads them
    # to check (a flow: the latent statistics and the VAE, earthcrafter.flow.latent_stats.latent_inputs).
    inputs: dict[str, Any] | None = None

    @abstractmethod
    def build_model(self) -> nn.Module: ...

    @abstractmethod
    def collate(self, samples: list[Any]) -> Any:
        """Samples from the dataset -> one batch (CPU tensors)."""

    def to_device(self, batch: Any, device: torch.device) -> Any:
        return move_to(batch, device)

    @abstractmethod
    def training_step(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """Forward through ``model`` (possibly DDP-wrapped): (scalar loss, floats to log). The
        trainer logs the loss as "loss"; a task may log its own "loss" instead, or None for a
        micro-batch whose loss means nothing (all its samples skipped).

        The loss must be a mean over the batch's samples, so that averaging over ranks
        equals the loss of the global batch.
        """

    def count(self, batch: Any) -> dict[str, int]:
        """Work in a batch for throughput logging, e.g. ``{"samples": 4, "voxels": 12000}``."""
        return {}

    @abstractmethod
    def validation_stats(self, model: nn.Module, batch: Any) -> dict[str, torch.Tensor]:
        """Additive statistics of one validation batch (summed over batches and ranks)."""

    @abstractmethod
    def metrics_from_stats(self, stats: dict[str, torch.Tensor]) -> dict[str, float]: ...

    def validate(self, model: nn.Module, batches: Iterable[Any]) -> dict[str, float]:
        """Single-process validation over ``batches`` (the trainer does the same across ranks)."""
        total: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for batch in batches:
                for k, v in self.validation_stats(model, batch).items():
                    total[k] = total.get(k, 0) + v.detach().double().cpu()
        return self.metrics_from_stats(total)

    def figures(self, model: nn.Module, batch: Any) -> dict[str, Any]:
        """Named matplotlib figures of the model on one validation batch (optional)."""
        return {}

    def export_config(self) -> dict[str, Any]:
        """What is needed to rebuild the model from exported weights (stored beside them)."""
        return {}
