import copy
import importlib.util
import textwrap

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from earthcrafter.features.base import ExtractorUnavailable
from earthcrafter.features.extractors import (
    EXTRACTORS,
    FLUX_VAE_CONFIG,
    DinoV2Config,
    DinoV2Extractor,
    FeaturesConfig,
    FluxVAEConfig,
    FluxVAEExtractor,
    build_extractor,
    flux_vae_from_config,
    register_extractor,
)
from ec_toy_scene import PoolExtractor

SMALL_FLUX = dict(block_out_channels=[16, 16, 32, 32], norm_num_groups=8)


def _img(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _to_x(img):
    return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 127.5 - 1


def test_image_pyramid_levels_are_encodings_of_the_downsampled_image():
    ex = PoolExtractor()
    img = _img(64, 64)
    out = ex(img)
    assert out.shape == (64, 64, 48)
    x = _to_x(img)
    for level, s in enumerate((1, 2, 4)):
        xs = x if s == 1 else F.interpolate(x, (64 // s, 64 // s), mode="bilinear", antialias=True, align_corners=False)
        lat = ex.encode(xs)[0].numpy()  # cells of 8 * s source pixels
        cell = 8 * s
        for y, xx in [(0, 0), (cell - 1, cell), (63, 63), (17, 40)]:
            np.testing.assert_allclose(out[y, xx, 16 * level : 16 * level + 16], lat[:, y // cell, xx // cell], rtol=1e-6)


def test_latent_pool_levels_average_the_full_resolution_latent():
    ex = PoolExtractor(hierarchy="latent_pool")
    img = _img(64, 64, 1)
    out = ex(img)
    lat = ex.encode(_to_x(img))[0].numpy()  # [16, 8, 8]
    np.testing.assert_allclose(out[0, 0, 16:32], lat[:, :2, :2].mean(axis=(1, 2)), rtol=1e-5)
    np.testing.assert_allclose(out[40, 5, 32:48], lat[:, 4:8, 0:4].mean(axis=(1, 2)), rtol=1e-5)


def test_odd_sizes_are_replicate_padded_to_the_encoder_stride():
    ex = PoolExtractor()
    img = _img(50, 37, 2)
    out = ex(img)
    assert out.shape == (50, 37, 48)
    padded = np.pad(img, ((0, 6), (0, 3), (0, 0)), mode="edge")
    lat = ex.encode(_to_x(padded))[0].numpy()
    np.testing.assert_allclose(out[49, 36, :16], lat[:, 6, 4], rtol=1e-6)
    np.testing.assert_allclose(out[9, 20, :16], lat[:, 1, 2], rtol=1e-6)


def test_published_flux_vae_config_builds_without_running():
    vae = flux_vae_from_config(device="meta")  # structure only: no weights, nothing run
    cfg = vae.config
    assert cfg.latent_channels == 16 and list(cfg.block_out_channels) == [128, 256, 512, 512]
    assert cfg.layers_per_block == 2 and cfg.norm_num_groups == 32
    assert not cfg.use_quant_conv and not cfg.use_post_quant_conv
    assert cfg.scaling_factor == pytest.approx(0.3611) and cfg.shift_factor == pytest.approx(0.1159)
    assert list(cfg.down_block_types) == ["DownEncoderBlock2D"] * 4
    assert vae.encoder.conv_out.out_channels == 32  # mean and log-variance of 16 channels
    assert 80e6 < sum(p.numel() for p in vae.parameters()) < 90e6


@pytest.fixture(scope="module")
def small_vae():
    torch.manual_seed(0)
    return flux_vae_from_config(**SMALL_FLUX).eval()


def test_flux_vae_gives_hierarchical_48_channel_features(small_vae):
    ex = FluxVAEExtractor(small_vae)
    img = _img(64, 48, 3)
    out = ex(img)
    assert out.shape == (64, 48, 48) and np.isfinite(out).all()
    with torch.no_grad():
        mean = small_vae.encode(_to_x(img)).latent_dist.mean[0].numpy()
    expected = (mean - 0.1159) * 0.3611
    np.testing.assert_allclose(out[13, 30, :16], expected[:, 1, 3], rtol=1e-4, atol=1e-5)
    raw = FluxVAEExtractor(small_vae, use_shift_scale=False)(img)
    np.testing.assert_allclose(raw[13, 30, :16], mean[:, 1, 3], rtol=1e-4, atol=1e-5)
    f1 = out[..., 16:32]
    assert np.array_equal(f1[:16, :16], np.broadcast_to(f1[0, 0], (16, 16, 16)))  # one 1/16 cell
    assert not np.allclose(f1[0, 0], out[0, 0, :16])


def test_flux_vae_loads_from_a_local_folder_through_the_registry(small_vae, tmp_path):
    small_vae.save_pretrained(tmp_path / "vae")
    cfg = FeaturesConfig(extractor="flux_vae", flux_vae=FluxVAEConfig(path=tmp_path))
    ex = build_extractor(cfg)
    img = _img(32, 40, 4)
    np.testing.assert_allclose(ex(img), FluxVAEExtractor(small_vae)(img), rtol=1e-5, atol=1e-6)


def test_flux_vae_missing_or_wrong_weights_give_clear_errors(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ExtractorUnavailable, match="nowhere"):
        build_extractor(FeaturesConfig(extractor="flux_vae", flux_vae=FluxVAEConfig(path=missing)))
    with pytest.raises(ExtractorUnavailable, match="not set"):
        build_extractor(FeaturesConfig(extractor="flux_vae"))
    from safetensors.torch import save_file

    bad = tmp_path / "ae.safetensors"
    save_file({"encoder.down.0.weight": torch.zeros(2)}, str(bad))
    with pytest.raises(ValueError, match="not a diffusers-format FLUX VAE"):
        FluxVAEExtractor.from_local(bad)


def test_flux_vae_loads_from_a_single_safetensors_file(small_vae, tmp_path, monkeypatch):
    from safetensors.torch import save_file

    monkeypatch.setitem(FLUX_VAE_CONFIG, "block_out_channels", SMALL_FLUX["block_out_channels"])
    monkeypatch.setitem(FLUX_VAE_CONFIG, "norm_num_groups", SMALL_FLUX["norm_num_groups"])
    path = tmp_path / "vae.safetensors"
    save_file({k: v.contiguous() for k, v in small_vae.state_dict().items()}, str(path))
    ex = FluxVAEExtractor.from_local(path)
    img = _img(40, 24, 7)
    np.testing.assert_allclose(ex(img), FluxVAEExtractor(small_vae)(img), rtol=1e-5, atol=1e-6)


HUBCONF = textwrap.dedent(
    """
    import torch.nn as nn

    class TinyViT(nn.Module):
        patch_size = 14
        embed_dim = 8

        def __init__(self):
            super().__init__()
            self.proj = nn.Conv2d(3, 8, 14, 14)
            self.blocks = nn.ModuleList([nn.Conv2d(8, 8, 1) for _ in range(3)])

        def get_intermediate_layers(self, x, n=1, reshape=False, norm=True):
            h, outs = self.proj(x), []
            for b in self.blocks:
                h = b(h)
                outs.append(h)
            return tuple(outs[-n:])

    def dinov2_vits14(pretrained=True):
        return TinyViT()
    """
)


def test_dinov2_from_a_local_hub_clone(tmp_path):
    (tmp_path / "hubconf.py").write_text(HUBCONF)
    spec = importlib.util.spec_from_file_location("fake_hub", tmp_path / "hubconf.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(1)
    ref = mod.TinyViT()
    torch.save(ref.state_dict(), tmp_path / "dinov2_vits14_pretrain.pth")

    ex = build_extractor(FeaturesConfig(extractor="dinov2", dinov2=DinoV2Config(path=tmp_path, n_last_blocks=2)))
    assert ex.parts == {"dino": 16} and ex.layout["f_rgb"] == slice(16, 31)
    img = _img(56, 42, 5)  # multiples of 14: no resize
    out = ex(img)
    assert out.shape == (56, 42, 16)
    x = (_to_x(img) + 1) / 2
    x = (x - torch.tensor([0.485, 0.456, 0.406])[:, None, None]) / torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    with torch.no_grad():
        last2 = ref.get_intermediate_layers(x, n=2)
    np.testing.assert_allclose(out[20, 30, :8], last2[0][0, :, 1, 2].numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out[55, 0, 8:], last2[1][0, :, 3, 0].numpy(), rtol=1e-4, atol=1e-5)


def test_dinov2_without_weights_is_a_catchable_skip(tmp_path):
    with pytest.raises(ExtractorUnavailable, match="skipped: DINOv2 weights not found at"):
        build_extractor(FeaturesConfig(extractor="dinov2", dinov2=DinoV2Config(path=tmp_path / "dinov2")))
    (tmp_path / "hubconf.py").write_text(HUBCONF)
    with pytest.raises(ExtractorUnavailable, match="skipped: DINOv2 weights not found"):
        DinoV2Extractor.from_local(DinoV2Config(path=tmp_path))


@pytest.mark.skipif(importlib.util.find_spec("transformers") is not None, reason="transformers is installed")
def test_dinov2_transformers_checkpoint_needs_the_package(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ExtractorUnavailable, match="transformers"):
        DinoV2Extractor.from_local(DinoV2Config(path=tmp_path))


def test_registry_and_config_validation():
    assert {"tiny_ae", "flux_vae", "dinov2"} <= set(EXTRACTORS)
    with pytest.raises(ValueError, match="unknown extractor 'nope'"):
        build_extractor(FeaturesConfig(extractor="nope"))
    with pytest.raises(ValueError, match="already registered"):
        register_extractor("tiny_ae")(lambda cfg: None)
    with pytest.raises(ExtractorUnavailable, match="tiny_ae weights not found"):
        build_extractor(FeaturesConfig())
    with pytest.raises(ValueError, match="extra"):
        FeaturesConfig(extractor="tiny_ae", bogus=1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_flux_vae_on_gpu_matches_cpu(small_vae, monkeypatch):
    # cuDNN convolutions default to TF32 on Ampere and later (~1e-3 relative per conv, accumulating
    # through the VAE): compared in full fp32, the tolerance checks the port, not the tensor cores
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    img = _img(64, 64, 6)
    cpu = FluxVAEExtractor(small_vae, device="cpu")(img)
    gpu = FluxVAEExtractor(copy.deepcopy(small_vae), device="cuda")(img)
    np.testing.assert_allclose(gpu, cpu, rtol=1e-3, atol=1e-3)
