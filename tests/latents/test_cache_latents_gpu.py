"""cache_latents on CUDA writes what the CPU path writes (up to kernel rounding)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from earthcrafter.io.latents import read_latent_tile
from earthcrafter.latents.cache import cache_latents

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_cuda_cache_matches_cpu(tiles):
    cpu, cpu_stats, _, cpu_m = cache_latents(tiles["manifest"], {**tiles["cfg"], "out_dir": str(tiles["root"] / "cpu")})
    gpu, gpu_stats, _, gpu_m = cache_latents(tiles["manifest"], {**tiles["cfg"], "device": "cuda",
                                                                 "out_dir": str(tiles["root"] / "gpu")})  # fmt: skip
    assert gpu_m["encoded"] == len(gpu) == len(cpu)
    for a, b in zip(cpu.itertuples(), gpu.itertuples()):
        for kind in ("struct", "tex"):
            la, lb = read_latent_tile(getattr(a, f"{kind}_path")), read_latent_tile(getattr(b, f"{kind}_path"))
            np.testing.assert_array_equal(la.coords, lb.coords)
            np.testing.assert_allclose(lb.mean, la.mean, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(gpu_stats["tex"]["mean"], cpu_stats["tex"]["mean"], rtol=1e-3, atol=1e-4)
    assert abs(gpu_m["check_acc"] - cpu_m["check_acc"]) < 0.01
