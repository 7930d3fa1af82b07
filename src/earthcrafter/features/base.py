"""Per-pixel image features: the extractor interface, the hierarchical latent pyramid,
the cross-shaped RGB feature and the assembly of a frame's full feature map.

Hierarchy (the paper's ``[f0; f1; f2]`` "concatenated at scales 1/1, 1/2, 1/4"): we read the
scales as *image* scales. The encoder (downsampling factor 8) sees the image at full, half and
quarter resolution, so ``f0``, ``f1``, ``f2`` are latents with cells covering 8, 16 and 32 source
pixels; each is nearest-resized back to the image resolution. Encoding the smaller images gives
the coarser levels a wider receptive field, which is what makes them add information over ``f0``.
The alternative reading, average-pooling the one full-resolution latent by 2 and 4, is available
as ``hierarchy="latent_pool"`` (cheaper: one encoder pass).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from earthcrafter.features.layout import CROSS_OFFSETS, feature_layout, layout_channels
from earthcrafter.geometry.cameras import Camera

Hierarchy = Literal["image_pyramid", "latent_pool"]
PYRAMID_SCALES = (1, 2, 4)


class ExtractorUnavailable(FileNotFoundError):
    """An extractor's weights or package are missing; pipelines catch this, log it and skip."""


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available")
    return torch.device(device)


class ImageFeatureExtractor(ABC):
    """Maps an RGB image ``[H, W, 3]`` uint8 to per-pixel features ``[H, W, C]`` float32.

    ``parts`` names the channel groups the extractor produces (e.g. f0, f1, f2), in order;
    :func:`earthcrafter.features.layout.feature_layout` turns them into the full layout.
    """

    name: str = "base"
    parts: dict[str, int]

    @property
    def channels(self) -> int:
        return sum(self.parts.values())

    @property
    def layout(self) -> dict[str, slice]:
        return feature_layout(self.parts)

    @abstractmethod
    def __call__(self, rgb: np.ndarray) -> np.ndarray: ...


def rgb_to_tensor(rgb: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` -> float ``[1, 3, H, W]`` in [-1, 1]."""
    _check_rgb(rgb)
    x = torch.from_numpy(np.require(rgb, requirements=["C", "W"])).to(device)  # a read-only frame is copied
    return x.permute(2, 0, 1)[None].float() / 127.5 - 1.0


def nearest_upsample(latent: torch.Tensor, height: int, width: int, cell_h: float, cell_w: float) -> torch.Tensor:
    """Nearest-resize ``latent`` [C, h, w] to [C, height, width].

    A latent cell covers ``cell_h x cell_w`` output pixels; output pixel (y, x) takes the cell
    that holds its centre, clamped to the grid (the encoder's right/bottom padding may make the
    grid cover slightly more than the image).
    """
    dev = latent.device
    rows = ((torch.arange(height, device=dev) + 0.5) / cell_h).floor().long().clamp_(0, latent.shape[1] - 1)
    cols = ((torch.arange(width, device=dev) + 0.5) / cell_w).floor().long().clamp_(0, latent.shape[2] - 1)
    return latent[:, rows][:, :, cols]


class LatentPyramidExtractor(ImageFeatureExtractor):
    """Hierarchical features ``[f0; f1; f2]`` from an image encoder with stride ``downsample``."""

    downsample: int = 8
    latent_channels: int = 16

    def __init__(self, hierarchy: Hierarchy = "image_pyramid", device: str = "cpu"):
        if hierarchy not in ("image_pyramid", "latent_pool"):
            raise ValueError(f"hierarchy must be 'image_pyramid' or 'latent_pool', got {hierarchy!r}")
        self.hierarchy = hierarchy
        self.device = resolve_device(device)
        self.parts = {f"f{i}": self.latent_channels for i in range(len(PYRAMID_SCALES))}

    @abstractmethod
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [B, 3, h, w] in [-1, 1], h and w multiples of ``downsample`` -> [B, C, h/d, w/d]."""

    def encode_padded(self, x: torch.Tensor) -> torch.Tensor:
        """Encode an image of any size: replicate-pad bottom/right to a multiple of the stride."""
        d = self.downsample
        h, w = x.shape[-2:]
        ph, pw = (-h) % d, (-w) % d
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        return self.encode(x)[0]

    @torch.no_grad()
    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        x = rgb_to_tensor(rgb, self.device)
        H, W = x.shape[-2:]
        d = self.downsample
        levels = []
        if self.hierarchy == "image_pyramid":
            for s in PYRAMID_SCALES:
                h, w = max(1, round(H / s)), max(1, round(W / s))
                xs = x if s == 1 else F.interpolate(x, (h, w), mode="bilinear", antialias=True, align_corners=False)
                lat = self.encode_padded(xs)
                levels.append(nearest_upsample(lat, H, W, d * H / h, d * W / w))
        else:
            lat = self.encode_padded(x)
            for s in PYRAMID_SCALES:
                pooled = lat if s == 1 else F.avg_pool2d(lat[None], s, ceil_mode=True)[0]
                levels.append(nearest_upsample(pooled, H, W, d * s, d * s))
        out = torch.cat(levels, dim=0).permute(1, 2, 0)
        return out.float().cpu().numpy()


def cross_rgb(rgb: np.ndarray) -> np.ndarray:
    """The cross-shaped RGB neighbourhood ``f_rgb``: uint8 [H, W, 3] -> float32 [H, W, 15] in [0, 1].

    Order: centre, left, right, up, down (see ``CROSS_OFFSETS``), each R, G, B; the image border
    is replicated.
    """
    _check_rgb(rgb)
    H, W = rgb.shape[:2]
    padded = np.pad(rgb, ((1, 1), (1, 1), (0, 0)), mode="edge").astype(np.float32) / 255.0
    return np.concatenate([padded[1 + dr : 1 + dr + H, 1 + dc : 1 + dc + W] for dr, dc in CROSS_OFFSETS], axis=-1)


def normals_from_depth(depth: np.ndarray, camera: Camera) -> np.ndarray:
    """World-space unit normals [H, W, 3] from a depth map by finite differences of the
    unprojected points, oriented towards the camera; 0 where depth (or a neighbour) is missing.
    Silhouette pixels mix two surfaces; use rendered normal maps when the source has them."""
    pts = camera.unproject_depth(depth)
    d_row = np.gradient(pts, axis=0)
    d_col = np.gradient(pts, axis=1)
    n = np.cross(d_col, d_row)
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        n = n / norm
    facing = np.einsum("hwc,hwc->hw", n, pts - camera.center) > 0
    n[facing] *= -1
    n[~np.isfinite(n).all(axis=-1)] = 0.0
    return n.astype(np.float32)


def frame_features(frame, extractor: ImageFeatureExtractor, dtype=np.float16) -> np.ndarray:
    """The full per-pixel feature map of a frame, ``[H, W, C]`` in the extractor's layout
    (``[image parts; f_rgb; f_n]``; 66 channels for the default extractors).

    ``f_n`` comes from the frame's normal map, else from its depth map.
    """
    image = extractor(frame.rgb)
    H, W = frame.rgb.shape[:2]
    if image.shape != (H, W, extractor.channels):
        raise ValueError(
            f"extractor {extractor.name!r} returned {image.shape} for frame {frame.name!r}, "
            f"expected {(H, W, extractor.channels)}"
        )
    if frame.normal is not None:
        normal = frame.normal
    elif frame.depth is not None:
        normal = normals_from_depth(frame.depth, frame.camera)
    else:
        raise ValueError(f"frame {frame.name!r} has neither a normal nor a depth map; f_n cannot be built")
    out = np.concatenate([image, cross_rgb(frame.rgb), normal.astype(np.float32)], axis=-1).astype(dtype)
    assert out.shape[-1] == layout_channels(extractor.layout)
    return out


def _check_rgb(rgb: np.ndarray) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        got = f"{rgb.dtype} {rgb.shape}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise ValueError(f"expected an RGB image uint8 [H, W, 3], got {got}")
