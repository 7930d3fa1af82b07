"""semantic_aggregation: image features (f0-f2, f_rgb, f_n) and semantics aggregated onto the
voxel grids of each scene's tiles -> 03_primary/featured/<scene_id>/."""

from earthcrafter.pipelines.semantic_aggregation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
