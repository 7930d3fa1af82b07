"""Euler sampling of a rectified flow from noise (t = 1) to data (t = 0), with classifier-free
guidance inside a time interval and a shifted schedule. The paper samples with 25 steps and CFG 3."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from tqdm.auto import tqdm

from earthcrafter.flow.matching import Latents, with_values, values_of, shift_timesteps

# velocity(x_t, t [B], condition) -> v, same type and shape as x_t
Velocity = Callable[[Latents, torch.Tensor, Any], Latents]


def timestep_schedule(steps: int, shift: float = 1.0) -> torch.Tensor:
    """[steps + 1] times from 1 down to 0, shifted (:func:`shift_timesteps`)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return shift_timesteps(torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64), shift)


def cfg_velocity(v_cond: Latents, v_uncond: Latents, strength: float) -> Latents:
    """(1 + w) v_c - w v_u: w = 0 is the conditional model alone."""
    return with_values(v_cond, (1 + strength) * values_of(v_cond) - strength * values_of(v_uncond))


@torch.no_grad()
def euler_sample(
    velocity: Velocity,
    noise: Latents,
    steps: int = 25,
    cond: Any = None,
    uncond: Any = None,
    cfg_strength: float = 0.0,
    cfg_interval: tuple[float, float] = (0.0, 1.0),
    shift: float = 1.0,
    progress: bool = False,
    trajectory: list | None = None,
) -> Latents:
    """Integrate dx/dt = v from x(1) = ``noise`` to t = 0 with ``steps`` Euler steps.

    Guidance applies at times inside ``cfg_interval`` when ``cfg_strength`` > 0 (then ``uncond``
    is evaluated too). ``trajectory``, when a list, receives x after every step.
    """
    lo, hi = cfg_interval
    if not 0 <= lo <= hi <= 1:
        raise ValueError(f"cfg_interval must satisfy 0 <= lo <= hi <= 1, got {cfg_interval}")
    batch = noise.batch_size if hasattr(noise, "batch_size") else values_of(noise).shape[0]
    ts = timestep_schedule(steps, shift).tolist()
    x = noise
    for t, t_next in tqdm(list(zip(ts[:-1], ts[1:])), desc="sample", disable=not progress, leave=False):
        tb = torch.full((batch,), t, device=values_of(x).device, dtype=values_of(x).dtype)
        v = velocity(x, tb, cond)
        if cfg_strength > 0 and lo <= t <= hi:
            v = cfg_velocity(v, velocity(x, tb, uncond), cfg_strength)
        x = with_values(x, values_of(x) - (t - t_next) * values_of(v))
        if trajectory is not None:
            trajectory.append(x)
    return x
