"""Device choice for a process: what users pass as ``device``, and the errors for what cannot work."""

from __future__ import annotations

import pytest
import torch

from earthcrafter.training.distributed import local_device


def test_cpu_and_auto_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert local_device("cpu") == local_device("auto") == torch.device("cpu")
    with pytest.raises(RuntimeError, match="'cuda:1' requested but CUDA is not available"):
        local_device("cuda:1")


def test_cuda_devices_become_the_current_device(monkeypatch):
    """cuda: LOCAL_RANK's GPU; cuda:N: that GPU; either is made current (spconv and gsplat launch on
    the current device, not on their tensors')."""
    current = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "set_device", current.append)
    monkeypatch.setenv("LOCAL_RANK", "2")
    assert local_device("cuda") == local_device("auto") == torch.device("cuda", 2)
    monkeypatch.delenv("LOCAL_RANK")
    assert local_device("cuda:3") == torch.device("cuda", 3)
    assert current == [torch.device("cuda", 2), torch.device("cuda", 2), torch.device("cuda", 3)]
    with pytest.raises(RuntimeError, match="this machine has 4 GPU"):
        local_device("cuda:4")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="under torchrun each rank takes cuda:LOCAL_RANK"):
        local_device("cuda:1")


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "CUDA"])
def test_unknown_devices_are_refused(bad):
    with pytest.raises(ValueError, match="device must be auto|cpu|cuda|cuda:N"):
        local_device(bad)
