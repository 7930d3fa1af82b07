"""SparseTensor layout, validation, constructors, caching, helpers."""

import pytest
import torch

from earthcrafter.sparse import SparseTensor, broadcast_per_sample, cat, prune, sparse_to_dense

from sparse_testing import DEVICES, random_sparse


def test_from_list_unbind_round_trip():
    x = random_sparse(sizes=(5, 0, 1, 7), extent=6, seed=1)
    assert x.batch_size == 4 and len(x) == 13
    assert x.offsets.tolist() == [0, 5, 5, 6, 13]
    assert x.counts().tolist() == [5, 0, 1, 7]
    feats, coords = x.unbind()
    assert [len(f) for f in feats] == [5, 0, 1, 7]
    y = SparseTensor.from_list(feats, coords)
    assert torch.equal(y.coords, x.coords) and torch.equal(y.feats, x.feats)
    assert y.batch_size == 4  # the empty sample survives the round trip


@pytest.mark.parametrize(
    "coords, message",
    [
        (torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0]]), "non-decreasing"),
        (torch.tensor([[0, -1, 0, 0]]), r"coords\[:, 1:\] must lie"),
        (torch.tensor([[0, 0, 70000, 0]]), r"coords\[:, 1:\] must lie"),
        (torch.tensor([[-1, 0, 0, 0]]), "negative batch"),
        (torch.tensor([[0, 0, 0]]), r"\[N, 4\]"),
        (torch.tensor([[0.0, 0, 0, 0]]), "integer"),
    ],
)
def test_validation_errors_name_the_problem(coords, message):
    with pytest.raises((ValueError, TypeError), match=message):
        SparseTensor(torch.zeros(coords.shape[0], 2), coords)


def test_validation_row_count_and_batch_size():
    coords = torch.tensor([[0, 0, 0, 0], [1, 0, 0, 0]], dtype=torch.int32)
    with pytest.raises(ValueError, match="rows"):
        SparseTensor(torch.zeros(3, 2), coords)
    with pytest.raises(ValueError, match="batch_size"):
        SparseTensor(torch.zeros(2, 2), coords, batch_size=1)
    x = SparseTensor(torch.zeros(2, 2), coords.long(), batch_size=5)  # int64 accepted, trailing empties
    assert x.coords.dtype == torch.int32 and x.batch_size == 5 and x.counts().tolist() == [1, 1, 0, 0, 0]


def test_replace_shares_cache_and_checks_rows():
    x = random_sparse(seed=2)
    built = []
    x.cached(("probe",), lambda: built.append(1) or "map")
    y = x.replace(x.feats * 2)
    assert y.cached(("probe",), lambda: built.append(1) or "other") == "map"
    assert built == [1] and y.coords is x.coords and y.cache is x.cache
    with pytest.raises(ValueError, match="rows"):
        x.replace(x.feats[:-1])


def test_dense_matches_manual_scatter():
    x = random_sparse(sizes=(4, 3), extent=5, channels=2, seed=3)
    d = sparse_to_dense(x, (5, 5, 5))
    assert d.shape == (2, 2, 5, 5, 5)
    for row in range(len(x)):
        b, i, j, k = x.coords[row].tolist()
        assert torch.equal(d[b, :, i, j, k], x.feats[row])
    assert int((d.abs().sum(1) > 0).sum()) == len(x)
    with pytest.raises(ValueError, match="exceed"):
        x.dense((2, 2, 2))


def test_prune_keeps_batch_structure_with_empty_sample():
    x = random_sparse(sizes=(3, 4, 2), seed=4)
    keep = torch.ones(len(x), dtype=torch.bool)
    keep[3:7] = False  # all of sample 1
    y = prune(x, keep)
    assert y.batch_size == 3 and y.counts().tolist() == [3, 0, 2]
    assert torch.equal(y.feats, x.feats[keep]) and torch.equal(y.coords, x.coords[keep])
    with pytest.raises(ValueError, match="bool"):
        prune(x, keep.long())


def test_broadcast_and_arithmetic():
    x = random_sparse(sizes=(2, 0, 3), channels=3, seed=5)
    per = torch.arange(9, dtype=torch.float64).reshape(3, 3)
    rows = broadcast_per_sample(x, per)
    assert torch.equal(rows, per[x.coords[:, 0].long()])
    with pytest.raises(ValueError, match="batch size"):
        x.broadcast(per[:2])
    z = x + x * 2 - x
    assert torch.allclose(z.feats, 2 * x.feats) and z.coords is x.coords
    w = cat([x, z])
    assert w.feats.shape == (5, 6)
    other = random_sparse(sizes=(1, 1), seed=6)
    with pytest.raises(ValueError, match="different layouts"):
        x + other


@pytest.mark.parametrize("device", DEVICES)
def test_to_device_and_dtype(device):
    x = random_sparse(seed=7)
    y = x.to(device, torch.float32)
    assert y.device.type == device and y.dtype == torch.float32 and y.coords.device.type == device
    assert y.batch_size == x.batch_size and torch.equal(y.offsets.cpu(), x.offsets)
