"""Flow matching: path identities, timestep laws, CFG algebra, Euler against the exact flow of a
Gaussian, sparse == dense, and a small model that learns a two-mode distribution."""

from __future__ import annotations

import math

import pytest
import torch

from earthcrafter.flow import (
    RectifiedFlow,
    cfg_velocity,
    drop_condition,
    euler_sample,
    sample_timesteps,
    shift_timesteps,
    timestep_schedule,
)
from earthcrafter.sparse import SparseTensor

FLOW = RectifiedFlow()


def test_path_endpoints_and_velocity_is_the_time_derivative():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 3, 5, generator=g, dtype=torch.float64), torch.randn(4, 3, 5, generator=g, dtype=torch.float64)
    zeros, ones = torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)
    torch.testing.assert_close(FLOW.interpolate(x0, eps, zeros), x0 + FLOW.sigma_min * eps)
    torch.testing.assert_close(FLOW.interpolate(x0, eps, ones), eps)
    t, h = torch.tensor([0.1, 0.4, 0.7, 0.95], dtype=torch.float64), 1e-6
    numeric = (FLOW.interpolate(x0, eps, t + h) - FLOW.interpolate(x0, eps, t - h)) / (2 * h)
    torch.testing.assert_close(numeric, FLOW.target(x0, eps), rtol=1e-7, atol=1e-8)
    # the exact velocity recovers x0 from any x_t
    torch.testing.assert_close(FLOW.predict_x0(FLOW.interpolate(x0, eps, t), FLOW.target(x0, eps), t), x0)
    assert FLOW.loss(FLOW.target(x0, eps), x0, eps) == 0


def test_timestep_laws():
    g = torch.Generator().manual_seed(1)
    t = sample_timesteps(200_000, generator=g)
    assert 0 < t.min() and t.max() < 1
    assert t.median().item() == pytest.approx(1 / (1 + math.exp(-1.0)), abs=0.005)  # sigmoid(mean)
    logit = torch.log(t / (1 - t))
    assert logit.std().item() == pytest.approx(1.0, abs=0.01)
    u = sample_timesteps(200_000, "uniform", generator=g)
    assert u.mean().item() == pytest.approx(0.5, abs=0.005)
    with pytest.raises(ValueError, match="logit_normal or uniform"):
        sample_timesteps(3, "cosine")

    s = torch.linspace(0, 1, 101, dtype=torch.float64)
    torch.testing.assert_close(shift_timesteps(s, 1.0), s)
    shifted = shift_timesteps(s, 3.0)
    assert shifted[0] == 0 and shifted[-1] == 1 and (shifted.diff() > 0).all() and (shifted[1:-1] > s[1:-1]).all()
    sched = timestep_schedule(25, shift=3.0)
    assert len(sched) == 26 and sched[0] == 1 and sched[-1] == 0 and (sched.diff() < 0).all()


def test_cfg_algebra_and_condition_dropout():
    vc, vu = torch.randn(3, 4), torch.randn(3, 4)
    torch.testing.assert_close(cfg_velocity(vc, vu, 0.0), vc)
    torch.testing.assert_close(cfg_velocity(vc, vc, 7.5), vc)
    torch.testing.assert_close(cfg_velocity(vc, vu, 3.0), vc + 3.0 * (vc - vu))
    cond = torch.ones(10_000, 2, 3)
    dropped = drop_condition(cond, 0.1, torch.Generator().manual_seed(0))
    per_sample = dropped.flatten(1)
    assert set(per_sample.sum(1).tolist()) <= {0.0, 6.0}, "a sample's condition is kept or zeroed whole"
    assert (per_sample.sum(1) == 0).float().mean().item() == pytest.approx(0.1, abs=0.01)


def _gaussian_velocity(mu: torch.Tensor, s: torch.Tensor, sigma_min: float):
    """The exact marginal velocity E[v | x_t = x] of the path when x0 ~ N(mu, s²) per dimension."""

    def velocity(x, t, cond):
        tt = t.reshape(-1, *([1] * (x.ndim - 1)))
        a, b = 1 - tt, sigma_min + (1 - sigma_min) * tt
        gain = ((1 - sigma_min) * b - a * s**2) / (a**2 * s**2 + b**2)
        return -mu + gain * (x - a * mu)

    return velocity


def test_euler_follows_the_exact_flow_of_a_gaussian():
    """For Gaussian data the flow ODE maps noise ε to mu + s·ε (a linear map); Euler converges to
    it at first order, and the samples carry the data's mean and spread."""
    mu, s = torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64), torch.tensor([0.5, 1.5, 0.1], dtype=torch.float64)
    velocity = _gaussian_velocity(mu, s, FLOW.sigma_min)
    eps = torch.randn(4000, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    exact = mu + s * eps
    errors = {}
    for steps in (25, 50, 800):
        errors[steps] = (euler_sample(velocity, eps, steps=steps) - exact).abs().max().item()
    assert errors[25] / errors[50] == pytest.approx(2.0, rel=0.1), "first-order convergence"
    assert errors[50] / errors[800] == pytest.approx(16.0, rel=0.1)
    assert errors[800] < 0.012  # at |ε| up to ~3.7 and s up to 1.5
    out = euler_sample(velocity, eps, steps=800)
    torch.testing.assert_close(out.mean(0), mu, atol=0.06, rtol=0)
    torch.testing.assert_close(out.std(0), s, atol=0.06, rtol=0.05)
    trajectory = []
    euler_sample(velocity, eps, steps=5, trajectory=trajectory, shift=3.0)
    assert len(trajectory) == 5


def test_sparse_batches_match_their_dense_values():
    g = torch.Generator().manual_seed(3)
    coords = [torch.randint(0, 8, (n, 3), generator=g).unique(dim=0) for n in (30, 12)]
    x0 = SparseTensor.from_list([torch.randn(len(c), 4, generator=g) for c in coords], coords)
    eps = x0.replace(torch.randn(x0.feats.shape, generator=g))
    t = torch.tensor([0.2, 0.9])
    row_t = t[x0.batch_idx]
    dense_xt = torch.stack([FLOW.interpolate(x0.feats[i : i + 1], eps.feats[i : i + 1], row_t[i : i + 1])[0]
                            for i in range(len(x0))])  # fmt: skip
    torch.testing.assert_close(FLOW.interpolate(x0, eps, t).feats, dense_xt)

    def velocity(x, tb, cond):  # a per-sample, time-dependent field: tests the broadcast per voxel
        return x.replace(x.feats * x.broadcast(tb)[:, None] + 1.0)

    out = euler_sample(velocity, eps, steps=4)
    ref = eps.feats.clone()
    ts = timestep_schedule(4).tolist()
    for a, b in zip(ts[:-1], ts[1:]):
        ref = ref - (a - b) * (ref * a + 1.0)
    torch.testing.assert_close(out.feats, ref)
    assert isinstance(out, SparseTensor) and torch.equal(out.coords, eps.coords)


@pytest.mark.timeout(120)
def test_a_small_model_learns_two_modes_with_guidance():
    """An MLP trained with this objective (logit-normal times, 10 % condition dropout) samples a
    two-mode mixture in the right proportions, and CFG on the mode label moves every sample to
    the requested mode."""
    torch.manual_seed(0)
    centres = torch.tensor([[-2.0, 0.0], [2.0, 1.0]])
    net = torch.nn.Sequential(torch.nn.Linear(2 + 1 + 2, 128), torch.nn.SiLU(), torch.nn.Linear(128, 128),
                              torch.nn.SiLU(), torch.nn.Linear(128, 2))  # fmt: skip

    def velocity(x, t, cond):
        return net(torch.cat([x, t[:, None], cond], 1))

    opt = torch.optim.Adam(net.parameters(), 3e-3)
    for _ in range(1500):
        label = torch.randint(0, 2, (256,))
        x0 = centres[label] + 0.2 * torch.randn(256, 2)
        cond = drop_condition(torch.nn.functional.one_hot(label, 2).float(), 0.1)
        eps, t = torch.randn_like(x0), sample_timesteps(256)
        loss = FLOW.loss(velocity(FLOW.interpolate(x0, eps, t), t, cond), x0, eps)
        opt.zero_grad()
        loss.backward()
        opt.step()

    eps = torch.randn(2000, 2)
    free = euler_sample(velocity, eps, steps=25, cond=torch.zeros(2000, 2))
    right = (free[:, 0] > 0).float().mean().item()
    assert right == pytest.approx(0.5, abs=0.06)
    for mode in (0, 1):
        near = free[(free[:, 0] > 0) == bool(mode)]
        torch.testing.assert_close(near.mean(0), centres[mode], atol=0.25, rtol=0)
    want = torch.nn.functional.one_hot(torch.ones(2000, dtype=torch.long), 2).float()
    guided = euler_sample(velocity, eps, steps=25, cond=want, uncond=torch.zeros(2000, 2), cfg_strength=3.0)
    assert (guided[:, 0] > 0).float().mean().item() > 0.97


def _correlated_gaussian_velocity(Sigma: torch.Tensor, s: float):
    """The exact velocity of the flow of N(0, Sigma) data, on values [2, N] (row = coordinate)."""

    def velocity(x, t, cond):
        tt = float(t[0])
        sigma_t = s + (1 - s) * tt
        d = torch.linalg.solve((1 - tt) ** 2 * Sigma + sigma_t**2 * torch.eye(2, dtype=Sigma.dtype), x)
        return (1 - s) * sigma_t * d - (1 - tt) * Sigma @ d  # (1 - s) E[ε | x_t] - E[x_0 | x_t]

    return velocity


def test_outpainting_pins_known_rows_and_resampling_reaches_the_exact_conditional():
    """x = (a, b) ~ N(0, [[1, .9], [.9, 1]]) with a known = 1.5: b | a is N(1.35, 0.436²). Known rows
    end at their value; replacement alone under-conditions b (an ODE commits before a is
    informative); RePaint resampling moves b's mean and spread to the exact conditional."""
    rho, a = 0.9, 1.5
    velocity = _correlated_gaussian_velocity(torch.tensor([[1, rho], [rho, 1]], dtype=torch.float64), FLOW.sigma_min)
    eps = torch.randn(2, 20000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x0 = torch.zeros_like(eps)
    x0[0] = a
    known = (torch.tensor([True, False]), x0)
    means, stds = {}, {}
    for r in (0, 3, 9):
        out = euler_sample(velocity, eps, steps=25, known=known, resample=r, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(out[0], x0[0], atol=1e-4, rtol=0)  # a + σ_min ε
        means[r], stds[r] = out[1].mean().item(), out[1].std().item()
    exact_mean, exact_std = rho * a, (1 - rho**2) ** 0.5
    assert means[0] < 0.6 * exact_mean, means
    assert means[0] < means[3] < means[9] and abs(means[9] - exact_mean) < 0.1, means
    assert abs(stds[9] - exact_std) < 0.05 and stds[0] > exact_std + 0.15, stds
    # without pinned rows, the free row is the unconditional flow (b ~ N(0, 1))
    free = euler_sample(velocity, eps, steps=25, known=(torch.tensor([False, False]), x0))
    torch.testing.assert_close(free, euler_sample(velocity, eps, steps=25))
    with pytest.raises(ValueError, match="resample needs known"):
        euler_sample(velocity, eps, steps=2, resample=1)
    with pytest.raises(ValueError, match="known mask"):
        euler_sample(velocity, eps, steps=2, known=(torch.tensor([1, 0]), x0))
