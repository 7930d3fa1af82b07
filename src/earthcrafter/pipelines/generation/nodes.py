"""generation nodes: a thin call into earthcrafter.latents.generate."""

from __future__ import annotations

import pandas as pd

from earthcrafter.latents.generate import GenerationConfig, generate_scenes


def generate(
    latents_manifest: pd.DataFrame, latents_stats: dict, structfm_metrics: dict, texfm_metrics: dict, params: dict
) -> tuple[pd.DataFrame, dict]:
    """Scenes from validation layouts; the two flow runs' metrics are inputs so this stage runs after them."""
    table, metrics = generate_scenes(latents_manifest, latents_stats, GenerationConfig.model_validate(params))
    metrics.update(structfm_run_ids=[structfm_metrics.get("coarse/run_id", ""), structfm_metrics.get("fine/run_id", "")],
                   texfm_run_id=texfm_metrics.get("run_id", ""))  # fmt: skip
    return table, metrics
