"""Learning-rate schedule: linear warm-up, then polynomial decay (the paper's policy)."""

from __future__ import annotations

import torch


def warmup_poly_factor(step: int, *, total: int, warmup: int, power: float, min_ratio: float) -> float:
    """lr multiplier at ``step`` (0-based, the step about to be taken).

    Warm-up: ``(step + 1) / warmup`` for ``step < warmup``; afterwards
    ``min_ratio + (1 - min_ratio) · (1 - p)^power`` with ``p`` the fraction of the decay
    phase elapsed, reaching ``min_ratio`` at ``step = total``.
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(total - warmup, 1)
    p = min(max(step - warmup, 0) / span, 1.0)
    return min_ratio + (1.0 - min_ratio) * (1.0 - p) ** power


def warmup_poly_scheduler(
    optimizer: torch.optim.Optimizer, *, total: int, warmup: int, power: float = 1.0, min_ratio: float = 0.0
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: warmup_poly_factor(s, total=total, warmup=warmup, power=power, min_ratio=min_ratio),
    )
