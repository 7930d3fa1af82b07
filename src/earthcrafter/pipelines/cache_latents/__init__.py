"""cache_latents: every voxel tile encoded by the trained StructVAE and TexVAE, plus statistics."""

from earthcrafter.pipelines.cache_latents.pipeline import create_pipeline

__all__ = ["create_pipeline"]
