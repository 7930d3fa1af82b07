"""meshing: reconstruct and repair each scene's mesh -> 02_intermediate/meshes."""

from earthcrafter.pipelines.meshing.pipeline import create_pipeline

__all__ = ["create_pipeline"]
