"""Activation checkpointing: the same loss and gradients as without it, for less kept for the
backward pass; and the trainer switch trains to the same weights."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from earthcrafter.models.flow_unet import SparseFlowUNet
from earthcrafter.models.struct_vae import StructVAE, StructVAEConfig, struct_vae_loss
from earthcrafter.models.tex_fm import TexFMConfig
from earthcrafter.models.tex_vae import TexVAE, TexVAEConfig
from earthcrafter.semantics import NUM_CLASSES
from earthcrafter.sparse import SparseTensor, set_activation_checkpointing
from earthcrafter.training.synthetic import scene_coords

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "struct_vae"))
from synthetic import memory_tiles  # noqa: E402

L = 32
STRUCT = dict(L=L, widths=(16, 16, 32, 32), head_dim=16, enc_depths=(1, 1, 1), dec_depths=(2, 2, 2),
              bottleneck_depth=1, cblock_every=2, pe_channels=24)  # fmt: skip


def _voxels(channels: int = 1) -> SparseTensor:
    coords = [torch.from_numpy(scene_coords(L, s, boxes=1)) for s in (0, 1)]
    g = torch.Generator().manual_seed(0)
    return SparseTensor.from_list([torch.randn(len(c), channels, generator=g) for c in coords], coords)


def _structvae():
    torch.manual_seed(0)
    net, x = StructVAE(StructVAEConfig(**STRUCT)), _voxels()
    x = x.replace(torch.ones_like(x.feats))
    return net, lambda: struct_vae_loss(net(x, seeds=torch.tensor([0, 1])), net.config)[0]


def _texvae():
    torch.manual_seed(0)
    net, x = TexVAE(TexVAEConfig(width=32, num_heads=2, enc_depth=2, dec_depth=2, window=4), 66), _voxels(66)

    def loss():
        mean, logvar = net.encode_posterior(x)
        return net.decode_features(mean).feats.square().mean() + logvar.feats.square().mean()

    return net, loss


def _flow_unet():
    torch.manual_seed(0)
    cfg = TexFMConfig(width=32, num_heads=2, window=4, layout_grid=4, layout_stride=8, arch="unet",
                      unet_widths=[16, 32, 32], unet_depths=[1, 1, 1])  # fmt: skip
    net, x = SparseFlowUNet(cfg, 8, 8), _voxels(8)
    layout = torch.rand(2, 4, 4, NUM_CLASSES, generator=torch.Generator().manual_seed(1))
    return net, lambda: net(x, torch.tensor([0.3, 0.7]), layout).feats.square().mean()


def _loss_grads_and_kept(net, loss_fn) -> tuple[float, dict[str, torch.Tensor], int]:
    """Loss, gradients, and the bytes autograd kept for the backward pass outside checkpointed blocks."""
    kept = 0

    def pack(t):
        nonlocal kept
        kept += t.numel() * t.element_size()
        return t

    net.zero_grad(set_to_none=True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_fn()
    loss.backward()
    return float(loss.detach()), {k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None}, kept


@pytest.mark.parametrize("build", [_structvae, _texvae, _flow_unet], ids=["structvae", "texvae", "flow_unet"])
def test_same_loss_and_gradients_for_less_kept_memory(build):
    net, loss_fn = build()
    net.train()
    assert set_activation_checkpointing(net, False) > 0
    loss, grads, kept = _loss_grads_and_kept(net, loss_fn)
    set_activation_checkpointing(net, True)
    loss_ck, grads_ck, kept_ck = _loss_grads_and_kept(net, loss_fn)
    assert loss_ck == pytest.approx(loss, rel=1e-6)
    assert grads and grads_ck.keys() == grads.keys()
    for k in grads:
        torch.testing.assert_close(grads_ck[k], grads[k], rtol=1e-4, atol=1e-6, msg=k)
    assert kept_ck < 0.5 * kept, (kept_ck, kept)


def test_no_recomputation_without_gradients_or_in_eval_mode(monkeypatch):
    import earthcrafter.sparse.blocks as blocks

    net, loss_fn = _structvae()
    set_activation_checkpointing(net, True)
    calls = []
    monkeypatch.setattr(blocks, "checkpoint", lambda fn, *a, use_reentrant, **kw: calls.append(1) or fn(*a, **kw))
    with torch.no_grad():
        loss_fn()  # training mode, no gradients
    net.eval()
    loss_fn()  # gradients, eval mode
    assert not calls
    net.train()
    loss_fn()
    assert len(calls) == sum(isinstance(m, blocks.CheckpointedBlock) for m in net.modules() if m.training)


def test_trainer_switch_trains_to_the_same_weights(tmp_path):
    from earthcrafter.training.structvae import load_structvae, train_structvae

    man, read = memory_tiles(tmp_path, L, 2, 1)
    weights = {}
    for on in (False, True):
        cfg = {"output_dir": str(tmp_path / f"out{on}"), "report_dir": str(tmp_path / "report"), "device": "cpu",
               "mlflow": False, "model": STRUCT, "data": {"max_voxels": 500},
               "trainer": dict(steps=3, batch_size=2, lr=1e-3, warmup_steps=0, log_every=1, progress=False,
                               figures=False, activation_checkpointing=on)}  # fmt: skip
        train_structvae(man, cfg, read_tile=read)
        weights[on] = load_structvae(tmp_path / f"out{on}" / "model.pt").state_dict()
    for k, v in weights[False].items():
        torch.testing.assert_close(weights[True][k], v, rtol=1e-4, atol=1e-6, msg=k)
