"""train_texfm nodes: a thin call into earthcrafter.training.texfm."""

from __future__ import annotations

import pandas as pd

from earthcrafter.training.texfm import TexFMRunConfig, train_texfm


def train(latents_manifest: pd.DataFrame, latents_stats: dict, params: dict) -> dict:
    """TexFM, then textures generated on validation structures; the final metrics."""
    return train_texfm(latents_manifest, latents_stats, TexFMRunConfig.model_validate(params))
