"""Pixel (un)shuffle, subdivision, pooling and their dense equivalents."""

import pytest
import torch
import torch.nn.functional as F
from sparse_testing import DEVICES, random_sparse, read_dense

from earthcrafter.sparse import (
    SparseTensor,
    downsample,
    downsample_inverse,
    pixel_shuffle,
    pixel_unshuffle,
    prune,
    upsample_like,
    upsample_nearest,
)
from earthcrafter.sparse import keys as K


def dense_pixel_shuffle(x: torch.Tensor, f: int) -> torch.Tensor:
    """[B, f³·C, X, Y, Z] -> [B, C, fX, fY, fZ]; channel block i = (dx·f + dy)·f + dz."""
    b, fc, X, Y, Z = x.shape
    c = fc // f**3
    x = x.reshape(b, f, f, f, c, X, Y, Z)  # [b, dx, dy, dz, c, X, Y, Z]
    return x.permute(0, 4, 5, 1, 6, 2, 7, 3).reshape(b, c, f * X, f * Y, f * Z)


def assert_sorted(x: SparseTensor) -> None:
    keys = K.pack_coords(x.coords)
    assert bool((keys[1:] > keys[:-1]).all()), "coords not strictly sorted by (batch, x, y, z)"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("factor", [2, 3])
def test_pixel_shuffle_matches_dense(factor, device):
    c = 2
    x = random_sparse(sizes=(9, 1, 0, 14), extent=4, channels=c * factor**3, device=device, seed=factor)
    y = pixel_shuffle(x, factor)
    assert len(y) == len(x) * factor**3 and y.batch_size == x.batch_size
    assert_sorted(y)
    assert y.counts().tolist() == [n * factor**3 for n in x.counts().tolist()]
    ref = dense_pixel_shuffle(x.dense((4, 4, 4)), factor)
    assert torch.equal(y.feats, read_dense(ref, y.coords))


def test_pixel_shuffle_gradient_and_unshuffle_round_trip():
    x = random_sparse(sizes=(7, 3), extent=5, channels=16, seed=3)
    feats = x.feats.clone().requires_grad_()
    y = pixel_shuffle(x.replace(feats))
    z = pixel_unshuffle(y)
    assert torch.equal(z.coords, torch.unique(x.coords, dim=0))  # parents come back sorted
    order = torch.argsort(K.pack_coords(x.coords))
    assert torch.equal(z.feats, x.feats[order])
    # shuffle is a permutation of values: the gradient of a weighted sum is the weight
    w = torch.randn_like(y.feats)
    (g,) = torch.autograd.grad((y.feats * w).sum(), feats)
    assert torch.equal(pixel_shuffle(x.replace(g)).feats, w)


def test_pixel_unshuffle_fills_missing_children_with_zero():
    x = random_sparse(sizes=(30, 20), extent=6, channels=3, seed=4)
    z = pixel_unshuffle(x, 2)
    # dense reference: space-to-channel of the densified grid, read at the parents
    d = x.dense((6, 6, 6))  # [B, C, 6, 6, 6]
    b, c = d.shape[:2]
    ref = d.reshape(b, c, 3, 2, 3, 2, 3, 2).permute(0, 3, 5, 7, 1, 2, 4, 6).reshape(b, 8 * c, 3, 3, 3)
    assert torch.equal(z.feats, read_dense(ref, z.coords))
    # and pixel_shuffle(pixel_unshuffle(x)) restricted to x's voxels is x
    back = pixel_shuffle(z, 2)
    lookup = K.SortedKeys(K.pack_coords(back.coords)).lookup(K.pack_coords(x.coords))
    assert bool((lookup >= 0).all()) and torch.equal(back.feats[lookup], x.feats)
    extra = torch.ones(len(back), dtype=torch.bool)
    extra[lookup] = False
    assert bool((back.feats[extra] == 0).all())


@pytest.mark.parametrize("device", DEVICES)
def test_upsample_nearest_copies_parent(device):
    x = random_sparse(sizes=(5, 0, 8), extent=4, channels=3, device=device, seed=5)
    y = upsample_nearest(x, 2)
    assert_sorted(y)
    ref = F.interpolate(x.dense((4, 4, 4)), scale_factor=2, mode="nearest")
    assert torch.equal(y.feats, read_dense(ref, y.coords))
    assert y.batch_size == 3 and y.counts().tolist() == [40, 0, 64]


@pytest.mark.parametrize("reduce", ["mean", "sum", "amax"])
def test_downsample_matches_segment_loop(reduce):
    x = random_sparse(sizes=(40, 1, 25), extent=6, channels=3, seed=6)
    y = downsample(x, 2, reduce)
    assert_sorted(y)
    groups: dict = {}
    for row, (b, i, j, k) in enumerate(x.coords.tolist()):
        groups.setdefault((b, i // 2, j // 2, k // 2), []).append(x.feats[row])
    assert [tuple(c) for c in y.coords.tolist()] == sorted(groups)
    for row, key in enumerate(sorted(groups)):
        stack = torch.stack(groups[key])
        want = {"mean": stack.mean(0), "sum": stack.sum(0), "amax": stack.amax(0)}[reduce]
        assert torch.allclose(y.feats[row], want)
    if reduce == "mean":  # dense check: mean pool = sum pool / occupancy count
        d = x.dense((6, 6, 6))
        occ = (x.replace(torch.ones(len(x), 1, dtype=x.dtype))).dense((6, 6, 6))
        ref = F.avg_pool3d(d, 2) / F.avg_pool3d(occ, 2).clamp(min=1e-12)
        assert torch.allclose(y.feats, read_dense(ref, y.coords))


def test_upsample_like_inverts_downsample_layout():
    x = random_sparse(sizes=(30, 12), extent=6, channels=2, seed=7)
    y = downsample(x, 2)
    up = upsample_like(y, x)
    assert up.coords is x.coords
    assert torch.equal(up.feats, y.feats[downsample_inverse(x, 2)])
    with pytest.raises(ValueError, match="coarse tensor"):
        upsample_like(prune(y, torch.arange(len(y)) > 0), x)


def test_shuffle_rejects_bad_channels_and_range():
    x = random_sparse(sizes=(3,), channels=5, seed=8)
    with pytest.raises(ValueError, match="divisible"):
        pixel_shuffle(x)
    far = SparseTensor(torch.zeros(1, 8), torch.tensor([[0, 40000, 0, 0]], dtype=torch.int32))
    with pytest.raises(ValueError, match="coordinate range"):
        pixel_shuffle(far)
