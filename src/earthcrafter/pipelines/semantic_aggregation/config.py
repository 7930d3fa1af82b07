"""Parameters of the semantic_aggregation stage (``semantic_aggregation:``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from earthcrafter.features.extractors import FeaturesConfig
from earthcrafter.features.tiny_ae import TinyAEConfig, TinyAETrainConfig
from earthcrafter.geometry.voxelize import VoxelizeConfig


class SemanticAggregationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    # the offline default extractor is trained here, on the dataset's own frames
    tiny_ae_model: TinyAEConfig = Field(default_factory=TinyAEConfig)
    tiny_ae_training: TinyAETrainConfig = Field(default_factory=TinyAETrainConfig)
    tiny_ae_weights: str = "data/06_models/feature_extractor/tiny_ae.pt"
    # crops, tile grid (L), surface sampling, score aggregation, per-tile views
    grid: VoxelizeConfig = Field(default_factory=VoxelizeConfig)
