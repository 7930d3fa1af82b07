"""TexVAE model: shapes, bounds, equivariance, gradients, persistence, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from earthcrafter.models.tex_vae import (
    TexVAE,
    TexVAEConfig,
    encode_tile,
    feature_index,
    kl_divergence,
    tile_to_sparse,
)
from earthcrafter.render.rasterize import rasterize_2dgs
from earthcrafter.sparse import SparseTensor

TINY = dict(width=16, num_heads=2, enc_depth=2, dec_depth=2, window=4)


def _model(arch: str = "tube", k: int = 1, **kw) -> TexVAE:
    torch.manual_seed(0)
    model = TexVAE(TexVAEConfig(arch=arch, gaussians_per_voxel=k, **TINY, **kw), in_channels=6).eval()
    with torch.no_grad():  # non-trivial head so outputs depend on the input
        model.head.proj.weight.normal_(0, 0.5)
    return model


def _batch(sizes=(40, 25), extent: int = 8, seed: int = 0) -> SparseTensor:
    g = torch.Generator().manual_seed(seed)
    coords, feats = [], []
    for n in sizes:
        flat = torch.randperm(extent**3, generator=g)[:n]
        coords.append(torch.stack([flat // extent**2, (flat // extent) % extent, flat % extent], 1).int())
        feats.append(torch.randn(n, 6, generator=g))
    return SparseTensor.from_list(feats, coords)


@pytest.mark.parametrize("arch,k", [("tube", 1), ("tube", 3), ("unet2", 2)])
def test_decode_shapes_and_bounds(arch, k):
    model, x = _model(arch, k), _batch()
    vs = torch.tensor([0.5, 2.0])
    with torch.no_grad():
        gs, mean, logvar = model(x, vs, sample=False)
    if arch == "tube":
        assert mean.feats.shape == (len(x), 8) and torch.equal(mean.coords, x.coords)
    else:  # latents live on the 2x coarser grid
        coarse = torch.unique(torch.cat([x.coords[:, :1], x.coords[:, 1:] // 2], 1), dim=0)
        assert mean.feats.shape == (len(coarse), 8) and mean.stride == 2
    for b, (g, n) in enumerate(zip(gs, (40, 25))):
        assert len(g) == n * k and g.sh.shape == (n * k, 1, 3) and g.scales.shape == (n * k, 3)
        g.check_values()
        centres = ((x.coords[x.coords[:, 0] == b, 1:].float() + 0.5) * vs[b]).repeat_interleave(k, 0)
        assert ((g.means - centres).abs() <= 0.75 * vs[b] + 1e-5).all()
        assert ((g.opacities > 0) & (g.opacities < 1)).all()


def test_batch_elements_do_not_interact_and_rows_may_be_permuted():
    model, x = _model(), _batch()
    feats, coords = x.unbind()
    with torch.no_grad():
        both = model.encode(x).feats
        alone = model.encode(SparseTensor.from_list([feats[1]], [coords[1]])).feats
        perm = torch.randperm(len(coords[1]), generator=torch.Generator().manual_seed(3))
        shuffled = model.encode(SparseTensor.from_list([feats[1][perm]], [coords[1][perm]])).feats
    torch.testing.assert_close(both[40:], alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shuffled, alone[perm], atol=1e-5, rtol=1e-5)


def test_float16_features_from_the_loader_encode_as_their_float32_values(arch="tube"):
    """The loader keeps the tile's float16 features; the encoder casts them to its weights' precision."""
    model, x = _model(arch), _batch()
    half = x.replace(x.feats.half())
    with torch.no_grad():
        torch.testing.assert_close(model.encode(half).feats, model.encode(half.replace(half.feats.float())).feats,
                                   atol=0, rtol=0)  # fmt: skip


def test_decode_single_tile_equals_batch_decode_and_needs_structure_for_unet2():
    model, x = _model("unet2"), _batch(sizes=(30,))
    with torch.no_grad():
        z = model.encode(x)
        g = model.decode(z, voxel_size=0.5, structure=x.coords)
        g_batch = model.decode_batch(z, 0.5, structure=x.coords)[0]
    torch.testing.assert_close(g.means, g_batch.means)
    with pytest.raises(ValueError, match="structure"):
        model.decode(z)
    with pytest.raises(ValueError, match="batch size 1"):
        _model().decode(_model().encode(_batch()))


def test_gradients_reach_the_encoder_through_the_renderer():
    model = _model().train()
    x = _batch(sizes=(30,), extent=6)
    gs, mean, logvar = model(x, 1.0, sample=True)
    cam = torch.tensor([[1.0, 0, 0, -3], [0, -1, 0, 3], [0, 0, -1, 12], [0, 0, 0, 1]])  # nadir, looking down -z
    K = torch.tensor([[20.0, 0, 12], [0, 20.0, 12], [0, 0, 1]])
    img = rasterize_2dgs(gs[0], cam[None], K[None], 24, 24, background=torch.zeros(3)).rgb
    assert img.abs().sum() > 0
    loss = img.mean() + 1e-3 * kl_divergence(mean.feats, logvar.feats)
    loss.backward()
    for name in ("enc_in.weight", "enc_out.weight", "dec_in.weight", "head.proj.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_sampling_uses_the_posterior_and_kl_matches_closed_form():
    model, x = _model(), _batch()
    with torch.no_grad():
        mean, logvar = model.encode_posterior(x)
        g = torch.Generator().manual_seed(0)
        z = model.encode(x, sample=True, generator=g)
        eps = torch.randn(mean.feats.shape, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(z.feats, mean.feats + torch.exp(0.5 * logvar.feats) * eps)
    m, lv = torch.tensor([[0.5, -1.0]]), torch.tensor([[0.2, -0.3]])
    ref = sum(0.5 * (mi**2 + np.exp(li) - 1 - li) for mi, li in zip([0.5, -1.0], [0.2, -0.3]))
    assert abs(float(kl_divergence(m, lv)) - ref) < 1e-6


@pytest.mark.parametrize("arch", ["tube", "unet2"])
def test_untrained_posterior_starts_nearly_deterministic(arch):
    """At sigma = 1 the sampled latents would be mostly noise and the decoder would learn the
    mean colour; a fresh model starts at sigma = exp(logvar_init / 2) for every voxel."""
    x = _batch()
    torch.manual_seed(0)
    model = TexVAE(TexVAEConfig(arch=arch, **TINY, logvar_init=-6.0), in_channels=6)
    with torch.no_grad():
        mean, logvar = model.encode_posterior(x)
    torch.testing.assert_close(logvar.feats, torch.full_like(logvar.feats, -6.0))
    assert mean.feats.abs().mean() > 5 * float(np.exp(-3.0))  # signal well above the noise


@pytest.mark.parametrize("arch", ["tube", "unet2"])
def test_save_load_round_trip_gives_identical_outputs(tmp_path, arch):
    model, x = _model(arch, 2), _batch()
    path = model.save(tmp_path / "tex_vae.pt")
    loaded = TexVAE.load(path)
    assert loaded.config == model.config and loaded.in_channels == 6
    with torch.no_grad():
        a, ma, _ = model(x, 0.7, sample=False)
        b, mb, _ = loaded(x, 0.7, sample=False)
    assert torch.equal(ma.feats, mb.feats)
    for ga, gb in zip(a, b):
        for ta, tb in zip(ga.tensors(), gb.tensors()):
            assert torch.equal(ta, tb)


def test_bad_checkpoint_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        TexVAE.load(tmp_path / "nope.pt")
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="other.pt"):
        TexVAE.load(tmp_path / "other.pt")


def test_bad_inputs_raise_clear_errors(synth_tile):
    tile, _ = synth_tile
    model = TexVAE(TexVAEConfig(**TINY), in_channels=66).eval()
    latents = encode_tile(model, tile)
    assert latents.feats.shape == (len(tile), 8)

    nan_tile = type(tile)(tile.tile_id, tile.coords, tile.feats.copy(), tile.semantic, tile.confidence, tile.meta)
    nan_tile.feats[3, 5] = np.nan
    with pytest.raises(ValueError, match=r"synth_a.*1 non-finite value"):
        encode_tile(model, nan_tile)
    empty = type(tile)("empty_tile", tile.coords[:0], tile.feats[:0], tile.semantic[:0], tile.confidence[:0], tile.meta)
    with pytest.raises(ValueError, match="empty_tile: zero voxels"):
        tile_to_sparse(empty, "f_feat")
    with pytest.raises(ValueError, match=r"expected feats \[N, 66\]"):
        model.encode(tile_to_sparse(tile, "f0"))
    with pytest.raises(ValueError, match="dino"):
        feature_index("dinov2", tile.layout)


def test_feature_sets_select_the_layout_groups(synth_tile):
    layout = synth_tile[0].layout
    assert len(feature_index("f0", layout)) == 16
    assert len(feature_index("f0_f1_f2", layout)) == 48
    assert np.array_equal(feature_index("f_feat", layout), np.arange(66))
    dino_layout = {"dino": slice(0, 384), "f_rgb": slice(384, 399), "f_n": slice(399, 402)}
    assert np.array_equal(feature_index("dinov2", dino_layout), np.arange(384))


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match="widht"):
        TexVAEConfig(widht=32)
    with pytest.raises(ValueError, match="divisible"):
        TexVAEConfig(width=30, num_heads=4)
    with pytest.raises(ValueError, match="unet2"):
        TexVAEConfig(arch="unet2", enc_depth=1)


def test_surfels_stay_float32_and_exact_under_bf16_autocast():
    """bf16 spacing is 2 at 256-512: surfel positions must not pass through it."""
    model = _model()
    x = _batch(sizes=(20,))
    coords = x.coords.clone()
    coords[:, 1:] += 300  # voxels around index 300
    far = SparseTensor(x.feats, coords)
    with torch.no_grad():
        ref, _, _ = model(far, 1.0, sample=False)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low, _, _ = model(far, 1.0, sample=False)
    assert low[0].means.dtype == torch.float32
    centres = far.coords[:, 1:].float() + 0.5
    assert ((low[0].means - centres).abs() <= 0.75 + 1e-4).all()
    assert (low[0].means - ref[0].means).abs().max() < 0.1  # bf16 trunk noise only, no 2-voxel rounding


def test_voxel_size_stays_float32_under_bf16_autocast():
    """200/360 m in bf16 is 0.5547 m: surfel centres (ijk + 0.5) * vs would drift by ~0.3 m at the
    far edge of an L = 360 tile. The voxel size and the position arithmetic stay float32."""
    model, vs = _model(), 200.0 / 360
    xyz = torch.tensor([[x, 5, 3] for x in range(0, 360, 7)])
    z = SparseTensor.from_list([torch.randn(len(xyz), 8, generator=torch.Generator().manual_seed(0))], [xyz])
    with torch.no_grad():
        ref = model.decode_batch(z, torch.tensor([vs]))[0]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model.decode_batch(z, torch.tensor([vs]))[0]
    assert low.means.dtype == low.scales.dtype == torch.float32
    # bf16 trunk noise moves a surfel by ~0.02 voxel here; a bf16 voxel size moves the far ones by 0.55 voxel
    assert (low.means - ref.means).abs().max() < 0.1 * vs
    centres = (xyz.float() + 0.5) * vs
    assert ((low.means - centres).abs() <= 0.75 * vs + 1e-4).all()


def test_decoding_zero_voxels_gives_zero_surfels():
    model = _model()
    z = SparseTensor(torch.zeros(0, 8), torch.zeros(0, 4, dtype=torch.int32), 1)
    with torch.no_grad():
        g = model.decode(z, voxel_size=0.5)
    assert len(g) == 0 and g.means.shape == (0, 3) and g.sh.shape == (0, 1, 3) and g.scales.shape == (0, 3)


def test_unet2_levels_alternate_regular_and_shifted_windows():
    """Table 2's TexF (unet2, one block per side at each level): every level has one regular and
    one shifted window block; the tube's blocks alternate as before."""
    unet2 = TexVAE(TexVAEConfig(arch="unet2", width=16, num_heads=2, enc_depth=2, dec_depth=2, window=4), in_channels=6)
    shifts = lambda blocks: [b.attn.shift for b in blocks]  # noqa: E731
    assert shifts(unet2.enc_fine) + shifts(unet2.dec_fine) == [0, 2]
    assert shifts(unet2.enc_coarse) + shifts(unet2.dec_coarse) == [2, 0]
    tube = TexVAE(TexVAEConfig(width=16, num_heads=2, enc_depth=3, dec_depth=3, window=4), in_channels=6)
    assert shifts(tube.enc_fine) == shifts(tube.dec_fine) == [0, 2, 0] and not len(tube.enc_coarse)


def test_a_unet2_export_from_before_the_shift_scheme_is_refused(tmp_path):
    cfg = TexVAEConfig(arch="unet2", width=16, num_heads=2, enc_depth=2, dec_depth=2, window=4)
    path = TexVAE(cfg, in_channels=6).save(tmp_path / "unet2.pt")
    TexVAE.load(path)  # today's export loads
    blob = torch.load(path, weights_only=True)
    del blob["config"]["window_shifts"]
    torch.save(blob, path)
    with pytest.raises(ValueError, match="train it again"):
        TexVAE.load(path)
    tube = TexVAE(TexVAEConfig(width=16, num_heads=2, enc_depth=1, dec_depth=1, window=4), in_channels=6)
    assert "window_shifts" not in tube.export_config()  # tube exports are unchanged
