"""acquisition: synthetic Aerial-Earth3D sites and imported real data -> 01_raw/scenes."""

from earthcrafter.pipelines.acquisition.pipeline import create_pipeline

__all__ = ["create_pipeline"]
