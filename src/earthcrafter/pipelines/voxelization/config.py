"""Parameters of the voxelization stage (``voxelization:``): which tiles enter the training set,
and the train/val split (by scene, never by tile)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from earthcrafter.io.tiles import SplitConfig


class VoxelizationConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    output_dir: str = "data/05_model_input/voxels"
    min_voxels: int = Field(64, ge=1, description="tiles with fewer voxels are skipped (logged, counted)")
    max_clipped_fraction: float = Field(0.5, ge=0, le=1, description="tiles whose z window clipped more are skipped")
    split: SplitConfig = Field(default_factory=SplitConfig)
