"""Helpers for the earthcrafter.sparse tests: random sparse batches, tolerances, devices."""

from __future__ import annotations

import pytest
import torch

from earthcrafter.sparse import SparseTensor

CUDA = torch.cuda.is_available()
gpu = [pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason="needs CUDA")]

# CPU always; the same tests run on CUDA with `pytest -m gpu`.
DEVICES = ["cpu", pytest.param("cuda", marks=gpu)]

# Max error relative to the reference's magnitude, per dtype.
RTOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 1e-2, torch.bfloat16: 4e-2}


def rel_err(a: torch.Tensor, ref: torch.Tensor) -> float:
    a, ref = a.detach().double(), ref.detach().double()
    return float((a - ref).abs().max() / ref.abs().max().clamp(min=1e-12)) if ref.numel() else 0.0


def assert_close(a: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype, factor: float = 1.0) -> None:
    assert a.shape == ref.shape, (a.shape, ref.shape)
    err = rel_err(a, ref)
    assert err <= RTOL[dtype] * factor, f"relative error {err:.3g} > {RTOL[dtype] * factor:.3g} ({dtype})"


def random_coords(sizes, extent: int, generator: torch.Generator, base: int = 0) -> list[torch.Tensor]:
    """Per sample, ``n`` distinct voxels in [base, base + extent)³ (unsorted), int32 [n, 3]."""
    out = []
    for n in sizes:
        flat = torch.randperm(extent**3, generator=generator)[:n]
        xyz = torch.stack([flat // extent**2, (flat // extent) % extent, flat % extent], dim=1)
        out.append((xyz + base).int())
    return out


def random_sparse(
    sizes=(40, 1, 25, 60),
    extent: int = 8,
    channels: int = 4,
    dtype=torch.float64,
    device="cpu",
    seed: int = 0,
    base: int = 0,
) -> SparseTensor:
    """A batch with samples of the given sizes (0 = empty sample, 1 = single voxel)."""
    g = torch.Generator().manual_seed(seed)
    coords = random_coords(sizes, extent, g, base)
    feats = [torch.randn(len(c), channels, generator=g, dtype=torch.float64).to(dtype) for c in coords]
    return SparseTensor.from_list(feats, coords).to(device)


def read_dense(dense: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Rows of a dense [B, C, X, Y, Z] grid at coords [N, 4] -> [N, C]."""
    c = coords.long()
    return dense[c[:, 0], :, c[:, 1], c[:, 2], c[:, 3]]
