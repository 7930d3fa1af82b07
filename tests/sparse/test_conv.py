"""Sparse convolutions vs dense F.conv3d, across backends, dtypes and devices."""

import io

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from sparse_testing import CUDA, DEVICES, RTOL, assert_close, random_sparse, read_dense

from earthcrafter.sparse import (
    SparseConv3d,
    SparseTensor,
    SubMConv3d,
    sparse_conv3d,
    subm_conv3d,
    use_backends,
)
from earthcrafter.sparse import conv as conv_module
from earthcrafter.sparse.kernel_map import subm_kernel_map

BACKENDS = ["torch", "spconv"]


def _dtype_for(backend: str, device: str) -> torch.dtype:
    # spconv's CUDA kernels have no float64
    return torch.float32 if (backend == "spconv" and device == "cuda") else torch.float64


def _subm_reference(x: SparseTensor, weight, bias, shape):
    """Dense conv of the densified grid, read at the active voxels (grads flow to feats)."""
    k = weight.shape[-1]
    return read_dense(F.conv3d(x.dense(shape), weight, bias, padding=k // 2), x.coords)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_subm_conv_matches_dense_forward_and_backward(backend, kernel_size, device):
    dtype = _dtype_for(backend, device)
    x = random_sparse(sizes=(40, 1, 0, 60), extent=7, channels=3, dtype=dtype, device=device, seed=kernel_size)
    x = x.replace(x.feats.clone().requires_grad_())
    g = torch.Generator().manual_seed(1)
    w = torch.randn(5, 3, *(kernel_size,) * 3, generator=g, dtype=torch.float64).to(device, dtype).requires_grad_()
    b = torch.randn(5, generator=g, dtype=torch.float64).to(device, dtype).requires_grad_()
    probe = torch.randn(len(x), 5, generator=g, dtype=torch.float64).to(device, dtype)

    out = subm_conv3d(x, w, b, backend=backend)
    grads = torch.autograd.grad((out * probe).sum(), (x.feats, w, b))
    ref = _subm_reference(x, w, b, (7, 7, 7))
    ref_grads = torch.autograd.grad((ref * probe).sum(), (x.feats, w, b))

    assert_close(out, ref, dtype)
    for got, want in zip(grads, ref_grads):
        assert_close(got, want, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kernel_size, stride", [(2, 2), (3, 2), (4, 4)])
def test_strided_conv_matches_dense(backend, kernel_size, stride, device):
    if backend == "spconv" and kernel_size != stride:
        pytest.skip("spconv path covers kernel == stride; other shapes fall back (tested below)")
    dtype = _dtype_for(backend, device)
    x = random_sparse(sizes=(50, 1, 30), extent=9, channels=3, dtype=dtype, device=device, seed=stride)
    x = x.replace(x.feats.clone().requires_grad_())
    g = torch.Generator().manual_seed(2)
    w = torch.randn(4, 3, *(kernel_size,) * 3, generator=g, dtype=torch.float64).to(device, dtype).requires_grad_()
    b = torch.randn(4, generator=g, dtype=torch.float64).to(device, dtype)

    y = sparse_conv3d(x, w, b, stride=stride, backend=backend)
    # output layout: unique(coords // stride) per sample, sorted by (batch, x, y, z)
    parents = torch.cat([x.coords[:, :1], x.coords[:, 1:] // stride], 1)
    assert torch.equal(y.coords.cpu(), torch.unique(parents.cpu(), dim=0))
    assert y.batch_size == x.batch_size and y.stride == stride
    probe = torch.randn(y.feats.shape, generator=g, dtype=torch.float64).to(device, dtype)
    grads = torch.autograd.grad((y.feats * probe).sum(), (x.feats, w))

    pad = kernel_size  # room for receptive fields that run past the last voxel
    dense = F.pad(x.dense((9, 9, 9)), (0, pad) * 3)
    ref = read_dense(F.conv3d(dense, w, b, stride=stride), y.coords)
    ref_grads = torch.autograd.grad((ref * probe).sum(), (x.feats, w))
    assert_close(y.feats, ref, dtype)
    for got, want in zip(grads, ref_grads):
        assert_close(got, want, dtype)


@pytest.mark.parametrize("dense_table", [0.0, 2.0], ids=["im2col", "per-offset"])
def test_torch_conv_paths_match_dense(dense_table, monkeypatch):
    """Both torch-backend strategies (im2col over the neighbour table, per-offset scatter)."""
    monkeypatch.setattr(conv_module, "_DENSE_TABLE", dense_table)
    x = random_sparse(sizes=(40, 1, 60), extent=6, channels=3, seed=14)
    feats = x.feats.clone().requires_grad_()
    x = x.replace(feats)
    w = torch.randn(4, 3, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    w2 = torch.randn(4, 3, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    y = sparse_conv3d(x, w2, backend="torch")
    outs = [subm_conv3d(x, w, backend="torch"), y.feats]
    refs = [_subm_reference(x, w, None, (6, 6, 6)), read_dense(F.conv3d(x.dense((6, 6, 6)), w2, stride=2), y.coords)]
    for out, ref, weight in zip(outs, refs, (w, w2)):
        got = torch.autograd.grad(out.square().sum(), (feats, weight))
        want = torch.autograd.grad(ref.square().sum(), (feats, weight))
        assert_close(out, ref, torch.float64)
        for a, b in zip(got, want):
            assert_close(a, b, torch.float64)


def test_spconv_strided_with_kernel_not_stride_falls_back_with_warning():
    x = random_sparse(sizes=(20, 5), extent=6, channels=2, dtype=torch.float32, seed=3)
    w = torch.randn(3, 2, 3, 3, 3)
    with pytest.warns(UserWarning, match="kernel 3 != stride 2"):
        y = sparse_conv3d(x, w, stride=2, backend="spconv")
    ref = sparse_conv3d(x, w, stride=2, backend="torch")
    assert torch.equal(y.feats, ref.feats)


def test_torch_backend_gradcheck_float64():
    x = random_sparse(sizes=(6, 1, 4), extent=3, channels=2, seed=4)
    feats = x.feats.clone().requires_grad_()
    w = torch.randn(2, 2, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    w2 = torch.randn(2, 2, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda f, w: subm_conv3d(x.replace(f), w, backend="torch"), (feats, w))
    assert torch.autograd.gradcheck(
        lambda f, w: sparse_conv3d(x.replace(f), w, stride=2, backend="torch").feats, (feats, w2)
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_large_coordinates(backend, device):
    """Voxels up to 1023 give the same result as the same pattern near the origin."""
    dtype = _dtype_for(backend, device)
    base = 1024 - 8
    far = random_sparse(sizes=(30, 20), extent=8, channels=3, dtype=dtype, device=device, seed=5, base=base)
    assert int(far.coords[:, 1:].max()) <= 1023 and int(far.coords[:, 1:].min()) >= base
    near = SparseTensor(far.feats, far.coords - torch.tensor([0, base, base, base], device=device, dtype=torch.int32))
    w = torch.randn(4, 3, 3, 3, 3, dtype=torch.float64).to(device, dtype)
    ref = _subm_reference(near, w, None, (8, 8, 8))
    assert_close(subm_conv3d(far, w, backend=backend), ref, dtype)
    w2 = torch.randn(4, 3, 2, 2, 2, dtype=torch.float64).to(device, dtype)
    y_far, y_near = sparse_conv3d(far, w2, backend=backend), sparse_conv3d(near, w2, backend=backend)
    shift = torch.tensor([0, base // 2, base // 2, base // 2], device=device, dtype=torch.int32)
    assert torch.equal(y_far.coords - shift, y_near.coords)
    assert_close(y_far.feats, y_near.feats, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("backend", BACKENDS)
def test_half_precision_close_to_float64(backend, dtype, device):
    x64 = random_sparse(sizes=(80, 40), extent=8, channels=16, seed=6)
    w64 = torch.randn(16, 16, 3, 3, 3, dtype=torch.float64) / 12
    ref = subm_conv3d(x64, w64, backend="torch")
    x = x64.to(device, dtype)
    out = subm_conv3d(x, w64.to(device, dtype), backend=backend)
    assert out.dtype == dtype
    assert_close(out.cpu(), ref, dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_backends_agree_fp32_forward_backward(device):
    x = random_sparse(sizes=(300, 7, 150), extent=12, channels=8, dtype=torch.float32, device=device, seed=7)
    conv = SubMConv3d(8, 8).to(device)
    results = {}
    for backend in BACKENDS:
        feats = x.feats.clone().requires_grad_()
        with use_backends(conv=backend):
            out = conv(x.replace(feats)).feats
        out.square().sum().backward()
        results[backend] = (out.detach(), feats.grad, conv.weight.grad.clone(), conv.bias.grad.clone())
        conv.zero_grad()
    for a, b in zip(results["torch"], results["spconv"]):
        assert_close(a, b, torch.float32, factor=5)


def test_spconv_cpu_is_correct_with_several_threads():
    """spconv 2.3's CPU scatter races when torch uses >1 thread; our wrapper must not."""
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for seed in range(16):
            x = random_sparse(sizes=(400, 300), extent=10, channels=8, dtype=torch.float32, seed=10 + seed)
            w = torch.randn(8, 8, 3, 3, 3)
            assert_close(subm_conv3d(x, w, backend="spconv"), subm_conv3d(x, w, backend="torch"), torch.float32, 5)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(saved)


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = SubMConv3d(3, 6)
        self.down = SparseConv3d(6, 8)
        self.b = SubMConv3d(8, 4, kernel_size=3)

    def forward(self, x):
        return self.b(self.down(self.a(x)))


@pytest.mark.parametrize("save_with, load_with", [("torch", "spconv"), ("spconv", "torch")])
def test_checkpoint_moves_between_backends(save_with, load_with):
    x = random_sparse(sizes=(60, 25), extent=8, channels=3, dtype=torch.float32, seed=8)
    torch.manual_seed(0)
    net = _Net()
    with use_backends(conv=save_with):
        before = net(x)
    buf = io.BytesIO()
    torch.save(net.state_dict(), buf)
    buf.seek(0)
    torch.manual_seed(1)
    fresh = _Net()
    fresh.load_state_dict(torch.load(buf))
    assert fresh.a.weight.shape == (6, 3, 3, 3, 3)  # nn.Conv3d layout on every backend
    with use_backends(conv=load_with):
        after = fresh(x)
    assert torch.equal(after.coords, before.coords)
    assert_close(after.feats, before.feats, torch.float32, factor=5)


def test_kernel_map_is_cached_and_shared_by_layers():
    x = random_sparse(sizes=(30, 30), extent=6, channels=4, dtype=torch.float32, seed=9)
    a, b = SubMConv3d(4, 4), SubMConv3d(4, 4)
    with use_backends(conv="torch"):
        h = a(x)
        kmap = x.cache[("subm", 3)]
        b(h)
    assert h.cache is x.cache and x.cache[("subm", 3)] is kmap
    assert subm_kernel_map(h, 3) is kmap


def test_kernel_map_pairs_are_unique_per_offset():
    """The CPU scatter relies on unique indices within each offset."""
    x = random_sparse(sizes=(200,), extent=7, channels=1, seed=11)
    for pair in subm_kernel_map(x, 3).pairs:
        if pair is not None:
            assert pair[0].unique().numel() == pair[0].numel() == pair[1].unique().numel()


def test_autocast_bf16_cpu():
    x = random_sparse(sizes=(60, 30), extent=7, channels=8, dtype=torch.float32, seed=12)
    conv = SubMConv3d(8, 8)
    ref = conv(x).feats
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(x).feats
    assert out.dtype == torch.bfloat16
    assert_close(out.float(), ref, torch.bfloat16)
    out.float().sum().backward()
    assert conv.weight.grad.dtype == torch.float32 and torch.isfinite(conv.weight.grad).all()


def test_empty_input_and_bad_kernel():
    x = SparseTensor(torch.zeros(0, 3), torch.zeros(0, 4, dtype=torch.int32), batch_size=2)
    assert SubMConv3d(3, 5)(x).feats.shape == (0, 5)
    assert SparseConv3d(3, 5)(x).feats.shape == (0, 5)
    with pytest.raises(ValueError, match="odd"):
        SubMConv3d(3, 5, kernel_size=2)


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs CUDA")
def test_spconv_cuda_implicit_gemm_matches_torch_backend_bf16():
    x = random_sparse(sizes=(3000, 1, 2000), extent=24, channels=32, dtype=torch.float32, device="cuda", seed=13)
    conv = SubMConv3d(32, 32).cuda()
    with use_backends(conv="torch"):
        ref = conv(x).feats
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = conv(x).feats  # auto picks spconv on CUDA
    assert out.dtype == torch.bfloat16
    rel = float((out.float() - ref).abs().max() / ref.abs().max())
    assert rel <= RTOL[torch.bfloat16], rel
