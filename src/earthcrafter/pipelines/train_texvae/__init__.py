"""train_texvae: train TexVAE (Table 2 row TexE); ``texvae_ablations``: every Table 2 row + report."""

from earthcrafter.pipelines.train_texvae.pipeline import create_ablation_pipeline, create_pipeline

__all__ = ["create_ablation_pipeline", "create_pipeline"]
