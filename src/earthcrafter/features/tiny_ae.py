"""A small convolutional autoencoder (16-channel latent at 1/8 resolution) trained on the
dataset's own frames: the offline stand-in for the FLUX VAE, with the same latent shape.

Train with :func:`train_tiny_ae`, store with :func:`save_tiny_ae` (atomic; state_dict + config),
reload with :func:`load_tiny_ae`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from earthcrafter.io.atomic import atomic_path
from earthcrafter.render.metrics import psnr as image_psnr
from earthcrafter.render.metrics import ssim as image_ssim

log = logging.getLogger(__name__)
FORMAT = "earthcrafter.tiny_ae/1"


class TinyAEConfig(BaseModel):
    """Architecture: widths ``width, 2*width, 4*width`` over three stride-2 stages."""

    model_config = ConfigDict(extra="forbid")
    width: int = Field(32, ge=4)
    latent_channels: int = Field(16, ge=1)


class TinyAETrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    steps: int = Field(300, ge=1)
    batch_size: int = Field(8, ge=1)
    crop: int = Field(48, ge=8, description="square training crop, multiple of 8")
    lr: float = Field(2e-3, gt=0)
    ssim_weight: float = Field(0.2, ge=0)
    val_crops: int = Field(32, ge=1, description="fixed held-out crops for PSNR")
    max_frames: int = Field(256, ge=1)
    seed: int = 0
    device: str = "cpu"
    num_threads: int | None = Field(
        1, ge=1, description="torch CPU threads while training (None: keep torch's); small convs run best on one"
    )


class TinyAE(nn.Module):
    """``encode``: [B, 3, H, W] in [-1, 1] (H, W multiples of 8) -> [B, C, H/8, W/8];
    ``decode``: latent -> image (about [-1, 1]; clamp for display).

    Three space-to-depth stages (PixelUnshuffle(2) + 3x3 conv) down, three depth-to-space
    stages (1x1 conv + PixelShuffle(2) + 3x3 conv) up: every conv runs at reduced resolution, so
    it trains in seconds on a CPU and starts close to a patch-wise linear code.
    """

    downsample = 8

    def __init__(self, cfg: TinyAEConfig | None = None):
        super().__init__()
        self.cfg = cfg or TinyAEConfig()
        w = self.cfg.width
        widths = [w, 2 * w, 4 * w]
        enc: list[nn.Module] = []
        cin = 3
        for cout in widths:
            enc += [nn.PixelUnshuffle(2), nn.Conv2d(4 * cin, cout, 3, padding=1), nn.SiLU()]
            cin = cout
        enc.append(nn.Conv2d(cin, self.cfg.latent_channels, 1))
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv2d(self.cfg.latent_channels, cin, 3, padding=1), nn.SiLU()]
        for cout in [2 * w, w]:
            dec += [nn.Conv2d(cin, 4 * cout, 1), nn.PixelShuffle(2), nn.SiLU()]
            dec += [nn.Conv2d(cout, cout, 3, padding=1), nn.SiLU()]
            cin = cout
        dec += [nn.Conv2d(cin, 12, 1), nn.PixelShuffle(2)]
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))


def _collect_frames(frames: Iterable, max_frames: int, crop: int) -> list[np.ndarray]:
    images = []
    for item in frames:
        rgb = getattr(item, "rgb", item)
        if not (isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3):
            raise ValueError(f"train_tiny_ae: frame #{len(images)} is not an RGB uint8 [H, W, 3] image")
        if min(rgb.shape[:2]) < crop:
            raise ValueError(f"train_tiny_ae: frame #{len(images)} of size {rgb.shape[:2]} is smaller than crop {crop}")
        images.append(rgb)
        if len(images) >= max_frames:
            break
    if not images:
        raise ValueError("train_tiny_ae: no frames to train on")
    return images


def _random_crops(images: list[np.ndarray], n: int, crop: int, rng: np.random.Generator) -> torch.Tensor:
    out = np.empty((n, crop, crop, 3), np.uint8)
    for i in range(n):
        img = images[rng.integers(len(images))]
        r = rng.integers(img.shape[0] - crop + 1)
        c = rng.integers(img.shape[1] - crop + 1)
        out[i] = img[r : r + crop, c : c + crop]
    return torch.from_numpy(out).permute(0, 3, 1, 2).float() / 127.5 - 1.0


@torch.no_grad()
def _unit_bhwc(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] in [-1, 1] -> [B, H, W, C] in [0, 1], the layout of ``earthcrafter.render.metrics``."""
    return ((x + 1) / 2).permute(0, 2, 3, 1)


def _val_psnr(model: TinyAE, val: torch.Tensor) -> float:
    model.eval()
    rec = model(val).clamp(-1, 1)
    model.train()
    return float(image_psnr(_unit_bhwc(rec), _unit_bhwc(val)))


def train_tiny_ae(
    frames: Iterable, cfg: TinyAETrainConfig | None = None, model_cfg: TinyAEConfig | None = None
) -> tuple[TinyAE, dict]:
    """Train a :class:`TinyAE` on random crops of ``frames`` (RGB arrays or Frame objects).

    Loss: L1 + ``ssim_weight`` * (1 - SSIM). Returns the model (eval mode) and metrics:
    ``psnr_before`` / ``psnr_after`` on fixed held-out crops, ``loss_first`` / ``loss_last``,
    ``steps``, ``seconds``.
    """
    cfg = cfg or TinyAETrainConfig()
    if cfg.crop % 8:
        raise ValueError(f"train_tiny_ae: crop must be a multiple of 8, got {cfg.crop}")
    images = _collect_frames(frames, cfg.max_frames, cfg.crop)
    threads = torch.get_num_threads()
    if cfg.num_threads is not None:
        torch.set_num_threads(cfg.num_threads)
    try:
        return _train(images, cfg, model_cfg)
    finally:
        torch.set_num_threads(threads)


def _train(images: list[np.ndarray], cfg: TinyAETrainConfig, model_cfg: TinyAEConfig | None) -> tuple[TinyAE, dict]:
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    device = torch.device(cfg.device)
    model = TinyAE(model_cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg.steps, eta_min=cfg.lr * 0.05)
    val = _random_crops(images, cfg.val_crops, cfg.crop, np.random.default_rng(cfg.seed + 10_000)).to(device)
    psnr_before = _val_psnr(model, val)
    t0 = time.perf_counter()
    losses = []
    for _ in tqdm(range(cfg.steps), desc="train tiny_ae", leave=False):
        x = _random_crops(images, cfg.batch_size, cfg.crop, rng).to(device)
        rec = model(x)
        loss = F.l1_loss(rec, x)
        if cfg.ssim_weight > 0:
            loss = loss + cfg.ssim_weight * (1 - image_ssim(_unit_bhwc(rec.clamp(-1, 1)), _unit_bhwc(x), window=7))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval()
    metrics = {
        "psnr_before": psnr_before,
        "psnr_after": _val_psnr(model, val),
        "loss_first": losses[0],
        "loss_last": float(np.mean(losses[-max(1, len(losses) // 10) :])),
        "steps": cfg.steps,
        "seconds": time.perf_counter() - t0,
        "num_frames": len(images),
    }
    m = metrics
    log.info("tiny_ae: PSNR %.2f -> %.2f dB in %.1f s", m["psnr_before"], m["psnr_after"], m["seconds"])
    return model, metrics


def save_tiny_ae(path: str | Path, model: TinyAE) -> None:
    """Write ``{"format", "config", "state_dict"}`` atomically with ``torch.save``."""
    payload = {
        "format": FORMAT,
        "config": model.cfg.model_dump(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_tiny_ae(path: str | Path, device: str = "cpu") -> TinyAE:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tiny_ae weights not found: {path}")
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # torch raises several types on corrupt files
        raise ValueError(f"{path}: not a readable tiny_ae checkpoint ({e})") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        got = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path}: field 'format' must be {FORMAT!r}, got {got!r}")
    model = TinyAE(TinyAEConfig(**payload["config"]))
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as e:
        raise ValueError(f"{path}: field 'state_dict' does not match its config ({e})") from e
    return model.to(device).eval()
