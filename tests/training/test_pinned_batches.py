"""Batches go to the GPU from pinned memory: the loader (``pin_memory=True`` on CUDA) pins every
tensor of every batch type, and the trainer's copies are asynchronous."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data._utils.pin_memory import pin_memory as loader_pin  # what the DataLoader's pin thread calls

from earthcrafter.models.tex_vae_data import TexBatch, ViewSet
from earthcrafter.sparse import SparseTensor
from earthcrafter.training.task import move_to


@pytest.fixture
def pinned(monkeypatch):
    """CPU builds cannot page-lock: record which tensors would be pinned instead."""
    ids = set()

    def fake_pin(self, *args, **kwargs):
        out = self.clone()
        ids.add(id(out))
        return out

    monkeypatch.setattr(torch.Tensor, "pin_memory", fake_pin)
    return ids


def _voxels() -> SparseTensor:
    return SparseTensor.from_list([torch.rand(4, 3), torch.rand(2, 3)], [torch.randint(0, 8, (4, 3)), torch.randint(0, 8, (2, 3))])


def _views() -> ViewSet:
    return ViewSet(torch.rand(2, 4, 4, 3), torch.rand(2, 4, 4), torch.eye(3).repeat(2, 1, 1), torch.eye(4).repeat(2, 1, 1),
                   torch.rand(2, 3), ["a", "b"], hidden=torch.rand(2, 4, 4))  # fmt: skip


def _tensors(views: ViewSet) -> list[torch.Tensor]:
    return [views.colour, views.coverage, views.K, views.world_to_camera, views.background, views.hidden]


def test_the_loader_pins_every_tensor_of_a_flow_batch(pinned):
    batch = loader_pin({"x": _voxels(), "t": torch.rand(2), "tile_id": ["a", "b"]})
    assert isinstance(batch["x"], SparseTensor) and batch["tile_id"] == ["a", "b"]
    assert {id(batch["x"].feats), id(batch["x"].coords), id(batch["t"])} <= pinned


def test_the_loader_pins_every_tensor_of_a_texvae_batch(pinned):
    batch = TexBatch(_voxels(), torch.rand(2), [_views(), _views()], ["a", "b"], seeds=torch.tensor([1, 2]))
    out = loader_pin(batch)
    assert isinstance(out, TexBatch) and out.tile_ids == ["a", "b"] and torch.equal(out.seeds, batch.seeds)
    tensors = [out.voxels.feats, out.voxels.coords, out.voxel_size] + [t for v in out.views for t in _tensors(v)]
    assert all(id(t) in pinned for t in tensors)
    for a, b in zip(tensors, [batch.voxels.feats, batch.voxels.coords, batch.voxel_size]
                    + [t for v in batch.views for t in _tensors(v)]):  # fmt: skip
        assert torch.equal(a, b)


def test_asynchronous_moves_keep_every_value():
    batch = TexBatch(_voxels(), torch.rand(2), [_views()], ["a"])
    moved = move_to({"batch": batch, "x": _voxels(), "t": torch.rand(3)}, torch.device("cpu"))
    assert torch.equal(moved["batch"].voxels.feats, batch.voxels.feats)
    assert all(torch.equal(a, b) for a, b in zip(_tensors(moved["batch"].views[0]), _tensors(batch.views[0])))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pinned_batches_reach_the_gpu_whole():
    batch = loader_pin(TexBatch(_voxels(), torch.rand(2), [_views()], ["a"]))
    assert batch.voxels.feats.is_pinned() and batch.views[0].colour.is_pinned()
    on_gpu = move_to(batch, torch.device("cuda"))
    torch.cuda.synchronize()
    assert on_gpu.voxels.feats.is_cuda and torch.equal(on_gpu.views[0].colour.cpu(), batch.views[0].colour)
