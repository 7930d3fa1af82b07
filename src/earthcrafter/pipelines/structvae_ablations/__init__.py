"""structvae_ablations: every row of the paper's Table 3 (one nested MLflow run each) + the table."""

from earthcrafter.pipelines.train_structvae.pipeline import create_ablations_pipeline as create_pipeline

__all__ = ["create_pipeline"]
