"""Exponential moving average of model weights (validation and export use the EMA)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """``ema ← decay·ema + (1 − decay)·θ`` after each optimizer step, in fp32.

    Buffers (e.g. norm statistics) are copied, not averaged. Before ``start`` updates the
    EMA simply copies the weights, so early noisy weights do not linger.
    """

    def __init__(self, model: nn.Module, decay: float, start: int = 0):
        self.decay, self.start = decay, start
        self.model = copy.deepcopy(model).float().eval()
        self.model.requires_grad_(False)
        self.num_updates = 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = 0.0 if self.num_updates < self.start else self.decay
        ema_params = dict(self.model.named_parameters())
        for name, p in model.named_parameters():
            ema_params[name].lerp_(p.detach().float(), 1.0 - decay)
        ema_buffers = dict(self.model.named_buffers())
        for name, b in model.named_buffers():
            ema_buffers[name].copy_(b)
        self.num_updates += 1

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "num_updates": self.num_updates}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.num_updates = int(state["num_updates"])
