"""StructFM on CUDA: bf16 training of both stages and the generation preview on the GPU."""

from __future__ import annotations

import math

import pytest
import torch

from earthcrafter.training.structfm import train_structfm

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("fine", [{}, {"fine_arch": "unet", "unet_widths": [16, 32, 32], "unet_depths": [1, 1, 1]}],
                         ids=["transformer", "unet"])  # fmt: skip
def test_bf16_cuda_training_and_preview(tmp_path, tiles32, fine):
    manifest, stats = tiles32
    tr = dict(steps=4, batch_size=2, lr=1e-3, precision="bf16", progress=False, val_batch_size=2)
    cfg = {"output_dir": str(tmp_path / "fm"), "device": "cuda", "mlflow": False, "preview_tiles": 1,
           "structvae_path": tiles32.structvae, "model": {"grid": 4, "width": 32, "depth": 2, "num_heads": 2, **fine},
           "sample": {"steps": 3}, "coarse": tr, "fine": tr}  # fmt: skip
    metrics = train_structfm(manifest, stats, cfg)
    assert all(math.isfinite(metrics[k]) for k in ("coarse/val_loss", "fine/val_loss", "gen_iou"))


def test_texfm_unet_on_cuda_matches_cpu():
    """The U-Net's pooling, unpooling and attention on the GPU give the CPU's velocities (fp32)."""
    import numpy as np

    from earthcrafter.models.tex_fm import TexFMConfig, build_texfm
    from earthcrafter.sparse import SparseTensor

    torch.manual_seed(0)
    net = build_texfm(TexFMConfig(arch="unet", width=32, num_heads=2, window=4, layout_grid=2, layout_stride=8,
                                  unet_widths=[16, 32, 32, 32], unet_depths=[1, 1, 1, 1]))  # fmt: skip
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    coords = torch.from_numpy(np.unique(np.random.default_rng(0).integers(0, 32, (400, 3)), axis=0))
    x = SparseTensor.from_list([torch.randn(len(coords), 8)], [coords])
    t, layout = torch.tensor([0.4]), torch.rand(1, 2, 2, 25)
    with torch.no_grad():
        cpu = net(x, t, layout).feats
        gpu = net.cuda()(x.to("cuda"), t.cuda(), layout.cuda()).feats.cpu()
    torch.testing.assert_close(gpu, cpu, rtol=2e-3, atol=2e-3)
