"""Configuration of the synthetic world (validated; unknown keys fail naming the key)."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

BIOMES: tuple[str, ...] = (
    "farmland",
    "hills",
    "mountains",
    "desert",
    "lakes",
    "river",
    "coast",
    "wetland",
    "forest",
    "suburb",
    "downtown",
    "industrial",
)
"""Every biome the generator knows. Water appears as lakes (level sets), rivers (carved
channels) and coast (sea); the built biomes are suburb, downtown and industrial."""

URBAN_BIOMES: tuple[str, ...] = ("suburb", "downtown", "industrial")

Biome = Literal[BIOMES]  # type: ignore[valid-type]

# Rough share of each terrain type in an Aerial-Earth3D-like collection: built areas and
# farmland dominate, natural terrains share the rest.
DEFAULT_BIOME_WEIGHTS: dict[str, float] = {
    "farmland": 0.12,
    "hills": 0.09,
    "mountains": 0.09,
    "desert": 0.07,
    "lakes": 0.06,
    "river": 0.06,
    "coast": 0.06,
    "wetland": 0.04,
    "forest": 0.07,
    "suburb": 0.15,
    "downtown": 0.11,
    "industrial": 0.08,
}


class ShadingConfig(BaseModel):
    """Sun model for rendered frames; azimuth/elevation are drawn per site from the ranges."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sun_azimuth_deg: tuple[float, float] = (0.0, 360.0)
    sun_elevation_deg: tuple[float, float] = (35.0, 70.0)
    ambient: float = Field(0.45, ge=0.0, le=1.0)
    shadows: bool = True

    @model_validator(mode="after")
    def _ranges(self) -> "ShadingConfig":
        lo, hi = self.sun_elevation_deg
        if not (0.0 < lo <= hi <= 90.0):
            raise ValueError(f"sun_elevation_deg must satisfy 0 < lo <= hi <= 90, got {self.sun_elevation_deg}")
        if self.sun_azimuth_deg[0] > self.sun_azimuth_deg[1]:
            raise ValueError(f"sun_azimuth_deg must be (lo, hi) with lo <= hi, got {self.sun_azimuth_deg}")
        return self


class WorldConfig(BaseModel):
    """Everything that defines a synthetic site besides its index.

    Site ``i`` is a pure function of ``(config, i)``: the same config and index give a
    byte-identical mesh and frames.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(0, ge=0, description="world seed")
    size_m: float = Field(600.0, gt=0.0, le=4000.0, description="side of the square site, metres")
    cell_m: float = Field(2.0, gt=0.0, description="terrain grid resolution (height field and ground classes), metres")
    biomes: tuple[Biome, ...] | None = Field(
        None, description="fixed biome cycle: site i gets biomes[i % len]; None draws from biome_weights"
    )
    biome_weights: dict[Biome, float] = Field(default_factory=lambda: dict(DEFAULT_BIOME_WEIGHTS))

    frames_per_site: int = Field(48, ge=0)
    image_width: int = Field(512, ge=8, le=8192)
    image_height: int = Field(512, ge=8, le=8192)
    fov_deg: float = Field(60.0, gt=5.0, lt=150.0, description="horizontal field of view")
    camera_altitudes_m: tuple[float, ...] | None = Field(
        None, description="camera heights above the look-at point; None scales with size_m (0.25, 0.42, 0.67 x size)"
    )
    pitch_deg_range: tuple[float, float] = Field((35.0, 70.0), description="oblique pitch below the horizon, degrees")
    nadir_fraction: float = Field(0.15, ge=0.0, le=1.0, description="share of near-nadir (80-88 deg) views")

    building_density: float = Field(1.0, ge=0.0, le=2.0, description="multiplies the chance a lot gets a building")
    height_scale: float = Field(1.0, gt=0.0, le=3.0, description="multiplies building heights")
    tree_density: float = Field(1.0, ge=0.0, le=3.0)
    vehicle_density: float = Field(1.0, ge=0.0, le=3.0)
    shading: ShadingConfig = Field(default_factory=ShadingConfig)

    @model_validator(mode="after")
    def _check(self) -> "WorldConfig":
        n = self.size_m / self.cell_m
        if abs(n - round(n)) > 1e-6:
            raise ValueError(f"size_m ({self.size_m}) must be a whole multiple of cell_m ({self.cell_m})")
        if round(n) < 16:
            raise ValueError(f"size_m / cell_m = {n:g} cells per side; need at least 16")
        if round(n) > 4096:
            raise ValueError(f"size_m / cell_m = {n:g} cells per side; at most 4096 supported")
        lo, hi = self.pitch_deg_range
        if not (0.0 < lo <= hi <= 90.0):
            raise ValueError(f"pitch_deg_range must satisfy 0 < lo <= hi <= 90, got {self.pitch_deg_range}")
        if self.camera_altitudes_m is not None:
            if not self.camera_altitudes_m or min(self.camera_altitudes_m) <= 0:
                raise ValueError(f"camera_altitudes_m must be positive heights, got {self.camera_altitudes_m}")
        if self.biomes is not None and len(self.biomes) == 0:
            raise ValueError("biomes must name at least one biome (or be null to use biome_weights)")
        if self.biomes is None:
            bad = {k: v for k, v in self.biome_weights.items() if not (v >= 0 and math.isfinite(v))}
            if bad:
                raise ValueError(f"biome_weights must be finite and >= 0, got {bad}")
            if sum(self.biome_weights.values()) <= 0:
                raise ValueError("biome_weights must have a positive sum")
        return self

    @property
    def cells(self) -> int:
        """Grid cells per side."""
        return int(round(self.size_m / self.cell_m))

    @property
    def altitudes(self) -> tuple[float, ...]:
        if self.camera_altitudes_m is not None:
            return tuple(self.camera_altitudes_m)
        return tuple(round(f * self.size_m, 3) for f in (0.25, 0.42, 0.67))
