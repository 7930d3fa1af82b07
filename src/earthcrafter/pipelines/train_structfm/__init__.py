"""train_structfm: the coarse-to-fine StructFM on the cached structure latents."""

from earthcrafter.pipelines.train_structfm.pipeline import create_pipeline

__all__ = ["create_pipeline"]
