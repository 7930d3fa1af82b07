"""Full, windowed and cross attention: every backend vs dense masked attention."""

import math

import pytest
import torch
from sparse_testing import CUDA, DEVICES, assert_close, random_sparse

from earthcrafter.sparse import (
    cross_attention,
    full_attention,
    use_backends,
    window_partition,
    windowed_attention,
)

CPU_BACKENDS = ["reference", "sdpa_padded"]


def dense_masked_attention(q, k, v, allowed):
    """softmax(q·kᵀ/√D + mask)·v with an explicit [Nq, Nk] mask; rows without keys -> 0."""
    s = torch.einsum("nhd,mhd->hnm", q.double(), k.double()) / math.sqrt(q.shape[-1])
    s = s.masked_fill(~allowed[None], float("-inf"))
    p = torch.softmax(s, dim=-1).nan_to_num(0.0)
    return torch.einsum("hnm,mhd->nhd", p, v.double())


def qkv(n, heads=3, dim=8, dtype=torch.float64, device="cpu", seed=0, nk=None):
    g = torch.Generator().manual_seed(seed)
    shapes = [(n, heads, dim), (nk or n, heads, dim), (nk or n, heads, dim)]
    return [torch.randn(s, generator=g, dtype=torch.float64).to(device, dtype) for s in shapes]


def same_window(coords, window, shift):
    cell = torch.div(coords[:, 1:].long() + shift, window, rounding_mode="floor")
    same_b = coords[:, None, 0] == coords[None, :, 0]
    return same_b & (cell[:, None] == cell[None]).all(-1)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_full_attention_matches_dense(backend, device):
    x = random_sparse(sizes=(50, 1, 0, 120, 7), extent=8, channels=1, device=device, seed=1)
    q, k, v = qkv(len(x), device=device, seed=1)
    batch = x.coords[:, 0]
    out = full_attention(q, k, v, batch, backend=backend)
    ref = dense_masked_attention(q, k, v, batch[:, None] == batch[None])
    assert_close(out, ref, torch.float64)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("shift", [0, 2])
def test_windowed_attention_matches_masked_dense(backend, shift, device):
    # large coords, ragged samples, singleton windows (sparse sample), a single-voxel sample
    x = random_sparse(sizes=(150, 1, 0, 12, 200), extent=12, channels=1, device=device, seed=2, base=1024 - 12)
    q, k, v = qkv(len(x), device=device, seed=2)
    out = windowed_attention(q, k, v, x.coords, window=4, shift=shift, backend=backend)
    ref = dense_masked_attention(q, k, v, same_window(x.coords, 4, shift))
    assert_close(out, ref, torch.float64)
    part = window_partition(x.coords, 4, shift)
    assert int(part.segments.lengths.min()) >= 1 and part.segments.total == len(x)
    assert (part.segments.lengths == 1).any(), "the test data should contain singleton windows"


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_windowed_attention_is_row_permutation_equivariant(backend):
    x = random_sparse(sizes=(90, 60), extent=10, channels=1, seed=3)
    q, k, v = qkv(len(x), seed=3)
    out = windowed_attention(q, k, v, x.coords, window=4, shift=2, backend=backend)
    # permute rows inside each sample (samples must stay contiguous)
    perm = torch.cat([torch.randperm(90), 90 + torch.randperm(60)])
    out_p = windowed_attention(q[perm], k[perm], v[perm], x.coords[perm], window=4, shift=2, backend=backend)
    assert_close(out_p, out[perm], torch.float64)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_cross_attention_matches_dense_including_empty_context(backend, device):
    x = random_sparse(sizes=(30, 4, 0, 25), extent=6, channels=1, device=device, seed=4)
    ctx_sizes = [5, 0, 3, 9]  # sample 1 has queries but no context -> zeros
    kv_batch = torch.cat([torch.full((n,), b) for b, n in enumerate(ctx_sizes)]).to(device)
    q, k, v = qkv(len(x), device=device, seed=4, nk=len(kv_batch))
    qb = x.coords[:, 0]
    out = cross_attention(q, qb, k, v, kv_batch, batch_size=4, backend=backend)
    ref = dense_masked_attention(q, k, v, qb[:, None] == kv_batch[None])
    assert_close(out, ref, torch.float64)
    assert bool((out[qb == 1] == 0).all())


def test_sdpa_padded_chunking_does_not_change_results(monkeypatch):
    """A tiny score budget puts every group in its own chunk; results must not change."""
    x = random_sparse(sizes=(300, 2, 90), extent=10, channels=1, seed=5)
    q, k, v = qkv(len(x), seed=5)
    batch = x.coords[:, 0]
    big = full_attention(q, k, v, batch, backend="sdpa_padded")
    monkeypatch.setenv("EARTHCRAFTER_SDPA_CHUNK_ELEMENTS", "4000")
    small = full_attention(q, k, v, batch, backend="sdpa_padded")
    win_small = windowed_attention(q, k, v, x.coords, 4, 2, backend="sdpa_padded")
    monkeypatch.delenv("EARTHCRAFTER_SDPA_CHUNK_ELEMENTS")
    assert_close(small, big, torch.float64)
    assert_close(win_small, windowed_attention(q, k, v, x.coords, 4, 2, backend="reference"), torch.float64)


def test_reference_gradcheck_float64():
    x = random_sparse(sizes=(5, 1, 4), extent=3, channels=1, seed=6)
    q, k, v = (t.requires_grad_() for t in qkv(len(x), heads=2, dim=3, seed=6))
    fn = lambda q, k, v: windowed_attention(q, k, v, x.coords, 2, 1, backend="reference")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (q, k, v))


@pytest.mark.parametrize("mode", ["full", "window", "cross"])
def test_sdpa_padded_gradients_match_reference(mode):
    x = random_sparse(sizes=(60, 1, 45), extent=7, channels=1, seed=7)
    q, k, v = qkv(len(x), seed=7)
    kv_batch = torch.tensor([0] * 4 + [1] * 2 + [2] * 6)
    if mode == "cross":
        k, v = k[:12], v[:12]
    grads = {}
    for backend in CPU_BACKENDS:
        leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        if mode == "full":
            out = full_attention(*leaves, x.coords[:, 0], backend=backend)
        elif mode == "window":
            out = windowed_attention(*leaves, x.coords, 3, 1, backend=backend)
        else:
            out = cross_attention(leaves[0], x.coords[:, 0], leaves[1], leaves[2], kv_batch, backend=backend)
        grads[backend] = torch.autograd.grad(out.square().sum(), leaves)
    for a, b in zip(grads["sdpa_padded"], grads["reference"]):
        assert_close(a, b, torch.float64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_sdpa_padded_low_precision_close_to_float64(dtype):
    x = random_sparse(sizes=(200, 3, 150), extent=10, channels=1, seed=8)
    q, k, v = qkv(len(x), heads=4, dim=16, seed=8)
    ref = windowed_attention(q, k, v, x.coords, 4, 0, backend="reference")
    out = windowed_attention(q.to(dtype), k.to(dtype), v.to(dtype), x.coords, 4, 0, backend="sdpa_padded")
    assert out.dtype == dtype
    assert_close(out, ref, dtype, factor=2)


def test_auto_backend_on_cpu_is_sdpa_padded_and_matches():
    x = random_sparse(sizes=(40, 30), extent=6, channels=1, seed=9)
    q, k, v = qkv(len(x), seed=9)
    with use_backends(attn="auto"):
        out = full_attention(q, k, v, x.coords[:, 0])
    assert_close(out, full_attention(q, k, v, x.coords[:, 0], backend="reference"), torch.float64)


def test_unsorted_batch_is_rejected():
    q, k, v = qkv(4)
    with pytest.raises(ValueError, match="sorted"):
        full_attention(q, k, v, torch.tensor([0, 1, 0, 1]))


# --------------------------------------------------------------------------- GPU
GPU_BACKENDS = ["flash_attn", "torch_varlen", "sdpa_padded"]


def _gpu_backend_or_skip(name):
    from earthcrafter.sparse import backends

    if name == "flash_attn" and backends.flash_attn_module() is None:
        pytest.skip("flash_attn not installed")
    if name == "torch_varlen" and backends.torch_varlen_fn() is None:
        pytest.skip("torch has no varlen_attn")


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
@pytest.mark.parametrize("backend", GPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gpu_backends_match_reference_forward_backward(backend, dtype):
    _gpu_backend_or_skip(backend)
    x = random_sparse(sizes=(3000, 1, 40, 2500), extent=40, channels=1, device="cuda", seed=10)
    q, k, v = qkv(len(x), heads=4, dim=64, device="cuda", seed=10)
    kv_batch = torch.repeat_interleave(torch.arange(4, device="cuda"), torch.tensor([7, 3, 1, 20], device="cuda"))
    cases = {
        "window": lambda b, q, k, v: windowed_attention(q, k, v, x.coords, 8, 4, backend=b),
        "full": lambda b, q, k, v: full_attention(q, k, v, x.coords[:, 0], backend=b),
        "cross": lambda b, q, k, v: cross_attention(q, x.coords[:, 0], k[:31], v[:31], kv_batch, backend=b),
    }
    for name, fn in cases.items():
        ref_leaves = [t.clone().requires_grad_() for t in (q, k, v)]
        ref = fn("reference", *ref_leaves)
        ref_grads = torch.autograd.grad(ref.sum(), ref_leaves)
        leaves = [t.to(dtype).requires_grad_() for t in (q, k, v)]
        out = fn(backend, *leaves)
        grads = torch.autograd.grad(out.float().sum(), leaves)
        assert out.dtype == dtype, name
        assert_close(out, ref, dtype, factor=2)
        for a, b in zip(grads, ref_grads):
            assert_close(a, b, dtype, factor=4)
