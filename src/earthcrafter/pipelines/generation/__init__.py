"""generation: semantic layouts -> StructFM -> StructVAE -> TexFM -> TexVAE -> scenes on disk."""

from earthcrafter.pipelines.generation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
