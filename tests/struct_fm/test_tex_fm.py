"""TexFM: overfits one tile's texture latents, trains and reloads through train_texfm, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from earthcrafter.models.tex_fm import TexFMConfig, build_texfm, generate_texture
from earthcrafter.semantics import NUM_CLASSES
from earthcrafter.sparse import SparseTensor
from earthcrafter.training.texfm import TexFMDataConfig, TexFMTask, load_texfm, train_texfm

TINY = dict(width=32, depth=2, num_heads=2, window=4, layout_grid=2, layout_stride=8)


@pytest.mark.timeout(180)
def test_overfits_one_tile():
    """Trained on one tile, sampling on its voxels returns its latents."""
    rng = np.random.default_rng(0)
    coords = torch.from_numpy(np.unique(rng.integers(0, 16, (60, 3)), axis=0))
    sample = {"tile_id": "t", "cells": coords, "latents": torch.from_numpy(rng.normal(0, 1, (len(coords), 8))).float(),
              "layout": torch.rand(2, 2, NUM_CLASSES), "seed": 0}  # fmt: skip
    cfg = TexFMConfig(**TINY, cond_dropout=0.0)
    task = TexFMTask(cfg, TexFMDataConfig())
    torch.manual_seed(0)
    net = task.build_model()
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    for step in range(700):
        loss, _ = task.training_step(net, task.collate([{**sample, "seed": step}] * 2))
        opt.zero_grad()
        loss.backward()
        opt.step()
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
