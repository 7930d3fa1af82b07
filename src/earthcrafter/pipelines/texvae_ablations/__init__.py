"""texvae_ablations: every row of the paper's Table 2 (one nested MLflow run each) + the table."""

from earthcrafter.pipelines.train_texvae.pipeline import create_ablation_pipeline as create_pipeline

__all__ = ["create_pipeline"]
