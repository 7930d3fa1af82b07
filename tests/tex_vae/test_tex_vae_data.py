"""TexVAE samples: pooling, view resizing, augmentation consistency (by rendering), crops, skips."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest
import torch

from earthcrafter.features.layout import FEATURE_LAYOUT
from earthcrafter.geometry.augment import crop_views
from earthcrafter.io.tiles import TileViews
from earthcrafter.models.tex_vae_data import (
    SkippedSample,
    TexSample,
    TexVAEDataConfig,
    TexVAEDataset,
    collate_tex,
    pool_voxels,
    resize_mask,
    resize_views,
)
from earthcrafter.render.gaussians import Gaussians2D
from earthcrafter.render.rasterize import rasterize_2dgs
from earthcrafter.render.sh import rgb_to_sh_dc
from earthcrafter.training.sampler import Draw

RGB = FEATURE_LAYOUT["f_rgb"].start  # the centre colour of the cross-shaped f_rgb


def _config(**kw) -> TexVAEDataConfig:
    base = dict(view_width=32, views_per_sample=0, background="black", val_background="black", flip=True, rotate=True)
    return TexVAEDataConfig(**{**base, **kw})


def _dataset(manifest, augment=True, split="train", **kw) -> TexVAEDataset:
    return TexVAEDataset(manifest, split=split, features="f_feat", config=_config(**kw), augment=augment)


def oracle_psnr(sample: TexSample) -> float:
    """Render horizontal surfels coloured by each voxel's f_rgb into the sample's views; PSNR on the tile pixels.

    An oracle that knows colours and positions: consistent cameras give a good match,
    cameras that disagree with the voxel coordinates do not.
    """
    vs, n = sample.voxel_size, len(sample.coords)
    colour = sample.feats[:, RGB : RGB + 3]
    g = Gaussians2D(
        means=(sample.coords.float() + 0.5) * vs,
        quats=torch.tensor([[1.0, 0, 0, 0]]).expand(n, 4).contiguous(),
        scales=torch.full((n, 2), 0.6 * vs),
        opacities=torch.full((n,), 0.97),
        sh=rgb_to_sh_dc(colour)[:, None, :],
    )
    v = sample.views
    pred = rasterize_2dgs(g, v.world_to_camera, v.K, v.width, v.height, background=v.background).rgb.clamp(0, 1)
    m = v.mask()[..., None].float()
    mse = (((pred - v.target()) * m) ** 2).sum() / (3 * m.sum())
    return float(-10 * torch.log10(mse))


def test_pool_voxels_matches_a_dictionary_reference():
    rng = np.random.default_rng(0)
    coords = np.unique(rng.integers(0, 9, (200, 3)), axis=0).astype(np.int32)
    feats = rng.normal(size=(len(coords), 5)).astype(np.float32)
    feats[:, 2:5] /= np.linalg.norm(feats[:, 2:5], axis=1, keepdims=True)
    pc, pf = pool_voxels(coords, feats, 2, normal_slice=slice(2, 5))
    groups: dict[tuple, list[int]] = {}
    for i, c in enumerate(coords // 2):
        groups.setdefault(tuple(c), []).append(i)
    assert sorted(map(tuple, pc.tolist())) == sorted(groups) and len(pc) == len(groups)
    for c, f in zip(pc, pf):
        ref = feats[groups[tuple(c)]].mean(0)
        np.testing.assert_allclose(f[:2], ref[:2], atol=1e-6)
        np.testing.assert_allclose(f[2:], ref[2:] / np.linalg.norm(ref[2:]), atol=1e-5)


def test_resize_views_keeps_projections_and_mean_colour(synth_tile):
    _, views = synth_tile  # 40 px
    colour, coverage, K = resize_views(views, 20)
    assert colour.shape == (len(views), 20, 20, 3) and coverage.shape == (len(views), 20, 20)
    premult = views.rgb / 255.0 * views.mask[..., None]
    np.testing.assert_allclose(colour.mean((1, 2)).numpy(), premult.mean((1, 2)), atol=1e-5)
    np.testing.assert_allclose(coverage.mean((1, 2)).numpy(), views.mask.mean((1, 2)), atol=1e-6)
    p = np.array([5.0, 7.0, 3.0, 1.0])  # a world point
    for i in range(len(views)):
        cam = views.world_to_camera[i] @ p
        uv_big = (views.K[i] @ cam[:3])[:2] / cam[2]
        uv_small = (K[i].double().numpy() @ cam[:3])[:2] / cam[2]
        np.testing.assert_allclose(uv_small, uv_big / 2, atol=1e-5)


def test_views_match_voxels_under_every_flip_and_rotation(synth_manifest):
    plain = oracle_psnr(_dataset(synth_manifest, augment=False)[0])
    assert plain > 17.0, plain  # the oracle is good on consistent data
    ds = _dataset(synth_manifest)
    # Draw seeds (7, 1): a quarter turn; (7, 4) and (7, 5): mirrors (x <-> -y), which flip the images.
    scores = [oracle_psnr(ds[Draw(0, (7, k))]) for k in (1, 4, 5)]
    assert min(scores) > plain - 1.5, (plain, scores)
    # A transform of the voxels that the cameras do not follow is caught by the same check.
    s = ds[Draw(0, (7, 0))]
    broken = replace(s, coords=s.coords.flip(1).contiguous())  # swap x and z: the cameras disagree
    assert oracle_psnr(broken) < plain - 4.0


def test_budget_crop_narrows_the_masks(synth_manifest):
    full = _dataset(synth_manifest, augment=False)[0]
    budget = len(full.coords) // 3
    crop = _dataset(synth_manifest, augment=True, max_voxels=budget, flip=False, rotate=False)[Draw(0, (1, 2))]
    assert 0 < len(crop.coords) <= budget
    assert crop.views.coverage.sum() < 0.6 * full.views.coverage.sum()
    assert oracle_psnr(crop) > 15.0  # the narrowed masks show only the kept voxels
    unnarrowed = replace(crop, views=replace(crop.views, colour=full.views.colour, coverage=full.views.coverage))
    assert oracle_psnr(unnarrowed) < oracle_psnr(crop) - 3.0


def test_views_are_chosen_among_those_that_see_the_crop(synth_manifest, synth_tile):
    """Views are narrowed to the crop one at a time, in random order, until enough see it. The reference
    narrows every view first (``crop_views``): the same views must qualify, with the same masks."""
    tile, views = synth_tile
    kw = dict(max_voxels=len(tile.coords) // 6, min_view_coverage=0.02, flip=False, rotate=False)
    every, two = _dataset(synth_manifest, **kw), _dataset(synth_manifest, views_per_sample=2, **kw)
    picked, narrowed_out = set(), 0
    for seed in range(12):
        s, t = every[Draw(0, (3, seed))], two[Draw(0, (3, seed))]  # the same crop: views are drawn last
        lo = s.coords.min(0).values.numpy()
        ref = crop_views(views, lo, s.coords.max(0).values.numpy() + 1 - lo, tile.voxel_size).mask
        seeing = np.flatnonzero(ref.reshape(len(views), -1).mean(axis=1) >= 0.02)
        narrowed_out += len(views) - len(seeing)
        assert s.views.names == [views.names[i] for i in seeing]
        torch.testing.assert_close(s.views.coverage, resize_mask(ref[seeing], (s.views.height, s.views.width)))
        assert len(t.views) == min(2, len(seeing)) and set(t.views.names) <= set(s.views.names)
        assert t.views.names == sorted(t.views.names, key=views.names.index)
        picked |= set(t.views.names)
    assert narrowed_out > 0  # some views see the tile but not the crop, and are left out
    assert picked == set(views.names)  # over the draws every view is chosen when it sees the crop


def test_features_stay_float16_as_stored(synth_manifest, synth_tile):
    tile, _ = synth_tile
    s = _dataset(synth_manifest, augment=False)[0]
    assert s.feats.dtype == torch.float16
    stored = {tuple(c): f for c, f in zip(tile.coords.tolist(), tile.feats)}
    assert all(np.array_equal(stored[tuple(c)], f) for c, f in zip(s.coords.tolist(), s.feats.numpy()))
    flipped = _dataset(synth_manifest)[Draw(0, (7, 5))]  # a mirror: the normals change sign and order
    n = flipped.feats[:, FEATURE_LAYOUT["f_n"]].float()
    torch.testing.assert_close(n.norm(dim=1), torch.ones(len(n)), atol=2e-3, rtol=0)


def test_pooling_halves_the_grid_and_keeps_the_frame(synth_manifest):
    plain = _dataset(synth_manifest, augment=False)
    pooled = _dataset(synth_manifest, augment=False, pool=2)
    assert pooled.grid() == (6, 2.0) and plain.grid() == (12, 1.0)
    s = pooled[0]
    assert s.voxel_size == 2.0 and int(s.coords.max()) < 6
    assert oracle_psnr(s) > 13.0  # coarser, still aligned with the same views


def test_training_samples_pick_views_and_backgrounds(synth_manifest):
    ds = _dataset(synth_manifest, views_per_sample=2, background="random")
    s = ds[Draw(0, (0, 5))]
    assert len(s.views) == 2 and s.views.background.shape == (2, 3)
    again = ds[Draw(0, (0, 5))]
    assert torch.equal(s.views.background, again.views.background) and torch.equal(s.coords, again.coords)
    target = s.views.target()
    outside = s.views.coverage == 0
    torch.testing.assert_close(target[0][outside[0]], s.views.background[0].expand(int(outside[0].sum()), 3))


def test_crop_marks_voxels_hidden_behind_the_rest_of_the_tile_and_the_loss_ignores_them(synth_manifest):
    budget = len(_dataset(synth_manifest, augment=False)[0].coords) // 3
    kw = dict(max_voxels=budget, flip=False, rotate=False)
    hidden_total, whole_hidden = 0.0, 0
    for seed in range(4):
        s = _dataset(synth_manifest, **kw)[Draw(0, (1, seed))]
        v = s.views
        assert v.hidden is not None and v.hidden.shape == v.coverage.shape
        assert float(v.hidden.min()) >= 0 and float(v.hidden.max()) <= 1
        assert float((v.hidden * v.coverage).max()) < 0.5  # hidden and shown never share much of a pixel
        hidden_total += float(v.hidden.sum())
        whole_hidden += int((v.hidden == 1).sum())
        # the loss target equals the prediction where hidden, the ground truth where shown
        pred = torch.rand_like(v.colour, requires_grad=True)
        (pred - v.loss_target(pred)).abs().sum().backward()
        g = pred.grad.abs().sum(-1)
        assert float(g[v.hidden == 1].sum()) == 0.0  # no gradient where the photo shows nothing of the tile
        assert float(g[v.hidden == 0].min()) > 0
        off = _dataset(synth_manifest, hidden_pixels="background", **kw)[Draw(0, (1, seed))]
        assert off.views.hidden is None and torch.equal(off.views.loss_target(pred), off.views.target())
    assert hidden_total > 0 and whole_hidden > 0  # crops of the synthetic tile do hide voxels behind the rest of it


def _reader(tile_fn=None, views_fn=None):
    from earthcrafter.io.tiles import read_tile, read_views

    return (lambda p: tile_fn(read_tile(p))) if tile_fn else read_tile, (lambda p: views_fn(read_views(p))) if views_fn else read_views


@pytest.mark.parametrize(
    "case,reason",
    [
        ("no_view", "no view sees the tile"),
        ("empty", "zero voxels"),
        ("nan", "1 non-finite feature value"),
    ],
)
def test_bad_samples_are_skipped_with_a_logged_reason(synth_manifest, caplog, case, reason):
    def blind(v: TileViews) -> TileViews:  # cameras that see no voxel: masks all false
        return TileViews(v.rgb, np.zeros_like(v.mask), v.depth, v.K, v.world_to_camera, v.names)

    def empty(t):
        return type(t)(t.tile_id, t.coords[:0], t.feats[:0], t.semantic[:0], t.confidence[:0], t.meta)

    def nan(t):
        f = t.feats.copy()
        f[0, 0] = np.nan
        return type(t)(t.tile_id, t.coords, f, t.semantic, t.confidence, t.meta)

    tile_fn, views_fn = {"no_view": (None, blind), "empty": (empty, None), "nan": (nan, None)}[case]
    read_tile_fn, read_views_fn = _reader(tile_fn, views_fn)
    ds = TexVAEDataset(synth_manifest, split="train", features="f_feat", config=_config(), augment=True,
                       read_tile_fn=read_tile_fn, read_views_fn=read_views_fn)  # fmt: skip
    sample = ds[Draw(0, (0, 0))]
    assert isinstance(sample, SkippedSample) and reason in sample.reason and sample.tile_id == "synth_a"
    good = _dataset(synth_manifest)[Draw(0, (0, 1))]
    with caplog.at_level(logging.WARNING):
        batch = collate_tex([sample, good])
    assert len(batch) == 1 and len(batch.skipped) == 1
    assert any(reason in r.getMessage() and "synth_a" in r.getMessage() for r in caplog.records)
    only_bad = collate_tex([sample])
    assert only_bad.voxels is None and len(only_bad.skipped) == 1


def test_missing_split_and_missing_files_are_named(synth_manifest, tmp_path):
    with pytest.raises(ValueError, match="no tiles in split 'test'"):
        _dataset(synth_manifest, split="test")
    broken = synth_manifest.copy()
    broken.loc[0, "views_path"] = str(tmp_path / "gone.views.npz")
    ds = TexVAEDataset(broken, split="train", features="f_feat", config=_config())
    with pytest.raises(FileNotFoundError, match="gone.views.npz"):
        ds[0]


def test_train_fraction_thins_the_training_tiles_only(synth_manifest):
    """The TexVAE dataset takes its rows from the same split_rows as the StructVAE's."""
    both_train = synth_manifest.assign(split="train")
    assert len(_dataset(both_train)) == 2
    assert len(_dataset(both_train, train_fraction=0.5)) == 1
    assert len(_dataset(synth_manifest, augment=False, split="val", train_fraction=0.5)) == 1
