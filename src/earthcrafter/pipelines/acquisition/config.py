"""Parameters of the acquisition stage (``acquisition:`` in conf/*/parameters_acquisition.yml)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from earthcrafter.world import WorldConfig


class SyntheticSource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    num_sites: int = Field(8, ge=0, description="sites generated from the synthetic world")
    first_index: int = Field(0, ge=0, description="index of the first site (sites are a pure function of seed and index)")
    world: WorldConfig = Field(default_factory=WorldConfig)


class ImportSource(BaseModel):
    """One real-data source: aerial LiDAR (las/laz), a mesh file, or a folder of posed frames."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["las", "mesh", "frames"]
    path: str
    scene_id: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class AcquisitionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    synthetic: SyntheticSource = Field(default_factory=SyntheticSource)
    imports: list[ImportSource] = Field(default_factory=list)
