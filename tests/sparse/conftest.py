"""Fixtures for the earthcrafter.sparse tests."""

import pytest
import torch

from earthcrafter.sparse import use_backends


@pytest.fixture(scope="module", autouse=True)
def _one_intra_op_thread():
    """These tests use tiny tensors, where intra-op threads only add synchronisation cost
    (dozens of times slower on a busy 2-core machine). Tests that need threads set them."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture(autouse=True)
def _auto_backends(monkeypatch):
    """Each test starts from automatic backend choice, whatever the environment says."""
    monkeypatch.delenv("EARTHCRAFTER_CONV_BACKEND", raising=False)
    monkeypatch.delenv("EARTHCRAFTER_ATTN_BACKEND", raising=False)
    with use_backends(conv="auto", attn="auto"):
        yield


@pytest.fixture(autouse=True)
def _no_tf32():
    """fp32 references on CUDA must be real fp32 (cuDNN convs default to TF32)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
