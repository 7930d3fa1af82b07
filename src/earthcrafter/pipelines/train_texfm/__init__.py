"""train_texfm: TexFM on the cached texture latents."""

from earthcrafter.pipelines.train_texfm.pipeline import create_pipeline

__all__ = ["create_pipeline"]
