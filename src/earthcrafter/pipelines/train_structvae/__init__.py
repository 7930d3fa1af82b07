"""train_structvae: StructVAE on the voxel tiles (main configuration) and the Table 3 sweep."""

from earthcrafter.pipelines.train_structvae.pipeline import create_ablations_pipeline, create_pipeline

__all__ = ["create_ablations_pipeline", "create_pipeline"]
