"""evaluation: generated scenes scored against real tiles, and one HTML report of every stage."""

from earthcrafter.pipelines.evaluation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
