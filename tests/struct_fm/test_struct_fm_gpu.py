"""StructFM on CUDA: bf16 training of both stages and the generation preview on the GPU."""

from __future__ import annotations

import math

import pytest
import torch

from earthcrafter.training.structfm import train_structfm

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_bf16_cuda_training_and_preview(tmp_path, tiles32):
    manifest, stats = tiles32
    tr = dict(steps=4, batch_size=2, lr=1e-3, precision="bf16", progress=False, val_batch_size=2)
    cfg = {"output_dir": str(tmp_path / "fm"), "device": "cuda", "mlflow": False, "preview_tiles": 1,
           "structvae_path": tiles32.structvae, "model": {"grid": 4, "width": 32, "depth": 2, "num_heads": 2},
           "sample": {"steps": 3}, "coarse": tr, "fine": tr}  # fmt: skip
    metrics = train_structfm(manifest, stats, cfg)
    assert all(math.isfinite(metrics[k]) for k in ("coarse/val_loss", "fine/val_loss", "gen_iou"))
