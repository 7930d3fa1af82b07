"""TexVAE on CUDA: the same step as on CPU, gsplat against the torch rasteriser, bf16 autocast."""

from __future__ import annotations

import pytest
import torch

from earthcrafter.models.tex_vae import TexVAEConfig
from earthcrafter.models.tex_vae_data import TexVAEDataConfig, TexVAEDataset
from earthcrafter.models.tex_vae_task import RenderConfig, TexVAELossConfig, TexVAETask
from earthcrafter.render.rasterize_gsplat import gsplat_available
from earthcrafter.training.sampler import Draw

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def _task_and_batch(manifest, backend: str):
    data = TexVAEDataConfig(view_width=32, views_per_sample=0, flip=False, rotate=False, background="black")
    ds = TexVAEDataset(manifest, split="train", features="f_feat", config=data, augment=True)
    task = TexVAETask(TexVAEConfig(width=32, num_heads=2, enc_depth=2, dec_depth=2, window=4), ds.layout_channels(),
                      TexVAELossConfig(lpips_vgg=0, lpips_alex=0), RenderConfig(backend=backend))  # fmt: skip
    return task, task.collate([ds[Draw(0, (0, 0))]])


def test_cuda_step_matches_cpu(synth_manifest):
    task, batch = _task_and_batch(synth_manifest, "torch")
    torch.manual_seed(0)
    model = task.build_model()
    with torch.no_grad():
        model.head.proj.weight.normal_(0, 0.1)
    cpu = task.validate(model.eval(), [batch])
    gpu = task.validate(model.cuda().eval(), [batch.to("cuda")])
    assert abs(cpu["psnr"] - gpu["psnr"]) < 0.05, (cpu, gpu)


@pytest.mark.skipif(not gsplat_available(), reason="needs gsplat")
def test_gsplat_training_step_agrees_with_torch_backend(synth_manifest):
    results = {}
    for backend in ("torch", "gsplat"):
        task, batch = _task_and_batch(synth_manifest, backend)
        torch.manual_seed(0)
        model = task.build_model().cuda()
        with torch.no_grad():
            model.head.proj.weight.normal_(0, 0.1)
        results[backend] = task.validate(model.eval(), [batch.to("cuda")])
    assert abs(results["torch"]["psnr"] - results["gsplat"]["psnr"]) < 0.5, results


def test_bf16_training_step_is_finite_and_learns(synth_manifest):
    task, batch = _task_and_batch(synth_manifest, "auto")
    torch.manual_seed(0)
    model = task.build_model().cuda()
    batch = batch.to("cuda")
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    first = None
    for _ in range(15):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss, logs = task.training_step(model, batch)
        assert torch.isfinite(loss)
        first = first if first is not None else float(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.8 * first
