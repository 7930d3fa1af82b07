"""train_structfm nodes: a thin call into earthcrafter.training.structfm."""

from __future__ import annotations

import pandas as pd

from earthcrafter.training.structfm import StructFMRunConfig, train_structfm


def train(latents_manifest: pd.DataFrame, latents_stats: dict, params: dict) -> dict:
    """Both stages, then generation from validation layouts; the final metrics."""
    return train_structfm(latents_manifest, latents_stats, StructFMRunConfig.model_validate(params))
