"""Row gathers with cheap backwards for index sets known to be unique.

``x[idx]`` backpropagates with an accumulating scatter (``index_put``/``index_add``),
which is several times slower on CPU than a plain ``index_copy`` and needs atomics on
GPU. Permutations, window regrouping and padding use unique indices, so their
backward can be a copy.
"""

from __future__ import annotations

import torch


class _TakeRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, idx: torch.Tensor):
        ctx.save_for_backward(idx)
        ctx.n = x.shape[0]
        return x.index_select(0, idx)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (idx,) = ctx.saved_tensors
        return g.new_zeros(ctx.n, *g.shape[1:]).index_copy_(0, idx, g), None


class _PutRows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, idx: torch.Tensor, n: int):
        ctx.save_for_backward(idx)
        return x.new_zeros(n, *x.shape[1:]).index_copy_(0, idx, x)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (idx,) = ctx.saved_tensors
        return g.index_select(0, idx), None, None


def take_rows(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x[idx]`` for unique int64 ``idx`` (e.g. a permutation)."""
    return _TakeRows.apply(x, idx)


def put_rows(x: torch.Tensor, idx: torch.Tensor, n: int) -> torch.Tensor:
    """[n, ...] zeros with row ``idx[i]`` set to ``x[i]``; ``idx`` unique."""
    return _PutRows.apply(x, idx, n)


def gather_rows(x: torch.Tensor, idx: torch.Tensor, unique: bool) -> torch.Tensor:
    """``x[idx]``: the copy-backward path when ``unique``, else autograd's accumulating one."""
    return take_rows(x, idx) if unique else x.index_select(0, idx)
