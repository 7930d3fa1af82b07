"""What the flow tests share: training one network on copies of one sample."""

from __future__ import annotations

import torch


def fit_one_sample(task, net: torch.nn.Module, sample: dict, steps: int, copies: int, lr: float = 2e-3) -> None:
    """``steps`` Adam steps of ``task``'s training loss on batches of ``copies`` copies of ``sample``
    (each copy of each step its own ``seed``, so noise and times differ: a sample's draws come from its seed)."""
    opt = torch.optim.Adam(net.parameters(), lr)
    for step in range(steps):
        loss, _ = task.training_step(net, task.collate([{**sample, "seed": step * copies + i} for i in range(copies)]))
        opt.zero_grad()
        loss.backward()
        opt.step()
