"""Sparse 3-D convolutions: submanifold (stride 1) and strided (downsampling).

Weights always use the ``torch.nn.Conv3d`` layout ``[out, in, k, k, k]`` and its
cross-correlation convention: ``weight[:, :, i, j, l]`` multiplies the input voxel at
offset ``(i - k//2, j - k//2, l - k//2)`` from the output voxel (submanifold), or at
``stride * p + (i, j, l)`` for output voxel p (strided). Checkpoints therefore move
freely between backends:

- ``torch``: pure torch over a cached kernel map, any device and dtype: one im2col
  gather + GEMM when the neighbour table is dense enough, else gather - GEMM - scatter
  per kernel offset.
- ``spconv``: spconv's Native algorithm on CPU, implicit GEMM on CUDA. The weight is
  permuted to spconv's KRSC layout ``[out, k, k, k, in]`` at call time; layout and
  offset convention were checked against ``F.conv3d`` (see tests/sparse/test_conv.py).
  spconv has no bfloat16: bf16 inputs run in fp32 on this backend. On CPU, spconv 2.3
  needs two workarounds (single-threaded kernels, torch backward); see below.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn as nn
from torch.autograd.function import once_differentiable

from . import backends
from . import keys as K
from .kernel_map import KernelMap, strided_map, subm_kernel_map
from .tensor import SparseTensor


# ------------------------------------------------------------------ torch backend
def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in backends.HALF_DTYPES else dtype


def _scatter_add_unique(out: torch.Tensor, index: torch.Tensor, src: torch.Tensor) -> None:
    """out[index] += src for *unique* indices. On CPU, select + copy is several times
    faster than ``index_add_``; on CUDA ``index_add_`` is the fast path."""
    src = src.to(out.dtype)
    if out.is_cuda:
        out.index_add_(0, index, src)
    else:
        out.index_copy_(0, index, out.index_select(0, index) + src)


def _pairs_forward(src: torch.Tensor, weight: torch.Tensor, pairs: list, num_out: int) -> torch.Tensor:
    """out[o] = Σ_k src[i] @ weight[k] over the pairs (i, o) of offset k (one GEMM per offset)."""
    out = src.new_zeros(num_out, weight.shape[2], dtype=_acc_dtype(src.dtype))
    for k, pair in enumerate(pairs):
        if pair is None:
            out += src @ weight[k]
        elif pair[0].numel():
            _scatter_add_unique(out, pair[1], src.index_select(0, pair[0]) @ weight[k])
    return out.to(src.dtype)


def _chunk_rows(src: torch.Tensor, volume: int) -> int:
    # rows per im2col chunk: ~16M gathered elements on CPU, ~64M on CUDA
    budget = 2**26 if src.is_cuda else 2**24
    return max(1, budget // (volume * src.shape[1]))


def _table_forward(src: torch.Tensor, weight: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """out[r] = Σ_k src[table[r, k]] @ weight[k]: gather [rows, K·C_in] (im2col), one GEMM.
    No scatter at all; pays for absent neighbours, so used when the table is dense."""
    vol, c_in, c_out = weight.shape
    ext = torch.cat([src, src.new_zeros(1, c_in)])  # row len(src) = absent neighbour
    w = weight.reshape(vol * c_in, c_out)
    out = src.new_empty(table.shape[0], c_out)
    step = _chunk_rows(src, vol)
    for r in range(0, table.shape[0], step):
        cols = ext.index_select(0, table[r : r + step].reshape(-1)).view(-1, vol * c_in)
        torch.mm(cols, w, out=out[r : r + step])
    return out


def _table_weight_grad(src: torch.Tensor, grad_out: torch.Tensor, table: torch.Tensor, vol: int) -> torch.Tensor:
    """Σ_r im2col(src)[r]ᵀ ⊗ grad_out[r] -> [K, C_in, C_out]."""
    c_in = src.shape[1]
    ext = torch.cat([src, src.new_zeros(1, c_in)])
    acc = torch.zeros(vol * c_in, grad_out.shape[1], dtype=_acc_dtype(src.dtype), device=src.device)
    step = _chunk_rows(src, vol)
    for r in range(0, table.shape[0], step):
        cols = ext.index_select(0, table[r : r + step].reshape(-1)).view(-1, vol * c_in)
        acc += (cols.T @ grad_out[r : r + step]).to(acc.dtype)
    return acc.view(vol, c_in, -1)


# im2col gathers K rows per output; the per-offset path gathers only the real pairs but
# pays a scatter per offset. Above this fill ratio im2col wins (1.7-3.4x faster fwd+bwd
# on CPU surfaces with 48 % fill, docs/bench_sparse.md); strided-conv input tables are 1/8 full.
_DENSE_TABLE = 0.25


def gather_scatter_forward(feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
    """out[o] = Σ_k feats[i] @ weight[k] over the pairs (i, o) of offset k; weight [K, in, out].
    Within one offset the in and out indices are unique (one neighbour per offset)."""
    if kmap.num_pairs >= _DENSE_TABLE * kmap.volume * kmap.num_out:
        return _table_forward(feats, weight, kmap.table(True, feats.device))
    return _pairs_forward(feats, weight, kmap.pairs, kmap.num_out)


def gather_scatter_backward(
    feats: torch.Tensor,
    weight: torch.Tensor,
    grad_out: torch.Tensor,
    kmap: KernelMap,
    need_feats: bool,
    need_weight: bool,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Gradients of :func:`gather_scatter_forward` w.r.t. feats and weight.

    The input gradient is the same conv run backwards: pairs swapped, weights transposed."""
    grad_out = grad_out.contiguous()
    grad_feats = grad_weight = None
    vol = kmap.volume
    if need_feats:
        w_t = weight.transpose(1, 2)
        if kmap.num_pairs >= _DENSE_TABLE * vol * kmap.num_in:
            grad_feats = _table_forward(grad_out, w_t.contiguous(), kmap.table(False, feats.device))
        else:
            swapped = [None if p is None else (p[1], p[0]) for p in kmap.pairs]
            grad_feats = _pairs_forward(grad_out, w_t, swapped, kmap.num_in)
        grad_feats = grad_feats.to(feats.dtype)
    if need_weight:
        if kmap.num_pairs >= _DENSE_TABLE * vol * kmap.num_out:
            grad_weight = _table_weight_grad(feats, grad_out, kmap.table(True, feats.device), vol).to(weight.dtype)
        else:
            grad_weight = torch.zeros_like(weight)
            for k, pair in enumerate(kmap.pairs):
                if pair is None:
                    grad_weight[k] = feats.T @ grad_out
                elif pair[0].numel():
                    grad_weight[k] = feats.index_select(0, pair[0]).T @ grad_out.index_select(0, pair[1])
    return grad_feats, grad_weight


class _GatherScatterConv(torch.autograd.Function):
    """Autograd wrapper of the gather-GEMM-scatter conv.

    Nothing per-offset is kept for backward (only feats and W), so memory stays at
    O(N·C) instead of O(k³·N·C).
    """

    @staticmethod
    def forward(ctx, feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
        ctx.save_for_backward(feats, weight)
        ctx.kmap = kmap
        return gather_scatter_forward(feats, weight, kmap)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        feats, weight = ctx.saved_tensors
        gf, gw = gather_scatter_backward(
            feats, weight, grad_out, ctx.kmap, ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        )
        return gf, gw, None


def _flat_weight(weight: torch.Tensor) -> torch.Tensor:
    """[out, in, k, k, k] -> [k³, in, out] in kernel-offset order."""
    out_c, in_c = weight.shape[:2]
    return weight.permute(2, 3, 4, 1, 0).reshape(-1, in_c, out_c)


def _torch_conv(feats: torch.Tensor, weight: torch.Tensor, kmap: KernelMap) -> torch.Tensor:
    return _GatherScatterConv.apply(feats, _flat_weight(weight), kmap)


# ----------------------------------------------------------------- spconv backend
def _krsc(weight: torch.Tensor) -> torch.Tensor:
    """Our [out, in, k, k, k] -> spconv's KRSC [out, k, k, k, in]."""
    return weight.permute(0, 2, 3, 4, 1).contiguous()


@contextlib.contextmanager
def _single_thread():
    """Run spconv's CPU kernels on one thread.

    spconv 2.3's ``scatter_add_cpu`` keeps its row pointers in variables shared by all
    OpenMP threads, so parallel runs add rows into the wrong outputs (seen with spconv
    2.3.8 + torch 2.13: 40-80 % of random convs wrong with 2 threads). Its parallel region
    only opens when ``omp_get_max_threads() > 1``, which torch's thread setting controls
    here; tests/sparse/test_conv.py checks the result with several threads."""
    n = torch.get_num_threads()
    if n > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if n > 1:
            torch.set_num_threads(n)


def _spatial_shape(x: SparseTensor, stride: int) -> list[int]:
    def build():
        top = (x.coords[:, 1:].amax(0) + 1).tolist() if len(x) else [1, 1, 1]
        return [int(math.ceil(t / stride) * stride) for t in top]

    return x.cached(("spconv_shape", stride), build)


def _spconv_native_pairs(x: SparseTensor, kernel_size: int, stride: int, subm: bool):
    sp_ops = backends._import("spconv.pytorch.ops")
    from spconv.core import ConvAlgo

    def build():
        pad = kernel_size // 2 if subm else 0
        k3, s3, p3 = [kernel_size] * 3, [stride] * 3, [pad] * 3
        # spconv reads index tensors as row-major whatever their strides: always contiguous
        with _single_thread():
            out_ids, pairs, pair_num = sp_ops.get_indice_pairs(
                x.coords.contiguous(), x.batch_size, _spatial_shape(x, stride), ConvAlgo.Native,
                k3, s3, p3, [1, 1, 1], [0, 0, 0], subm, False,
            )
        kmap = _spconv_kernel_map(pairs, pair_num, len(x), out_ids.shape[0], subm)
        return out_ids, pairs, pair_num, kmap

    return x.cached(("spconv_native", subm, kernel_size, stride), build)


def _spconv_kernel_map(pairs: torch.Tensor, pair_num: torch.Tensor, num_in: int, num_out: int, subm: bool) -> KernelMap:
    """spconv Native pairs [2, K, n] (row 0 input, row 1 output) -> our KernelMap.
    For submanifold kernels spconv stores counts for the first half only; offset K-1-k
    has offset k's count, and the centre is the identity."""
    counts = pair_num.tolist()
    vol = len(counts)
    out = []
    for k in range(vol):
        if subm and k == vol // 2:
            out.append(None)
            continue
        n = counts[vol - 1 - k] if subm and k > vol // 2 else counts[k]
        out.append((pairs[0, k, :n].long(), pairs[1, k, :n].long()))
    return KernelMap(out, num_in, num_out)


class _SpconvNative(torch.autograd.Function):
    """spconv Native conv (forward single-threaded, see :func:`_single_thread`).

    The backward runs the torch gather-scatter on spconv's own pairs: spconv 2.3's CPU
    backward queries the CUDA stream and fails on CPU-only torch builds.
    """

    @staticmethod
    def forward(ctx, feats, weight_krsc, pairs, pair_num, kmap: KernelMap, subm: bool):
        sp_ops = backends._import("spconv.pytorch.ops")
        feats = feats.contiguous()
        ctx.save_for_backward(feats, weight_krsc)
        ctx.kmap = kmap
        with _single_thread():
            return sp_ops.indice_conv(feats, weight_krsc, pairs, pair_num, kmap.num_out, False, subm)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        feats, w = ctx.saved_tensors
        flat = w.permute(1, 2, 3, 4, 0).reshape(-1, w.shape[4], w.shape[0])  # [K, in, out]
        gf, gw = gather_scatter_backward(
            feats, flat, grad_out, ctx.kmap, ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        )
        if gw is not None:
            k = w.shape[1]
            gw = gw.reshape(k, k, k, w.shape[4], w.shape[0]).permute(4, 0, 1, 2, 3).contiguous()
        return gf, gw, None, None, None, None


def _spconv_igemm_pairs(x: SparseTensor, kernel_size: int, stride: int, subm: bool):
    sp_ops = backends._import("spconv.pytorch.ops")
    from spconv.core import ConvAlgo
    from spconv.pytorch.core import ThrustSortAllocator
    from spconv.tools import CUDAKernelTimer

    def build():
        pad = kernel_size // 2 if subm else 0
        return sp_ops.get_indice_pairs_implicit_gemm(
            x.coords.contiguous(), x.batch_size, _spatial_shape(x, stride), ConvAlgo.MaskImplicitGemm,
            ksize=[kernel_size] * 3, stride=[stride] * 3, padding=[pad] * 3, dilation=[1, 1, 1],
            out_padding=[0, 0, 0], subm=subm, transpose=False, is_train=True,
            alloc=ThrustSortAllocator(x.device), timer=CUDAKernelTimer(False),
        )

    return x.cached(("spconv_igemm", subm, kernel_size, stride), build)


def _spconv_conv(
    x: SparseTensor, feats: torch.Tensor, weight: torch.Tensor, kernel_size: int, stride: int, subm: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run spconv; returns (out feats [M, out], spconv's out coords [M, 4] int32)."""
    w = _krsc(weight)
    if feats.is_cuda:
        fsp = backends._import("spconv.pytorch.functional")
        res = _spconv_igemm_pairs(x, kernel_size, stride, subm)
        out_ids, pair_fwd, pair_bwd, pm_fwd, pm_bwd, ma_fwd, ma_bwd, masks = (res[0], *res[2:9])
        out = fsp.implicit_gemm(
            feats.contiguous(), w, pair_fwd, pair_bwd, pm_fwd, pm_bwd, ma_fwd, ma_bwd,
            out_ids.shape[0], masks, True, subm,
        )
        return out, out_ids
    out_ids, pairs, pair_num, kmap = _spconv_native_pairs(x, kernel_size, stride, subm)
    return _SpconvNative.apply(feats, w, pairs, pair_num, kmap, subm), out_ids


# ------------------------------------------------------------------- functional
def _compute_dtype(feats: torch.Tensor) -> torch.dtype:
    dev = feats.device.type
    if torch.is_autocast_enabled(dev) and feats.dtype.is_floating_point:
        return torch.get_autocast_dtype(dev)
    return feats.dtype


def _spconv_dtype(dtype: torch.dtype) -> torch.dtype:
    # spconv has no bfloat16 tensors; fp32 keeps bf16's range (fp16 would overflow/underflow)
    return torch.float32 if dtype == torch.bfloat16 else dtype


def subm_conv3d(
    x: SparseTensor, weight: torch.Tensor, bias: torch.Tensor | None = None, backend: str | None = None
) -> torch.Tensor:
    """Submanifold conv: feats [N, out] at x's coords, equal to
    ``F.conv3d(x.dense(), weight, bias, padding=k//2)`` read at the active voxels."""
    k = weight.shape[-1]
    dtype = _compute_dtype(x.feats)
    backend = backend or backends.resolve_conv_backend(x.device, dtype)
    feats, weight = x.feats.to(dtype), weight.to(dtype)
    with torch.autocast(x.device.type, enabled=False):
        if len(x) == 0:
            out = feats.new_zeros(0, weight.shape[0])
        elif backend == "spconv":
            sd = _spconv_dtype(dtype)
            out, _ = _spconv_conv(x, feats.to(sd), weight.to(sd), k, 1, subm=True)
            out = out.to(dtype)
        else:
            out = _torch_conv(feats, weight, subm_kernel_map(x, k))
        if bias is not None:
            out = out + bias.to(dtype)
    return out


def sparse_conv3d(
    x: SparseTensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int = 2,
    backend: str | None = None,
) -> SparseTensor:
    """Strided conv. Output coords ``unique(coords // stride)`` per batch element, sorted by
    (batch, x, y, z); feats equal ``F.conv3d(x.dense(), weight, bias, stride=stride)`` there."""
    k = weight.shape[-1]
    dtype = _compute_dtype(x.feats)
    backend = backend or backends.resolve_conv_backend(x.device, dtype)
    if backend == "spconv" and k != stride:
        backend = backends._fallback("conv", "spconv", "torch", f"strided conv with kernel {k} != stride {stride}")
    smap = strided_map(x, stride, None if backend == "spconv" else k)
    feats, weight = x.feats.to(dtype), weight.to(dtype)
    with torch.autocast(x.device.type, enabled=False):
        if len(x) == 0:
            out = feats.new_zeros(0, weight.shape[0])
        elif backend == "spconv":
            sd = _spconv_dtype(dtype)
            out, out_ids = _spconv_conv(x, feats.to(sd), weight.to(sd), k, stride, subm=False)
            # spconv emits outputs in hash order; bring them to our sorted layout
            order = _spconv_order(x, out_ids, stride)
            out = out[order].to(dtype)
        else:
            out = _torch_conv(feats, weight, smap.kernel)
        if bias is not None:
            out = out + bias.to(dtype)
    return SparseTensor(out, smap.coords, x.batch_size, stride=x.stride * stride, validate=False)


def _spconv_order(x: SparseTensor, out_ids: torch.Tensor, stride: int) -> torch.Tensor:
    """Row of spconv's output for each of our sorted output coords (cached)."""

    def build():
        ours = strided_map(x, stride).coords
        if out_ids.shape[0] != ours.shape[0]:
            raise RuntimeError(
                f"spconv produced {out_ids.shape[0]} output voxels, expected {ours.shape[0]}"
            )
        table = K.SortedKeys(K.pack_coords(out_ids.long()))
        return table.lookup(K.pack_coords(ours))

    return x.cached(("spconv_order", stride), build)


# ----------------------------------------------------------------------- modules
def _init_conv(weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    # same initialisation as torch.nn.Conv3d
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in = weight.shape[1] * weight[0, 0].numel()
        bound = 1 / math.sqrt(fan_in)
        nn.init.uniform_(bias, -bound, bound)


class SubMConv3d(nn.Module):
    """Submanifold 3-D conv; ``weight`` [out, in, k, k, k] as in ``nn.Conv3d``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = True):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"SubMConv3d: kernel_size must be odd, got {kernel_size}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *(kernel_size,) * 3))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        _init_conv(self.weight, self.bias)

    def forward(self, x: SparseTensor) -> SparseTensor:
        return x.replace(subm_conv3d(x, self.weight, self.bias))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, bias={self.bias is not None}"


class SparseConv3d(nn.Module):
    """Strided sparse 3-D conv (downsampling); output coords ``unique(coords // stride)``."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 2, stride: int = 2, bias: bool = True
    ):
        super().__init__()
        if kernel_size < stride:
            raise ValueError(
                f"SparseConv3d: kernel_size {kernel_size} < stride {stride} would skip input voxels"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = kernel_size, stride
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *(kernel_size,) * 3))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        _init_conv(self.weight, self.bias)

    def forward(self, x: SparseTensor) -> SparseTensor:
        return sparse_conv3d(x, self.weight, self.bias, self.stride)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, bias={self.bias is not None}"
        )
