"""cache_latents nodes: a thin call into earthcrafter.latents.cache."""

from __future__ import annotations

import pandas as pd

from earthcrafter.latents.cache import LatentCacheConfig, cache_latents


def encode_tiles(
    voxel_manifest: pd.DataFrame, structvae_metrics: dict, texvae_metrics: dict, params: dict
) -> tuple[pd.DataFrame, dict, pd.DataFrame, dict]:
    """Latent files for every tile; (manifest, statistics, skipped tiles, summary).

    The two training summaries are inputs so the stage runs after both VAEs; their run ids
    are recorded with the summary (the weights themselves are identified by SHA-256).
    """
    table, stats, skipped, metrics = cache_latents(voxel_manifest, LatentCacheConfig.model_validate(params))
    metrics.update(structvae_run_id=structvae_metrics.get("run_id", ""), texvae_run_id=texvae_metrics.get("run_id", ""))
    return table, stats, skipped, metrics
