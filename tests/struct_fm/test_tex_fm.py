"""TexFM: overfits one tile's texture latents, trains and reloads through train_texfm, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from earthcrafter.models.tex_fm import TexFMConfig, build_texfm, generate_texture
from earthcrafter.semantics import NUM_CLASSES
from earthcrafter.sparse import SparseTensor
from earthcrafter.training.texfm import TexFMDataConfig, TexFMTask, load_texfm, train_texfm
from flow_testing import fit_one_sample

TINY = dict(width=32, depth=2, num_heads=2, window=4, layout_grid=2, layout_stride=8)
UNET = dict(TINY, arch="unet", unet_widths=[16, 32, 32], unet_depths=[1, 1, 1])


@pytest.mark.timeout(180)
@pytest.mark.parametrize("arch", [TINY, UNET], ids=["transformer", "unet"])
def test_overfits_one_tile(arch):
    """Trained on one tile, sampling on its voxels returns its latents."""
    rng = np.random.default_rng(0)
    coords = torch.from_numpy(np.unique(rng.integers(0, 16, (60, 3)), axis=0))
    sample = {"tile_id": "t", "cells": coords, "latents": torch.from_numpy(rng.normal(0, 1, (len(coords), 8))).float(),
              "layout": torch.rand(2, 2, NUM_CLASSES), "seed": 0}  # fmt: skip
    cfg = TexFMConfig(**arch, cond_dropout=0.0)
    task = TexFMTask(cfg, TexFMDataConfig())
    torch.manual_seed(0)
    net = task.build_model()
    fit_one_sample(task, net, sample, 700, copies=2)
    net.eval()
    structure = SparseTensor.from_list([torch.zeros(len(coords), 1)], [coords])
    z = generate_texture(net, structure, sample["layout"][None], steps=20, cfg_strength=0.0,
                         generator=torch.Generator().manual_seed(3))  # fmt: skip
    order = np.lexsort(coords.numpy().T[::-1])
    err = torch.nn.functional.mse_loss(z.feats, sample["latents"][order]).item()
    assert err < 0.05, err


def test_train_texfm_saves_and_reloads(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "latents"))
    from latent_synth import save_models, write_tiles

    from earthcrafter.latents.cache import cache_latents

    manifest = write_tiles(tmp_path / "voxels", ["train"] * 3 + ["val"] * 2)
    struct, tex = save_models(tmp_path)
    table, stats, _, _ = cache_latents(manifest, {"structvae_path": str(struct), "texvae_path": str(tex),
                                                  "out_dir": str(tmp_path / "latents"), "progress": False,
                                                  "mlflow": False})  # fmt: skip
    tr = dict(steps=3, batch_size=2, lr=1e-3, progress=False, cpu_threads=1, val_batch_size=2)
    cfg = {"output_dir": str(tmp_path / "fm"), "mlflow": False, "texvae_path": str(tex), "preview_tiles": 1,
           "model": TINY, "sample": {"steps": 2}, "trainer": tr}  # fmt: skip
    metrics = train_texfm(table, stats, cfg)
    assert {"val_loss", "loss_t50", "gen_psnr", "recon_psnr"} <= metrics.keys()
    assert metrics["preview_tiles"] == 0  # these tiles have no views: logged, not shown
    net = load_texfm(tmp_path / "fm")
    ref = build_texfm(TexFMConfig(**TINY))
    ref.load_state_dict(torch.load(tmp_path / "fm" / "model.pt", weights_only=True)["state_dict"])
    x = SparseTensor.from_list([torch.randn(4, 8)], [torch.tensor([[0, 0, 0], [1, 2, 3], [15, 15, 15], [4, 4, 4]])])
    layout = torch.rand(1, 2, 2, NUM_CLASSES)
    torch.testing.assert_close(net(x, torch.tensor([0.4]), layout).feats, ref(x, torch.tensor([0.4]), layout).feats)

    with pytest.raises(ValueError, match="no 'tex' entry"):
        train_texfm(table, {"struct": stats["struct"]}, cfg)
    with pytest.raises(ValueError, match=r"layout_grid 2 x layout_stride 4 = 8 voxels, but the tiles have L = 16"):
        train_texfm(table, stats, {**cfg, "model": {**TINY, "layout_stride": 4}})  # refused before training
    with pytest.raises(FileNotFoundError, match="TexFM not found"):
        load_texfm(tmp_path)


def test_known_voxels_come_back_as_given():
    """Outpainting texture: pinned voxels keep their latents; the free ones are sampled beside them
    (and differ from sampling without them — the net attends across both)."""
    torch.manual_seed(0)
    net = build_texfm(TexFMConfig(**TINY)).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.2 * torch.randn_like(p))
    rng = np.random.default_rng(0)
    coords = torch.from_numpy(np.unique(rng.integers(0, 16, (80, 3)), axis=0))
    structure = SparseTensor.from_list([torch.zeros(len(coords), 1)], [coords])
    known = torch.from_numpy(rng.random(len(coords)) < 0.5)
    x0 = torch.randn(len(coords), 8)
    layout = torch.rand(1, 2, 2, NUM_CLASSES)
    z = generate_texture(net, structure, layout, steps=4, generator=torch.Generator().manual_seed(1), known=(known, x0),
                         resample=1)  # fmt: skip
    assert torch.equal(z.feats[known], x0[known])
    plain = generate_texture(net, structure, layout, steps=4, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(z.feats[~known], plain.feats[~known])


def _perturbed(net: torch.nn.Module) -> torch.nn.Module:
    """``net`` with every weight moved off its initialisation (the zero output, the identity-start
    blocks), so every path carries signal."""
    torch.manual_seed(5)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return net.eval()


def _set(n: int, extent: int, seed: int) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.unique(rng.integers(0, extent, (n, 3)), axis=0))


def test_unet_is_a_set_function_per_sample():
    """The U-Net's pooling and unpooling follow the voxels, not the rows: shuffling the rows of a
    sample shuffles its velocities, and a sample's velocities do not depend on its batch mates."""
    net = _perturbed(build_texfm(TexFMConfig(**UNET)))
    a, b = _set(90, 24, 0), _set(70, 24, 1)
    fa, fb = torch.randn(len(a), 8), torch.randn(len(b), 8)
    layout, t = torch.rand(2, 2, 2, NUM_CLASSES), torch.tensor([0.3, 0.8])
    with torch.no_grad():
        both = net(SparseTensor.from_list([fa, fb], [a, b]), t, layout)
        alone = net(SparseTensor.from_list([fa], [a]), t[:1], layout[:1])
        perm = torch.randperm(len(a), generator=torch.Generator().manual_seed(0))
        shuffled = net(SparseTensor(fa[perm], torch.cat([torch.zeros(len(a), 1, dtype=a.dtype), a[perm]], 1).int(), 1),
                       t[:1], layout[:1])  # fmt: skip
    rows_a = both.coords[:, 0] == 0
    torch.testing.assert_close(both.feats[rows_a], alone.feats, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(shuffled.feats, alone.feats[perm], rtol=1e-5, atol=1e-5)


def test_unet_middle_level_sees_the_whole_sample():
    """Full attention at the coarsest level: a voxel's velocity depends on a voxel 40 voxels away,
    which two one-resolution window blocks (4-voxel windows, shifted once) cannot reach."""
    coords = torch.cat([_set(40, 6, 2), torch.tensor([[45, 45, 45]])])
    feats = torch.randn(len(coords), 8)
    moved = feats.clone()
    moved[-1] += 3.0  # change only the far voxel
    t, layout = torch.tensor([0.5]), torch.rand(1, 2, 2, NUM_CLASSES)
    for arch, reaches in ((UNET, True), (TINY, False)):
        net = _perturbed(build_texfm(TexFMConfig(**arch)))
        with torch.no_grad():
            y0 = net(SparseTensor.from_list([feats], [coords]), t, layout).feats
            y1 = net(SparseTensor.from_list([moved], [coords]), t, layout).feats
        changed = (y0[:-1] - y1[:-1]).abs().max().item()
        assert (changed > 1e-4) == reaches, (arch.get("arch", "transformer"), changed)


@pytest.mark.parametrize("cond_blocks", [0, 2], ids=["mlp_condnet", "swin_condnet"])
def test_unet_starts_at_zero_velocity_and_trains_every_weight(cond_blocks):
    net = build_texfm(TexFMConfig(**UNET, cond_blocks=cond_blocks))
    coords = _set(120, 32, 3)
    x = SparseTensor.from_list([torch.randn(len(coords), 8)], [coords])
    layout = torch.rand(1, 2, 2, NUM_CLASSES)
    assert net(x, torch.tensor([0.5]), layout).feats.abs().max() == 0  # zero-initialised output
    net = _perturbed(net).train()
    net(x, torch.tensor([0.5]), layout).feats.square().sum().backward()
    silent = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().max() == 0]
    assert not silent, silent


@pytest.mark.parametrize("bad, message", [
    (dict(unet_widths=[16, 32], unet_depths=[1, 1, 1]), "must name the same levels"),
    (dict(unet_widths=[16], unet_depths=[1]), "at least 2"),
    (dict(unet_widths=[16, 30], unet_depths=[1, 1]), "width 30 must split"),
    (dict(unet_depths=[1, 0, 1]), "at least one block"),
])  # fmt: skip
def test_unet_config_is_checked(bad, message):
    with pytest.raises(ValueError, match=message):
        TexFMConfig(**{**UNET, **bad})


def test_layout_stride_must_tile_the_tiles():
    """The condition tokens sit at the centres of layout_stride-voxel columns: layout_grid columns of
    layout_stride voxels must make up L, or the tokens land in the wrong columns."""
    from earthcrafter.models.tex_fm import check_layout_stride

    check_layout_stride(TexFMConfig(layout_grid=8, layout_stride=8), 64)
    check_layout_stride(TexFMConfig(layout_grid=45, layout_stride=8), 360)
    check_layout_stride(TexFMConfig(layout_grid=4, layout_stride=8, condition="none"), 64)  # no tokens to place
    with pytest.raises(ValueError, match=r"layout_grid 4 x layout_stride 8 = 32 voxels, .* L = 64.*layout_stride 16"):
        check_layout_stride(TexFMConfig(layout_grid=4), 64)
    with pytest.raises(ValueError, match=r"x\.pt: TexFM layout_grid 7 .*a layout_grid that divides L"):
        check_layout_stride(TexFMConfig(layout_grid=7), 64, "x.pt: ")


def test_unet_levels_alternate_regular_and_shifted_windows():
    """The default U-Net (one block per side at 1/1, 1/2, 1/4): each window level has a regular
    block on the way down and a shifted one on the way up; deeper levels keep alternating."""
    net = build_texfm(TexFMConfig(arch="unet", window=8))
    assert [[b.attn.shift for b in d] + [b.attn.shift for b in u] for d, u in zip(net.down, net.up)] == [[0, 4]] * 3
    net = build_texfm(TexFMConfig(**{**UNET, "unet_depths": [3, 2, 1]}))
    shifts = [[b.attn.shift for b in d] + [b.attn.shift for b in u] for d, u in zip(net.down, net.up)]
    assert shifts == [[0, 2, 0, 2, 0, 2], [0, 2, 0, 2]]
    assert all(b.attn.shift == 0 and b.attn.attn_mode == "full" for b in net.middle)


def test_a_unet_export_from_before_the_shift_scheme_is_refused(tmp_path):
    """Its one-block levels would load and run with other windows than it was trained with."""
    from earthcrafter.models.flow_net import WINDOW_SHIFTS
    from earthcrafter.training.texfm import TexFMTask, load_texfm

    for cfg in (TexFMConfig(**UNET), TexFMConfig(arch="transformer")):
        exported = TexFMTask(cfg, None).export_config()
        blob = {"model": "texfm", "config": exported, "state_dict": build_texfm(cfg).state_dict()}
        torch.save(blob, tmp_path / "model.pt")
        load_texfm(tmp_path)  # today's export loads
        if cfg.arch == "unet":
            assert exported["window_shifts"] == WINDOW_SHIFTS
            del blob["config"]["window_shifts"]
            torch.save(blob, tmp_path / "model.pt")
            with pytest.raises(ValueError, match="window shifts.*train it again"):
                load_texfm(tmp_path)
        else:
            assert "window_shifts" not in exported  # transformer exports are unchanged
