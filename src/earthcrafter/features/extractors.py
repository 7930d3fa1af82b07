"""Image feature extractors, chosen by name from one registry.

=========  ===============================================  ==========================
name       model                                            image channels
=========  ===============================================  ==========================
tiny_ae    :class:`~earthcrafter.features.tiny_ae.TinyAE`   f0, f1, f2: 3 x 16 = 48
           trained on the dataset's frames (offline default)
flux_vae   FLUX.1 VAE encoder (diffusers ``AutoencoderKL``)  f0, f1, f2: 3 x 16 = 48
           from a local folder or file; latent *mean*,
           optionally ``(mean - 0.1159) * 0.3611``
dinov2     DINOv2 patch tokens (torch.hub local clone +      ``dino``: embed_dim x
           weights, or a ``transformers`` checkpoint dir),   ``n_last_blocks``
           nearest-resized to pixels (paper ablation TexA)   (ViT-S/14: 384, x2 = 768)
=========  ===============================================  ==========================

The full per-pixel map appends f_rgb (15) and f_n (3): see :func:`frame_features`.
A missing weight file or package raises :class:`ExtractorUnavailable`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from earthcrafter.features.base import (
    ExtractorUnavailable,
    Hierarchy,
    ImageFeatureExtractor,
    LatentPyramidExtractor,
    nearest_upsample,
    resolve_device,
    rgb_to_tensor,
)
from earthcrafter.features.tiny_ae import TinyAE, load_tiny_ae

log = logging.getLogger(__name__)

# The published FLUX.1 VAE (black-forest-labs/FLUX.1-dev, subfolder "vae") as diffusers AutoencoderKL kwargs.
FLUX_VAE_CONFIG: dict = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 16,
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "act_fn": "silu",
    "sample_size": 1024,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
    "mid_block_add_attention": True,
    "force_upcast": True,
    "scaling_factor": 0.3611,
    "shift_factor": 0.1159,
}
FLUX_SHIFT, FLUX_SCALE = 0.1159, 0.3611


# --------------------------------------------------------------------------- configs

class TinyAEExtractorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    weights_path: Path | None = None


class FluxVAEConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: Path | None = Field(None, description="diffusers folder (model root or its vae/) or a .safetensors file")
    subfolder: str | None = "vae"
    use_shift_scale: bool = True


class DinoV2Config(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: Path | None = Field(None, description="local torch.hub clone of dinov2 or a transformers checkpoint dir")
    model: str = "dinov2_vits14"
    weights_file: Path | None = Field(None, description="hub weights (.pth); default: <path>/<model>*.pth")
    n_last_blocks: int = Field(1, ge=1, description="concatenate the patch tokens of the last k blocks")


class FeaturesConfig(BaseModel):
    """Which extractor builds f0-f2 and how."""

    model_config = ConfigDict(extra="forbid")
    extractor: str = "tiny_ae"
    hierarchy: Hierarchy = "image_pyramid"
    device: str = "cpu"
    tiny_ae: TinyAEExtractorConfig = TinyAEExtractorConfig()
    flux_vae: FluxVAEConfig = FluxVAEConfig()
    dinov2: DinoV2Config = DinoV2Config()


# --------------------------------------------------------------------------- registry

ExtractorFactory = Callable[[FeaturesConfig], ImageFeatureExtractor]
EXTRACTORS: dict[str, ExtractorFactory] = {}


def register_extractor(name: str) -> Callable[[ExtractorFactory], ExtractorFactory]:
    def deco(factory: ExtractorFactory) -> ExtractorFactory:
        if name in EXTRACTORS:
            raise ValueError(f"feature extractor {name!r} is already registered")
        EXTRACTORS[name] = factory
        return factory

    return deco


def build_extractor(cfg: FeaturesConfig) -> ImageFeatureExtractor:
    """The extractor ``cfg.extractor`` (raises :class:`ExtractorUnavailable` when its weights are missing)."""
    if cfg.extractor not in EXTRACTORS:
        raise ValueError(f"features.extractor: unknown extractor {cfg.extractor!r}; known: {sorted(EXTRACTORS)}")
    return EXTRACTORS[cfg.extractor](cfg)


# --------------------------------------------------------------------------- tiny_ae

class TinyAEExtractor(LatentPyramidExtractor):
    name = "tiny_ae"

    def __init__(self, model: TinyAE, hierarchy: Hierarchy = "image_pyramid", device: str = "cpu"):
        self.latent_channels = model.cfg.latent_channels
        super().__init__(hierarchy, device)
        self.model = model.to(self.device).eval()

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode(x)


@register_extractor("tiny_ae")
def _build_tiny_ae(cfg: FeaturesConfig) -> TinyAEExtractor:
    path = cfg.tiny_ae.weights_path
    if path is None or not Path(path).is_file():
        raise ExtractorUnavailable(
            f"tiny_ae weights not found at {path}: train them with train_tiny_ae() and save_tiny_ae(), "
            "then set features.tiny_ae.weights_path"
        )
    return TinyAEExtractor(load_tiny_ae(path), cfg.hierarchy, cfg.device)


# --------------------------------------------------------------------------- flux_vae

def flux_vae_from_config(device: str | torch.device | None = None, **overrides):
    """A FLUX-VAE-shaped ``AutoencoderKL`` with random weights (``overrides`` shrink it for tests).
    ``device="meta"`` builds the structure only (no memory, no initialisation)."""
    from diffusers import AutoencoderKL  # heavy import, only when used

    with torch.device(device or "cpu"):
        return AutoencoderKL(**{**FLUX_VAE_CONFIG, **overrides})


class FluxVAEExtractor(LatentPyramidExtractor):
    """FLUX VAE encoder features; the latent mean, shifted and scaled as FLUX does by default."""

    name = "flux_vae"

    def __init__(self, vae, hierarchy: Hierarchy = "image_pyramid", device: str = "cpu", use_shift_scale: bool = True):
        self.latent_channels = int(vae.config.latent_channels)
        super().__init__(hierarchy, device)
        self.downsample = 2 ** (len(vae.config.block_out_channels) - 1)
        self.vae = vae.to(self.device).eval()
        self.use_shift_scale = use_shift_scale
        self.shift = float(getattr(vae.config, "shift_factor", None) or FLUX_SHIFT)
        self.scale = float(getattr(vae.config, "scaling_factor", None) or FLUX_SCALE)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        mean = self.vae.encode(x).latent_dist.mean
        return (mean - self.shift) * self.scale if self.use_shift_scale else mean

    @classmethod
    def from_local(cls, path, subfolder: str | None = "vae", **kwargs) -> "FluxVAEExtractor":
        return cls(load_flux_vae(path, subfolder), **kwargs)


def load_flux_vae(path, subfolder: str | None = "vae"):
    """Load the FLUX VAE from a local diffusers folder (``path/<subfolder>/config.json`` or
    ``path/config.json``) or a diffusers-format ``.safetensors`` file. Never downloads."""
    from diffusers import AutoencoderKL

    if path is None:
        raise ExtractorUnavailable("FLUX VAE weights not found: features.flux_vae.path is not set")
    path = Path(path)
    if path.is_file():
        return _flux_vae_from_file(path)
    candidates = ([path / subfolder] if subfolder else []) + [path]
    for folder in candidates:
        if (folder / "config.json").is_file():
            sub = subfolder if folder != path else None
            try:
                return AutoencoderKL.from_pretrained(str(path), subfolder=sub, local_files_only=True)
            except (OSError, ValueError) as e:
                raise ValueError(f"{folder}: cannot load the FLUX VAE ({e})") from e
    looked = ", ".join(str(c / "config.json") for c in candidates)
    raise ExtractorUnavailable(f"FLUX VAE weights not found at {path} (looked for {looked})")


def _flux_vae_from_file(path: Path):
    from safetensors.torch import load_file

    if path.suffix == ".safetensors":
        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    vae = flux_vae_from_config(device="meta")
    expected = set(vae.state_dict())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(
            f"{path}: not a diffusers-format FLUX VAE state dict ({len(missing)} missing keys, e.g. "
            f"{missing[:2]}; {len(unexpected)} unexpected, e.g. {unexpected[:2]}); convert original "
            "checkpoints with diffusers' conversion scripts first"
        )
    vae.load_state_dict(state, assign=True)
    return vae


@register_extractor("flux_vae")
def _build_flux_vae(cfg: FeaturesConfig) -> FluxVAEExtractor:
    f = cfg.flux_vae
    return FluxVAEExtractor(load_flux_vae(f.path, f.subfolder), cfg.hierarchy, cfg.device, f.use_shift_scale)


# --------------------------------------------------------------------------- dinov2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DinoV2Extractor(ImageFeatureExtractor):
    """DINOv2 patch features, ``embed_dim * n_last_blocks`` channels, nearest-resized to pixels.

    The image is resized so both sides are multiples of the patch size (14) before encoding.
    ``backend`` is ``"hub"`` (a model with ``get_intermediate_layers``, as in the dinov2 repo)
    or ``"transformers"`` (``Dinov2Model``).
    """

    name = "dinov2"

    def __init__(self, model, backend: Literal["hub", "transformers"], n_last_blocks: int = 1, device: str = "cpu"):
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.backend = backend
        self.n_last_blocks = n_last_blocks
        if backend == "hub":
            self.patch = int(getattr(model, "patch_size", 14))
            dim = int(model.embed_dim)
        else:
            self.patch = int(model.config.patch_size)
            dim = int(model.config.hidden_size)
        self.parts = {"dino": dim * n_last_blocks}

    @torch.no_grad()
    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        x = (rgb_to_tensor(rgb, self.device) + 1) / 2
        H, W = x.shape[-2:]
        h, w = (max(self.patch, round(s / self.patch) * self.patch) for s in (H, W))
        x = F.interpolate(x, (h, w), mode="bilinear", antialias=True, align_corners=False)
        mean = torch.tensor(IMAGENET_MEAN, device=self.device)[:, None, None]
        std = torch.tensor(IMAGENET_STD, device=self.device)[:, None, None]
        tokens = self._patch_tokens((x - mean) / std)  # [C, h/p, w/p]
        out = nearest_upsample(tokens, H, W, self.patch * H / h, self.patch * W / w)
        return out.permute(1, 2, 0).float().cpu().numpy()

    def _patch_tokens(self, x: torch.Tensor) -> torch.Tensor:
        gh, gw = x.shape[-2] // self.patch, x.shape[-1] // self.patch
        if self.backend == "hub":
            layers = self.model.get_intermediate_layers(x, n=self.n_last_blocks, reshape=True, norm=True)
            return torch.cat([t[0] for t in layers], dim=0)
        out = self.model(pixel_values=x, output_hidden_states=True)
        skip = 1 + int(getattr(self.model.config, "num_register_tokens", 0) or 0)
        maps = []
        for hs in out.hidden_states[-self.n_last_blocks :]:
            t = self.model.layernorm(hs)[0, skip:]
            maps.append(t.T.reshape(-1, gh, gw))
        return torch.cat(maps, dim=0)

    @classmethod
    def from_local(cls, cfg: DinoV2Config, device: str = "cpu") -> "DinoV2Extractor":
        path = cfg.path
        if path is None or not Path(path).exists():
            raise ExtractorUnavailable(f"skipped: DINOv2 weights not found at {path}")
        path = Path(path)
        if (path / "hubconf.py").is_file():
            return cls(_load_dino_hub(path, cfg), "hub", cfg.n_last_blocks, device)
        if (path / "config.json").is_file():
            try:
                from transformers import Dinov2Model
            except ImportError:
                raise ExtractorUnavailable(
                    f"skipped: DINOv2 checkpoint at {path} needs the 'transformers' package, which is not installed"
                ) from None
            model = Dinov2Model.from_pretrained(str(path), local_files_only=True)
            return cls(model, "transformers", cfg.n_last_blocks, device)
        raise ExtractorUnavailable(
            f"skipped: DINOv2 weights not found at {path} (expected a dinov2 hub clone with hubconf.py "
            "or a transformers checkpoint with config.json)"
        )


def _load_dino_hub(path: Path, cfg: DinoV2Config):
    weights = Path(cfg.weights_file) if cfg.weights_file else None
    if weights is None:
        found = sorted(path.glob(f"{cfg.model}*.pth"))
        weights = found[0] if found else None
    if weights is None or not weights.is_file():
        raise ExtractorUnavailable(f"skipped: DINOv2 weights not found at {weights or path / (cfg.model + '*.pth')}")
    model = torch.hub.load(str(path), cfg.model, source="local", pretrained=False)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise ValueError(f"{weights}: weights do not match hub model {cfg.model!r} ({e})") from e
    return model


@register_extractor("dinov2")
def _build_dinov2(cfg: FeaturesConfig) -> DinoV2Extractor:
    return DinoV2Extractor.from_local(cfg.dinov2, cfg.device)
