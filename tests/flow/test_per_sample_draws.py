"""A sample's random draws and its share of the loss do not depend on the batch it lands in.

What makes W ranks (or micro-batches) train exactly as one process on the same global batch: the
StructVAE's and TexVAE's posterior noise and every draw of the flow step come from the sample's
own seed, and every loss is a mean per sample before the mean over samples.
"""

from __future__ import annotations

import torch

from earthcrafter.flow import RectifiedFlow
from earthcrafter.seeding import randn_per_sample, sample_generators
from earthcrafter.sparse import SparseTensor
from earthcrafter.training.flow_task import flow_training_step

SIZES = (3, 7, 1, 5)  # unequal voxel counts, as tiles have


def _batch(sizes=SIZES, width=4, seed=0) -> SparseTensor:
    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(n, width, generator=g) for n in sizes]
    coords = [torch.randint(0, 8, (n, 3), generator=g, dtype=torch.int32) for n in sizes]
    return SparseTensor.from_list(feats, coords)


def _split(x: SparseTensor, parts: list[list[int]]) -> list[SparseTensor]:
    feats, coords = x.unbind()
    return [SparseTensor.from_list([feats[b] for b in p], [coords[b] for b in p]) for p in parts]


def test_noise_of_a_sample_is_its_own():
    x, seeds = _batch(), torch.tensor([11, 12, 13, 14])
    whole = randn_per_sample(x, sample_generators(seeds, "cpu"))
    alone = [randn_per_sample(s, sample_generators(seeds[b : b + 1], "cpu"))
             for b, s in enumerate(_split(x, [[0], [1], [2], [3]]))]
    assert torch.equal(whole, torch.cat(alone))
    assert not torch.equal(whole[:3], randn_per_sample(_split(x, [[0]])[0], sample_generators([99], "cpu")))
    dense = torch.zeros(3, 2, 5)
    d = randn_per_sample(dense, sample_generators([1, 2, 3], "cpu"))
    assert torch.equal(d[1:], randn_per_sample(dense[1:], sample_generators([2, 3], "cpu")))


def test_flow_loss_is_a_mean_per_sample():
    flow = RectifiedFlow()
    x0, noise, pred = _batch(seed=0), _batch(seed=1), _batch(seed=2)
    loss = flow.loss(pred, x0, noise)
    one_each = [[b] for b in range(4)]
    per_sample = [flow.loss(p, a, n) for p, a, n in zip(*(_split(t, one_each) for t in (pred, x0, noise)))]
    torch.testing.assert_close(loss, torch.stack(per_sample).mean())
    # two ranks with two samples each: the mean of their losses is the loss of the global batch
    halves = [flow.loss(p, a, n) for p, a, n in zip(*(_split(t, [[0, 1], [2, 3]]) for t in (pred, x0, noise)))]
    torch.testing.assert_close(loss, torch.stack(halves).mean())
    # which a mean over all elements is not, with unequal voxel counts
    err = (pred.feats - flow.target(x0, noise).feats).pow(2)
    assert abs(float(err.mean()) - float(loss)) > 1e-3


def test_a_flow_step_split_over_ranks_draws_what_one_process_draws():
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, x, t, cond):
            seen.append((x.feats.clone(), t.clone(), cond.clone()))
            return x.replace(x.feats * 0.5)

    x0, seeds = _batch(), torch.tensor([5, 6, 7, 8])
    layout = torch.rand(4, 3, 3, 2) + 0.1
    flow = RectifiedFlow()
    whole, _ = flow_training_step(flow, Spy(), x0, layout, 0.5, "semantic", 0.0, seeds=seeds)
    parts = [[0, 1], [2, 3]]
    losses = [flow_training_step(flow, Spy(), part, layout[p], 0.5, "semantic", 0.0, seeds=seeds[p])[0]
              for part, p in zip(_split(x0, parts), parts)]
    (xw, tw, cw), (x1, t1, c1), (x2, t2, c2) = seen
    assert torch.equal(xw, torch.cat([x1, x2])) and torch.equal(tw, torch.cat([t1, t2]))
    assert torch.equal(cw, torch.cat([c1, c2]))  # the same samples lose their condition
    assert 0 < int((cw.flatten(1).abs().sum(1) == 0).sum()) < 4  # p = 0.5 did drop some, not all
    torch.testing.assert_close(whole, torch.stack(losses).mean())
    # other seeds, other draws
    flow_training_step(flow, Spy(), x0, layout, 0.5, "semantic", 0.0, seeds=seeds + 100)
    assert not torch.equal(seen[-1][1], tw)


def test_texvae_posterior_noise_is_per_sample():
    from earthcrafter.models.tex_vae import TexVAE, TexVAEConfig

    torch.manual_seed(0)
    model = TexVAE(TexVAEConfig(width=16, num_heads=2, enc_depth=1, dec_depth=1, window=4), in_channels=6).eval()
    with torch.no_grad():  # the zero-initialised output layers would hide what the latent carries
        for p in model.parameters():
            if not p.any():
                p.normal_(0, 0.1)
    x, seeds = _batch(width=6), torch.tensor([3, 4, 5, 6])
    with torch.no_grad():
        whole, _, _ = model(x, 1.0, sample=True, seeds=seeds)
        alone = [model(s, 1.0, sample=True, seeds=seeds[b : b + 1])[0][0]
                 for b, s in enumerate(_split(x, [[b] for b in range(4)]))]
        mean_only, _, _ = model(x, 1.0, sample=False)
    for w, a in zip(whole, alone):
        torch.testing.assert_close(w.means, a.means, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(w.sh, a.sh, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(whole[1].sh, mean_only[1].sh)  # the noise does reach the decoder


def test_rows_of_a_sample_draw_from_its_generator_in_any_order():
    from earthcrafter.seeding import rand_per_row

    batch_idx = torch.tensor([1, 0, 1, 2, 0, 1])
    u = rand_per_row(batch_idx, sample_generators([7, 8, 9], "cpu"))
    assert torch.equal(u[batch_idx == 1], torch.rand(3, generator=torch.Generator().manual_seed(8)))
    alone = rand_per_row(torch.zeros(3, dtype=torch.long), sample_generators([8], "cpu"))
    assert torch.equal(u[batch_idx == 1], alone)


def test_structvae_mixed_pruning_draws_per_sample():
    """train_prune: mixed keeps extra predicted children at random: the same ones for a sample
    whether it trains alone or in a batch."""
    from earthcrafter.models.struct_vae import StructVAE, StructVAEConfig
    from earthcrafter.training.synthetic import scene_coords

    torch.manual_seed(0)
    model = StructVAE(StructVAEConfig(L=32, widths=(16, 16, 32, 32), head_dim=16, enc_depths=(1, 1, 1),
                                      dec_depths=(1, 1, 1), bottleneck_depth=1, cblock_every=1, pe_channels=24,
                                      train_prune="mixed", mix_prob=0.5)).train()  # fmt: skip
    coords = [torch.from_numpy(scene_coords(32, s)).int() for s in (1, 2)]
    ones = [torch.ones(len(c), 1) for c in coords]
    seeds = torch.tensor([21, 22])
    both = model(SparseTensor.from_list(ones, coords), seeds=seeds)
    first = model(SparseTensor.from_list(ones[:1], coords[:1]), seeds=seeds[:1])
    for lb, l1 in zip(both.levels, first.levels):
        rows = lb.candidates[:, 0] == 0
        assert torch.equal(lb.candidates[rows], l1.candidates) and torch.equal(lb.keep[rows], l1.keep)
        assert (l1.keep & ~l1.targets).any() or lb is both.levels[0]  # predictions were mixed in
