"""Norms, embeddings, attention modules and residual blocks."""

import math

import pytest
import torch
import torch.nn as nn
from sparse_testing import DEVICES, assert_close, random_sparse

from earthcrafter.sparse import (
    LayerNorm32,
    LearnedPosEmbed3D,
    MultiHeadRMSNorm,
    RotaryEmbedding3D,
    SinusoidalPosEmbed3D,
    SparseCrossAttention,
    SparseGroupNorm,
    SparseResBlock,
    SparseSelfAttention,
    SparseTensor,
    SparseTransformerBlock,
    TimestepEmbedder,
    timestep_embedding,
    use_backends,
)


# ------------------------------------------------------------------------ norms
@pytest.mark.parametrize("device", DEVICES)
def test_group_norm_matches_nn_groupnorm_per_sample(device):
    x = random_sparse(sizes=(40, 1, 0, 25), extent=6, channels=8, device=device, seed=1)
    x = x.replace(x.feats * 3 + 5)  # large mean: the two-pass variance must stay exact
    gn = SparseGroupNorm(4, 8).to(device).double()
    nn.init.normal_(gn.weight)
    nn.init.normal_(gn.bias)
    ref = nn.GroupNorm(4, 8).to(device).double()
    ref.load_state_dict(gn.state_dict())
    feats = x.feats.clone().requires_grad_()
    out = gn(x.replace(feats)).feats
    probe = torch.randn_like(out)
    (grad,) = torch.autograd.grad((out * probe).sum(), feats)
    off = x.offsets_host()
    for b in range(x.batch_size):
        rows = slice(off[b], off[b + 1])
        if off[b] == off[b + 1]:
            continue
        fb = x.feats[rows].clone().requires_grad_()
        want = ref(fb.T[None])[0].T
        (want_grad,) = torch.autograd.grad((want * probe[rows]).sum(), fb)
        assert_close(out[rows], want, torch.float64)
        assert_close(grad[rows], want_grad, torch.float64, factor=1e3)


def test_layer_norm32_and_rms_norm():
    x = torch.randn(10, 16, dtype=torch.float16) * 100
    ln = LayerNorm32(16)
    out = ln(x)
    assert out.dtype == torch.float16
    ref = nn.functional.layer_norm(x.float(), (16,))
    assert_close(out, ref, torch.float16)
    rms = MultiHeadRMSNorm(4, 3)
    nn.init.normal_(rms.gamma)
    q = torch.randn(7, 3, 4)
    want = q / q.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt() * rms.gamma
    assert_close(rms(q), want, torch.float32)


# ------------------------------------------------------------------- embeddings
def test_sinusoidal_embedding_formula_and_padding():
    pe = SinusoidalPosEmbed3D(20)  # 3 frequencies per axis, 2 channels of zero padding
    xyz = torch.tensor([[3, 0, 1023], [4, 0, 1023]])
    e = pe(xyz)
    assert e.shape == (2, 20) and bool((e[:, 18:] == 0).all())
    omega = 10000.0 ** (-torch.arange(3) / 3)
    assert torch.allclose(e[0, 0:3], torch.sin(3 * omega)) and torch.allclose(e[0, 3:6], torch.cos(3 * omega))
    assert torch.allclose(e[0, 12:15], torch.sin(1023 * omega), atol=1e-5)
    assert not torch.allclose(e[0], e[1])
    x = random_sparse(sizes=(3, 2), seed=2)
    assert torch.equal(pe(x), pe(x.coords[:, 1:]))


def test_learned_pos_embedding():
    pe = LearnedPosEmbed3D(8, resolution=16)
    xyz = torch.tensor([[1, 2, 3], [15, 0, 7]])
    want = pe.tables[0][xyz[:, 0]] + pe.tables[1][xyz[:, 1]] + pe.tables[2][xyz[:, 2]]
    assert torch.equal(pe(xyz), want)
    with pytest.raises(ValueError, match="outside"):
        pe(torch.tensor([[16, 0, 0]]))


def test_rope_scores_depend_only_on_relative_position():
    rope = RotaryEmbedding3D(head_dim=14)  # 12 rotated dims + 2 passed through
    q, k = torch.randn(2, 5, 3, 14, dtype=torch.float64).unbind(0)
    xyz = torch.randint(0, 500, (5, 3))
    shift = torch.tensor([17, 400, 3])
    q1, k1 = rope(q, k, xyz)
    q2, k2 = rope(q, k, xyz + shift)
    s1 = torch.einsum("nhd,mhd->hnm", q1, k1)
    s2 = torch.einsum("nhd,mhd->hnm", q2, k2)
    assert torch.allclose(s1, s2, atol=1e-9)
    assert torch.allclose(q1.norm(dim=-1), q.norm(dim=-1))  # rotations keep norms
    assert torch.equal(q1[..., 12:], q[..., 12:])
    q0, _ = rope(q, k, torch.zeros(5, 3))
    assert torch.allclose(q0, q)
    assert not torch.allclose(s1, torch.einsum("nhd,mhd->hnm", q, k))


def test_timestep_embedding():
    t = torch.tensor([0.0, 1.5, 999.0])
    e = timestep_embedding(t, 8)
    omega = torch.exp(-math.log(10000.0) * torch.arange(4) / 4)
    assert torch.allclose(e[:, :4], torch.cos(t[:, None] * omega))
    assert torch.allclose(e[:, 4:], torch.sin(t[:, None] * omega))
    assert timestep_embedding(t, 7).shape == (3, 7)
    emb = TimestepEmbedder(32, frequency_dim=16)
    out = emb(t)
    assert out.shape == (3, 32) and not torch.allclose(out[0], out[1])


# -------------------------------------------------------------- attention modules
def _manual_attention(module: SparseSelfAttention, x: SparseTensor, allowed: torch.Tensor) -> torch.Tensor:
    """Independent recomputation: qkv projection, per-head masked softmax, output projection."""
    n, h, d = len(x), module.num_heads, module.head_dim
    qkv = module.qkv(x.feats).reshape(n, 3, h, d)
    q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]
    s = torch.einsum("nhd,mhd->hnm", q, k) / math.sqrt(d)
    p = s.masked_fill(~allowed[None], float("-inf")).softmax(-1)
    return module.proj(torch.einsum("hnm,mhd->nhd", p, v).reshape(n, h * d))


@pytest.mark.parametrize("mode, shift", [("full", 0), ("window", 0), ("window", 2)])
def test_self_attention_module_matches_manual(mode, shift):
    x = random_sparse(sizes=(50, 1, 30), extent=8, channels=12, seed=3)
    attn = SparseSelfAttention(12, 3, attn_mode=mode, window_size=4, shift=shift).double()
    out = attn(x)
    cell = torch.div(x.coords[:, 1:].long() + shift, 4, rounding_mode="floor")
    same_b = x.coords[:, None, 0] == x.coords[None, :, 0]
    allowed = same_b if mode == "full" else same_b & (cell[:, None] == cell[None]).all(-1)
    assert_close(out.feats, _manual_attention(attn, x, allowed), torch.float64)
    assert ("window", 4, shift) in x.cache or mode == "full"


def test_rope_attention_is_translation_invariant_but_position_aware():
    x = random_sparse(sizes=(40, 30), extent=8, channels=12, seed=4)
    attn = SparseSelfAttention(12, 2, qk_norm=True, rope=True).double()
    moved = SparseTensor(x.feats, x.coords + torch.tensor([0, 100, 7, 900], dtype=torch.int32))
    assert_close(attn(moved).feats, attn(x).feats, torch.float64, factor=1e3)
    shuffled = SparseTensor(x.feats, torch.cat([x.coords[:, :1], x.coords[torch.randperm(70), 1:]], 1))
    assert not torch.allclose(attn(shuffled).feats, attn(x).feats, atol=1e-3)


def test_cross_attention_dense_context_with_mask_equals_sparse_context():
    x = random_sparse(sizes=(20, 0, 15), extent=6, channels=8, seed=5)
    ctx = torch.randn(3, 5, 6, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    xattn = SparseCrossAttention(8, 6, num_heads=2, qk_norm=True).double()
    out_dense = xattn(x, ctx, mask)
    ctx_sparse = SparseTensor(
        ctx[mask], torch.tensor([[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 2], [1, 0, 0, 0]], dtype=torch.int32), 3
    )
    out_sparse = xattn(x, ctx_sparse)
    assert_close(out_dense.feats, out_sparse.feats, torch.float64)
    # sample 2 has no context: its attention output is zero, so only the projection bias remains
    rows = x.coords[:, 0] == 2
    assert torch.allclose(out_dense.feats[rows], xattn.proj.bias.expand(int(rows.sum()), -1))


# ------------------------------------------------------------------------ blocks
def _perturb(module: nn.Module) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.1)


@pytest.mark.parametrize("mode, shift", [("full", 0), ("window", 2)])
def test_adaln_transformer_block_starts_as_identity(mode, shift):
    x = random_sparse(sizes=(30, 1, 20), extent=6, channels=16, seed=6)
    cond = torch.randn(3, 10, dtype=torch.float64)
    ctx = torch.randn(3, 4, 5, dtype=torch.float64)
    block = SparseTransformerBlock(
        16, 2, attn_mode=mode, window_size=4, shift=shift, qk_norm=True, rope=True,
        context_channels=5, cond_channels=10,
    ).double()
    assert torch.equal(block(x, cond, ctx).feats, x.feats)
    _perturb(block)
    out = block(x, cond, ctx).feats
    assert not torch.allclose(out, x.feats)
    out.square().sum().backward()
    missing = [n for n, p in block.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient reached {missing}"


def test_blocks_do_not_mix_batch_elements():
    """Running a batch equals running each sample alone (attention, norms, AdaLN, convs)."""
    x = random_sparse(sizes=(30, 1, 25), extent=6, channels=16, seed=7)
    cond = torch.randn(3, 8, dtype=torch.float64)
    torch.manual_seed(0)
    blocks = nn.ModuleList(
        [
            SparseTransformerBlock(16, 4, attn_mode="full", cond_channels=8),
            SparseTransformerBlock(16, 4, attn_mode="window", window_size=4, shift=2, cond_channels=8),
            SparseResBlock(16, 16, cond_channels=8, norm="group", num_groups=4),
        ]
    ).double()
    _perturb(blocks)

    def run(t, c):
        for blk in blocks:
            t = blk(t, c)
        return t.feats

    whole = run(x, cond)
    feats, coords = x.unbind()
    for b in range(3):
        alone = run(SparseTensor.from_list([feats[b]], [coords[b]]), cond[b : b + 1])
        off = x.offsets_host()
        assert_close(whole[off[b] : off[b + 1]], alone, torch.float64)


@pytest.mark.parametrize("norm", ["layer", "group"])
def test_res_block_identity_at_init_and_channel_change(norm):
    x = random_sparse(sizes=(30, 12), extent=6, channels=16, seed=8)
    block = SparseResBlock(16, norm=norm, num_groups=8).double()
    assert torch.equal(block(x).feats, x.feats)
    cond_block = SparseResBlock(16, cond_channels=4, norm=norm).double()
    assert torch.equal(cond_block(x, torch.randn(2, 4, dtype=torch.float64)).feats, x.feats)
    wide = SparseResBlock(16, 24, norm=norm).double()
    assert torch.allclose(wide(x).feats, wide.skip(x.feats))
    _perturb(wide)
    out = wide(x).feats
    out.sum().backward()
    assert wide.conv1.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="cond"):
        cond_block(x)


def test_blocks_under_bf16_autocast_cpu():
    x = random_sparse(sizes=(40, 20), extent=6, channels=16, dtype=torch.float32, seed=9)
    cond = torch.randn(2, 8)
    t = SparseTransformerBlock(16, 4, attn_mode="window", window_size=4, cond_channels=8)
    r = SparseResBlock(16, cond_channels=8)
    _perturb(t)
    _perturb(r)
    ref = r(t(x, cond), cond).feats
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = r(t(x, cond), cond).feats
    assert out.dtype == torch.float32  # the residual stream stays in fp32
    assert_close(out, ref, torch.bfloat16, factor=2)
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in t.parameters() if p.grad is not None)


def test_module_uses_selected_attention_backend():
    x = random_sparse(sizes=(25, 10), extent=5, channels=8, seed=10)
    attn = SparseSelfAttention(8, 2, attn_mode="window", window_size=3).double()
    with use_backends(attn="reference"):
        a = attn(x).feats
    with use_backends(attn="sdpa_padded"):
        b = attn(x).feats
    assert_close(a, b, torch.float64)
