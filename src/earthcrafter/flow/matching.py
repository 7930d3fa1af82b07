"""The rectified-flow objective (TRELLIS / SD3 convention, which EarthCrafter follows).

Time runs from data (t = 0) to noise (t = 1):

    x_t = (1 - t) x_0 + (σ_min + (1 - σ_min) t) ε,      v = dx_t/dt = (1 - σ_min) ε - x_0,

and the model regresses v with a mean-squared error, over each sample's elements (a sparse
sample's feats) and then over the samples. Training times are drawn logit-normal
(t = sigmoid(N(m, s)), m = 1, s = 1: median 0.73, more time near the noise end). Models take
1000·t as their timestep input (TRELLIS).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from earthcrafter.sparse import SparseTensor, per_sample_mean

Latents = torch.Tensor | SparseTensor


def values_of(x: Latents) -> torch.Tensor:
    return x.feats if isinstance(x, SparseTensor) else x


def with_values(x: Latents, values: torch.Tensor) -> Latents:
    return x.replace(values) if isinstance(x, SparseTensor) else values


def per_element(t: torch.Tensor, x: Latents) -> torch.Tensor:
    """A per-sample time [B] shaped to broadcast against ``x``'s values ([B, 1, ...] dense,
    [N, 1] sparse, one row per voxel)."""
    v = values_of(x)
    if isinstance(x, SparseTensor):
        return x.broadcast(t.to(v.dtype)).reshape(-1, *([1] * (v.ndim - 1)))
    if t.shape[0] != v.shape[0]:
        raise ValueError(f"{t.shape[0]} timesteps for a batch of {v.shape[0]}")
    return t.to(v.dtype).reshape(-1, *([1] * (v.ndim - 1)))


@dataclass(frozen=True)
class RectifiedFlow:
    """The straight path between data and noise, and its velocity target."""

    sigma_min: float = 1e-5

    def sigma(self, t):
        """The noise scale σ_min + (1 − σ_min) t of the path at time ``t`` (a float or a tensor)."""
        return self.sigma_min + (1 - self.sigma_min) * t

    def interpolate(self, x0: Latents, noise: Latents, t: torch.Tensor) -> Latents:
        """x_t for per-sample times ``t`` [B]."""
        tt = per_element(t, x0)
        return with_values(x0, (1 - tt) * values_of(x0) + self.sigma(tt) * values_of(noise))

    def target(self, x0: Latents, noise: Latents) -> Latents:
        """The velocity the model learns: d x_t / d t (independent of t)."""
        return with_values(x0, (1 - self.sigma_min) * values_of(noise) - values_of(x0))

    def loss(self, pred: Latents, x0: Latents, noise: Latents) -> torch.Tensor:
        """Mean squared error of the predicted velocity: over each sample's elements, then over
        the samples. Every sample weighs the same whatever its voxel count, so the mean of W
        ranks' losses (what DDP's gradient averaging optimises) is the loss of the global batch."""
        err = (values_of(pred).float() - values_of(self.target(x0, noise)).float()).pow(2)
        if not isinstance(x0, SparseTensor):
            return err.flatten(1).mean(1).mean()
        return per_sample_mean(err.flatten(1).mean(1), x0.batch_idx, x0.batch_size).mean()

    def predict_x0(self, x_t: Latents, v: Latents, t: torch.Tensor) -> Latents:
        """The data estimate implied by velocity ``v`` at x_t (for previews during sampling)."""
        tt = per_element(t, x_t)
        s = self.sigma_min
        # x_t = (1-t) x0 + σ_t ε and v = (1-s) ε - x0  =>  x0 = (1-s) x_t - σ_t v
        return with_values(x_t, (1 - s) * values_of(x_t) - self.sigma(tt) * values_of(v))


def sample_timesteps(
    n: int,
    kind: Literal["logit_normal", "uniform"] = "logit_normal",
    mean: float = 1.0,
    std: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Training times [n] in (0, 1): logit-normal (sigmoid of N(mean, std)) or uniform."""
    if kind == "logit_normal":
        return torch.sigmoid(mean + std * torch.randn(n, generator=generator, device=device))
    if kind == "uniform":
        return torch.rand(n, generator=generator, device=device)
    raise ValueError(f"timestep kind must be logit_normal or uniform, got {kind!r}")


def shift_timesteps(t: torch.Tensor, shift: float) -> torch.Tensor:
    """t' = s t / (1 + (s - 1) t): fixes 0 and 1, spends more of the schedule near the noise end
    for s > 1 (larger samples need it; SD3, TRELLIS' sampler use s = 3)."""
    if shift <= 0:
        raise ValueError(f"shift must be positive, got {shift}")
    return shift * t / (1 + (shift - 1) * t)


def drop_condition(cond: torch.Tensor, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Classifier-free guidance dropout: each sample's condition [B, ...] becomes zeros with
    probability ``p`` (TRELLIS' null condition is zeros_like, not a learned token)."""
    if not 0 <= p <= 1:
        raise ValueError(f"condition dropout must be in [0, 1], got {p}")
    keep = torch.rand(cond.shape[0], generator=generator, device=cond.device) >= p
    return cond * keep.reshape(-1, *([1] * (cond.ndim - 1))).to(cond.dtype)
