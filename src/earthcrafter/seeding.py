"""Per-sample random draws: what a sample draws depends on its own seed alone.

The training sampler gives every draw a seed (:class:`earthcrafter.training.sampler.Draw`).
Randomness drawn from one generator per sample, seeded by it, does not depend on which rank,
batch or micro-batch the sample lands in: a global batch split over W ranks draws exactly what
one process draws for it, and a validation tile draws the same noise at any batch size. A
process-wide generator (``torch.randn_like``) gives neither.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from earthcrafter.sparse import SparseTensor


def draw_seed(seed: Sequence[int]) -> int:
    """The seed a sample hands the model, from its draw's ``(base seed, draw number)``
    (:class:`~earthcrafter.training.sampler.Draw`; validation tiles use ``(0, index)``)."""
    return int(np.random.SeedSequence(list(seed)).generate_state(1)[0])


def sample_generators(seeds: torch.Tensor | Sequence[int], device: torch.device | str) -> list[torch.Generator]:
    """One generator per sample on ``device``, seeded by that sample's seed."""
    values = seeds.tolist() if isinstance(seeds, torch.Tensor) else seeds  # one host copy, not one sync per sample
    return [torch.Generator(device=device).manual_seed(int(s)) for s in values]


def randn_per_sample(x: SparseTensor | torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """Standard normal values shaped like ``x``'s (a sparse batch's feats, or a dense [B, ...]
    tensor); sample b's rows come from ``generators[b]``. Drawn in float32, then cast to x's dtype
    (under bf16 autocast the values stay those of the float32 draw)."""
    if isinstance(x, SparseTensor):
        off, width, dev = x.offsets_host(), x.feats.shape[1:], x.feats.device
        if len(generators) != x.batch_size:
            raise ValueError(f"{len(generators)} generators for a batch of {x.batch_size} samples")
        parts = [torch.randn(off[b + 1] - off[b], *width, generator=g, device=dev) for b, g in enumerate(generators)]
        out = torch.cat(parts) if parts else torch.empty(0, *width, device=dev)
        return out.to(x.feats.dtype)
    if len(generators) != x.shape[0]:
        raise ValueError(f"{len(generators)} generators for a batch of {x.shape[0]} samples")
    return torch.stack([torch.randn(x.shape[1:], generator=g, device=x.device) for g in generators]).to(x.dtype)


def noise_like(x: SparseTensor, seeds: torch.Tensor | Sequence[int] | None) -> torch.Tensor:
    """Standard normal values like ``x.feats``: per sample from ``seeds`` (:func:`randn_per_sample`),
    or from the process's generator without seeds (inference-time sampling)."""
    if seeds is None:
        return torch.randn_like(x.feats)
    return randn_per_sample(x, sample_generators(seeds, x.feats.device))


def rand_per_row(batch_idx: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """Uniform [0, 1) values, one per row of a batch whose rows belong to samples ``batch_idx``
    (in any order); sample b's rows, in their order, take ``generators[b]``'s draws."""
    order = torch.argsort(batch_idx, stable=True)
    counts = torch.bincount(batch_idx, minlength=len(generators)).tolist()
    draws = [torch.rand(n, generator=g, device=batch_idx.device) for n, g in zip(counts, generators)]
    out = torch.empty(len(batch_idx), device=batch_idx.device)
    out[order] = torch.cat(draws) if draws else out[:0]
    return out
