"""StructVAE model: latent shapes, PSS teacher forcing, empty-output guard, seeded noise,
per-sample loss, ablation switches."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from synthetic import scene_coords

from earthcrafter.evaluation.voxel_metrics import coarsen
from earthcrafter.models.struct_vae import (
    StructVAE,
    StructVAEConfig,
    Upsample,
    guard_nonempty,
    struct_vae_loss,
)
from earthcrafter.sparse import SparseTensor

L = 32
TINY = dict(L=L, widths=(16, 16, 32, 32), head_dim=16, enc_depths=(1, 1, 1), dec_depths=(2, 2, 2),
            bottleneck_depth=1, cblock_every=2, pe_channels=24)


def _batch(*seeds: int) -> SparseTensor:
    coords = [torch.from_numpy(scene_coords(L, s, boxes=1)) for s in seeds]
    return SparseTensor.from_list([torch.ones(len(c), 1) for c in coords], coords)


@pytest.fixture(scope="module")
def model() -> StructVAE:
    torch.manual_seed(0)
    return StructVAE(StructVAEConfig(**TINY)).eval()


def test_config_validates_at_start():
    with pytest.raises(ValidationError, match="L=36 must be divisible by 8"):
        StructVAEConfig(L=36)
    with pytest.raises(ValidationError, match="head_dim"):
        StructVAEConfig(widths=(24, 32, 64, 64), head_dim=16)
    with pytest.raises(ValidationError, match="extra"):
        StructVAEConfig(latent_chanels=32)
    with pytest.raises(ValidationError, match="upsample"):
        StructVAEConfig(upsample="bilinear")


def test_encode_decode_shapes(model):
    x = _batch(0, 1)
    z = model.encode(x)
    assert z.feats.shape == (len(coarsen(x.coords, 8)), 32)  # c_s = 32 by default
    assert torch.equal(z.coords, coarsen(x.coords, 8))  # the latent grid is the L/8 occupancy
    assert int(z.coords[:, 1:].max()) < L // 8
    y = model.decode(z)
    assert y.batch_size == 2 and int(y.coords[:, 1:].max()) < L
    assert y.feats.shape == (len(y), 1) and bool((y.feats[:, 0] > 0).all())
    assert (y.counts() > 0).all()


def test_decode_never_returns_an_empty_sample(model):
    z = model.encode(_batch(0, 1))
    with torch.no_grad():
        for pss in model.pss:  # every child now predicts "empty"
            pss.head[1].bias.fill_(-1e4)
        try:
            y, levels = model.decode(z, return_levels=True)
        finally:
            for pss in model.pss:
                pss.head[1].bias.zero_()
    k = model.config.guard_topk
    assert y.counts().tolist() == [k, k]
    for lvl in levels:
        assert torch.bincount(lvl.candidates[lvl.keep][:, 0].long(), minlength=2).tolist() == [k, k]


def test_guard_only_touches_empty_samples():
    logits = torch.tensor([-1.0, 2.0, -3.0, -0.5, -2.0, -0.1])
    batch = torch.tensor([0, 0, 1, 1, 1, 1])
    keep = guard_nonempty(logits > 0, logits, batch, 3, k=2)
    assert keep.tolist() == [False, True, False, True, False, True]


def test_pss_teacher_forcing_returns_exactly_the_gt_children(model):
    x = _batch(2, 3)
    z = model.encode(x, sample=True)
    y, levels = model.decode(z, gt=x.coords, return_levels=True)
    assert torch.equal(y.coords, x.coords)
    parents = z.coords
    for lvl in levels:
        assert len(lvl.candidates) == 8 * len(parents)  # every parent's 8 children
        assert torch.equal(coarsen(lvl.candidates, 2).unique(dim=0), parents)
        assert torch.equal(lvl.candidates[lvl.keep], coarsen(x.coords, lvl.stride))
        parents = lvl.candidates[lvl.keep]


def test_noise_depends_only_on_the_sample_seed(model):
    x = _batch(0, 1)
    mean, logvar = model.encode_posterior(x)
    both = model.reparameterize(mean, logvar, torch.tensor([11, 12]))
    off = mean.offsets_host()
    for b, seed in enumerate((11, 12)):
        single = model.encode_posterior(_batch(b))
        alone = model.reparameterize(single[0], single[1], torch.tensor([seed]))
        torch.testing.assert_close(both.feats[off[b] : off[b + 1]], alone.feats, rtol=1e-5, atol=1e-5)


def test_loss_is_a_mean_of_per_sample_losses(model):
    cfg = model.config
    torch.manual_seed(0)
    loss_pair, _ = struct_vae_loss(model(_batch(0, 1), seeds=torch.tensor([5, 6])), cfg)
    singles = [struct_vae_loss(model(_batch(s), seeds=torch.tensor([seed])), cfg)[0] for s, seed in ((0, 5), (1, 6))]
    torch.testing.assert_close(loss_pair, (singles[0] + singles[1]) / 2, rtol=1e-4, atol=1e-5)


def test_pixel_shuffle_splits_channels_naive_copies():
    x = SparseTensor(torch.randn(3, 8), torch.tensor([[0, 0, 0, 0], [0, 1, 0, 0], [1, 0, 0, 1]], dtype=torch.int32))
    naive, shuffle = Upsample(8, 4, "naive"), Upsample(8, 4, "pixel_shuffle")
    for up in (naive, shuffle):
        y = up(x)
        assert len(y) == 24 and torch.equal(coarsen(y.coords, 2).unique(dim=0), x.coords)
    y = naive(x).feats.reshape(3, 8, 4)  # sorted children of one parent are contiguous here
    assert torch.equal(y, y[:, :1].expand_as(y))  # all 8 children identical: ambiguous
    y = shuffle(x).feats.reshape(3, 8, 4)
    assert not torch.allclose(y[:, 0], y[:, 1])


@pytest.mark.parametrize(
    "switches",
    [
        dict(arch="xcube_conv", upsample="naive", cblock_every=0, bottleneck_attn="window"),
        dict(upsample="naive", cblock_every=0, bottleneck_attn="window"),
        dict(upsample="pixel_shuffle", cblock_every=0, bottleneck_attn="window"),
        dict(upsample="pixel_shuffle", cblock_every=2, bottleneck_attn="window"),
        dict(upsample="pixel_shuffle", cblock_every=2, bottleneck_attn="full", train_prune="mixed", mix_prob=0.5),
        dict(upsample="pixel_shuffle", cblock_every=2, bottleneck_attn="full", latent_skip="cell"),
        dict(arch="xcube_conv", upsample="naive", cblock_every=0, bottleneck_attn="window", latent_skip="position"),
    ],
)
def test_every_ablation_trains_one_step(switches):
    torch.manual_seed(0)
    m = StructVAE(StructVAEConfig(**{**TINY, **switches})).train()
    loss, logs = struct_vae_loss(m(_batch(0), seeds=torch.tensor([0])), m.config)
    loss.backward()
    assert torch.isfinite(loss) and {"cls_s4", "cls_s2", "cls_s1", "kl"} <= logs.keys()
    grads = [p.grad for p in m.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)  # every parameter takes part (DDP needs no unused-param search)
    attn = [mod for mod in m.modules() if type(mod).__name__ == "SparseSelfAttention"]
    convs = [mod for mod in m.modules() if type(mod).__name__ == "SparseResBlock"]
    if switches.get("arch") == "xcube_conv":
        assert not attn and convs
    else:
        assert attn and bool(convs) == bool(switches["cblock_every"])


def test_ancestor_rows_match_a_dictionary_lookup():
    from earthcrafter.models.struct_vae import ancestor_rows

    g = torch.Generator().manual_seed(0)
    fine = torch.cat([torch.zeros(300, 1, dtype=torch.int32).random_(0, 2, generator=g),
                      torch.randint(0, 32, (300, 3), generator=g, dtype=torch.int32)], 1)
    for factor in (2, 4, 8):
        latents = coarsen(fine, factor)
        index = {tuple(r): i for i, r in enumerate(latents.tolist())}
        expect = [index[(b, x // factor, y // factor, z // factor)] for b, x, y, z in fine.tolist()]
        assert ancestor_rows(fine, latents, factor).tolist() == expect
    with pytest.raises(ValueError, match="no ancestor"):
        ancestor_rows(fine, coarsen(fine, 8)[1:], 8)



def test_windowed_bottleneck_covering_the_grid_is_full_attention():
    """At L=32 the L/8 grid is 4 cells wide: a 4-cell window sees all of it (same outputs as full
    attention with the same weights), a 2-cell window does not."""
    x = _batch(0)
    outs = {}
    for name, kw in {"full": dict(bottleneck_attn="full"), "w4": dict(bottleneck_attn="window", bottleneck_window=4),
                     "w2": dict(bottleneck_attn="window", bottleneck_window=2)}.items():
        torch.manual_seed(0)
        m = StructVAE(StructVAEConfig(**{**TINY, "bottleneck_depth": 1, **kw})).eval()
        with torch.no_grad():
            outs[name] = m.encode(x).feats
    torch.testing.assert_close(outs["w4"], outs["full"])
    assert not torch.allclose(outs["w2"], outs["full"], atol=1e-4)
