"""voxelization: the model-input tile set -> 05_model_input/voxels/ (tiles, views, manifest)."""

from earthcrafter.pipelines.voxelization.pipeline import create_pipeline

__all__ = ["create_pipeline"]
