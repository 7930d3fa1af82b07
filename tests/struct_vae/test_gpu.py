"""CUDA paths: bf16 autocast training through the trainer, and checkpoints that load on CPU."""

from __future__ import annotations

import pytest
import torch
from synthetic import memory_tiles

from earthcrafter.sparse import SparseTensor
from earthcrafter.training.structvae import load_structvae, train_structvae

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

TINY = dict(L=32, widths=(16, 16, 32, 32), head_dim=16, enc_depths=(1, 1, 1), dec_depths=(1, 1, 1),
            bottleneck_depth=1, cblock_every=1, pe_channels=24)


def test_bf16_cuda_training_exports_weights_that_decode_on_cpu(tmp_path):
    man, read = memory_tiles(tmp_path, 32, 2, 1)
    cfg = {"output_dir": str(tmp_path / "out"), "device": "cuda", "mlflow": False, "model": TINY,
           "trainer": dict(steps=3, batch_size=2, lr=1e-3, warmup_steps=0, precision="bf16", progress=False)}
    m = train_structvae(man, cfg, read_tile=read)
    assert 0.0 <= m["acc"] <= 1.0
    model = load_structvae(tmp_path / "out" / "model.pt", map_location="cpu")
    c = torch.from_numpy(read(man.at[2, "path"]).coords)
    x = SparseTensor.from_list([torch.ones(len(c), 1)], [c])
    y_cpu = model.decode(model.encode(x))
    gpu = model.to("cuda")
    y_gpu = gpu.decode(gpu.encode(x.to("cuda")))
    assert len(y_cpu) > 0 and len(y_gpu) > 0
    # same weights, fp32 on both devices: the decoded sets agree up to logits at the threshold
    a = {tuple(r) for r in y_cpu.coords.tolist()}
    b = {tuple(r) for r in y_gpu.coords.cpu().tolist()}
    assert len(a ^ b) <= 0.01 * len(a | b)


def test_trainer_logs_cuda_peak_memory_and_throughput(tmp_path):
    from earthcrafter.training import Trainer, TrainerConfig
    from earthcrafter.training.structvae import StructVAERunConfig, StructVAETask, build_datasets

    man, read = memory_tiles(tmp_path, 32, 2, 1)
    cfg = StructVAERunConfig(model=TINY)
    train, val = build_datasets(man, cfg, read)
    trainer = Trainer(StructVAETask(cfg.model), TrainerConfig(steps=2, batch_size=2, log_every=1, warmup_steps=0,
                      progress=False, figures=False), train, val, out_dir=tmp_path / "out", device="cuda", mlflow=False)
    trainer.fit()
    last = trainer.history["train"][-1]
    assert last["peak_mem_gb"] > 0 and last["voxels_per_s"] > 0 and last["samples_per_s"] > 0
    assert next(trainer.model.parameters()).is_cuda
