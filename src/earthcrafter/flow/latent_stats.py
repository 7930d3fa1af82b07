"""Per-channel statistics of cached latents, and the normalisation the flow models train in.

The flow models learn latents scaled to zero mean and unit variance per channel (TRELLIS'
convention: mean and std over all latent voxels of the training split, std = sqrt(E[x²] - E[x]²)).
The moments are accumulated as float64 sums, so shards (tiles, ranks) merge by addition.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

log = logging.getLogger(__name__)


@dataclass
class ChannelMoments:
    """Count, sum and sum of squares per channel (float64)."""

    count: int
    sum: np.ndarray  # [C]
    sumsq: np.ndarray  # [C]

    @classmethod
    def zeros(cls, channels: int) -> ChannelMoments:
        return cls(0, np.zeros(channels), np.zeros(channels))

    @property
    def channels(self) -> int:
        return len(self.sum)

    def update(self, x: np.ndarray | torch.Tensor) -> ChannelMoments:
        """Add the rows of ``x`` [N, C]."""
        x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.channels:
            raise ValueError(f"ChannelMoments.update: expected [N, {self.channels}], got {x.shape}")
        x = x.astype(np.float64)
        self.count += len(x)
        self.sum += x.sum(0)
        self.sumsq += np.square(x).sum(0)
        return self

    def merge(self, other: ChannelMoments) -> ChannelMoments:
        if other.channels != self.channels:
            raise ValueError(f"ChannelMoments.merge: {self.channels} vs {other.channels} channels")
        return ChannelMoments(self.count + other.count, self.sum + other.sum, self.sumsq + other.sumsq)

    def to_tensor(self) -> torch.Tensor:
        """[2C + 1] float64 (sum, sumsq, count): what ranks all-reduce."""
        return torch.from_numpy(np.concatenate([self.sum, self.sumsq, [float(self.count)]]))

    @classmethod
    def from_tensor(cls, t: torch.Tensor) -> ChannelMoments:
        v = t.detach().cpu().double().numpy()
        C = (len(v) - 1) // 2
        return cls(int(round(v[-1])), v[:C].copy(), v[C : 2 * C].copy())

    @property
    def mean(self) -> np.ndarray:
        if self.count == 0:
            raise ValueError("ChannelMoments: no rows accumulated")
        return self.sum / self.count

    @property
    def std(self) -> np.ndarray:
        """Population standard deviation per channel."""
        m = self.mean
        return np.sqrt(np.maximum(self.sumsq / self.count - m * m, 0.0))

    def as_dict(self) -> dict:
        return {"count": self.count, "channels": self.channels, "mean": self.mean.tolist(), "std": self.std.tolist()}


def _stats_tensors(stats: dict, like: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    mean = torch.as_tensor(stats["mean"], dtype=like.dtype, device=like.device)
    std = torch.as_tensor(stats["std"], dtype=like.dtype, device=like.device).clamp_min(eps)
    if mean.shape != like.shape[-1:]:
        raise ValueError(f"latent stats have {mean.shape[0]} channels, the latents {like.shape[-1]}")
    return mean, std


def normalize(x: torch.Tensor, stats: dict, eps: float = 1e-6) -> torch.Tensor:
    """(x - mean) / std with ``stats`` = one kind's entry of ``latents_stats.json``."""
    mean, std = _stats_tensors(stats, x, eps)
    return (x - mean) / std


def denormalize(x: torch.Tensor, stats: dict, eps: float = 1e-6) -> torch.Tensor:
    """Inverse of :func:`normalize` (before decoding generated latents)."""
    mean, std = _stats_tensors(stats, x, eps)
    return x * std + mean


def latent_inputs(stats: dict, kind: str) -> dict:
    """What a flow trained on ``kind`` latents learned from: the statistics it was normalised by
    and the VAE weights (``{"path", "sha256"}``) that encoded them. Stored in the flow's export,
    so that generation can refuse statistics or a VAE that do not belong to it."""
    return {"kind": kind, "stats": {k: stats[kind][k] for k in ("mean", "std")},
            "vae": (stats.get("models") or {}).get(kind)}  # fmt: skip


def check_latent_inputs(inputs: dict | None, stats: dict, kind: str, vae_sha256: str, what: str) -> list[str]:
    """Why a flow export (``what``) trained on ``inputs`` (:func:`latent_inputs`) cannot be used with
    ``stats`` and the VAE of hash ``vae_sha256``: a list of reasons, empty when it fits. An export
    from before the inputs were recorded (``inputs`` empty) cannot be checked here and passes; the
    VAE against ``stats`` is :func:`check_stats_vae`'s, which needs no flow record."""
    if not inputs:
        return []
    reasons = []
    ours = {k: stats[kind][k] for k in ("mean", "std")}
    if not all(np.allclose(inputs["stats"][k], ours[k], rtol=1e-6, atol=1e-9) for k in ours):
        reasons.append(f"{what} was trained on other {kind} latent statistics than latents_stats.json holds "
                       "(the latents were cached again since): retrain it")  # fmt: skip
    trained_on = (inputs.get("vae") or {}).get("sha256")
    if trained_on and trained_on != vae_sha256:
        reasons.append(f"{what} was trained on latents of another {kind} VAE (sha256 {trained_on[:12]}) than "
                       f"the one given (sha256 {vae_sha256[:12]})")  # fmt: skip
    return reasons


def check_stats_vae(stats: dict, kind: str, vae: dict) -> list[str]:
    """Why the ``kind`` VAE given (``{"path", "sha256"}``) does not belong to ``stats``
    (latents_stats.json, which records the VAE its latents were cached with): its latents mean other
    things, and the flows learned the recorded VAE's. Needs nothing from a flow export, so it holds
    for flows of any age. Empty when it fits or when ``stats`` records no VAE (an older cache: warned)."""
    cached_by = (stats.get("models") or {}).get(kind) or {}
    if not cached_by.get("sha256"):
        log.warning("latents_stats.json records no %s VAE (cached by an older earthcrafter): %s not checked "
                    "against it", kind, vae["path"])
        return []
    if cached_by["sha256"] == vae["sha256"]:
        return []
    return [f"latents_stats.json was computed with another {kind} VAE, {cached_by.get('path', '(path not recorded)')} "
            f"(sha256 {cached_by['sha256'][:12]}), than the one given, {vae['path']} (sha256 {vae['sha256'][:12]}): "
            f"generate with that one (generation.{kind}vae_path), or re-run `kedro run --pipelines=cache_latents` "
            f"with this one, then `kedro run --pipelines=train_{kind}fm` on its latents"]  # fmt: skip
