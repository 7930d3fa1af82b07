"""evaluation nodes: a thin call into earthcrafter.evaluation.generated."""

from __future__ import annotations

import pandas as pd

from earthcrafter.evaluation.generated import EvaluationConfig, run_evaluation


def evaluate(generated_manifest: pd.DataFrame, latents_manifest: pd.DataFrame, generation_metrics: dict,
             params: dict) -> tuple[pd.DataFrame, dict]:  # fmt: skip
    """Scores per scene and summary; the generation run's id is kept beside them."""
    table, metrics = run_evaluation(generated_manifest, latents_manifest, EvaluationConfig.model_validate(params),
                                    large_scenes=generation_metrics.get("large_scene_paths", []))  # fmt: skip
    metrics["generation_run_id"] = generation_metrics.get("run_id", "")
    return table, metrics
