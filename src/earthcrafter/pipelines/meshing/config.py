"""Parameters of the meshing stage (``meshing:``): the library's MeshingConfig plus the
frames rendered for scenes that have none and the mesh-quality measurement."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from earthcrafter.geometry.surface import MeshingConfig


class RenderFramesConfig(BaseModel):
    """Frames rendered from the cleaned mesh for sources without frames (LiDAR, mesh files)."""

    model_config = ConfigDict(extra="forbid")

    count: int = Field(24, ge=1)
    width: int = Field(256, ge=8)
    height: int = Field(256, ge=8)
    fov_deg: float = Field(60.0, gt=5, lt=150)
    pitch_deg_range: tuple[float, float] = (35.0, 70.0)
    seed: int = 0
    # measured: the colours are photographs already (LiDAR points coloured by imagery, textured
    # meshes), so no light is added; sun: Lambert + shadows, for albedo or uncoloured meshes;
    # auto: measured when the mesh has vertex colours, else sun.
    shading: Literal["auto", "measured", "sun"] = "auto"
    # Surfaces facing up (normal z >= drape_min_normal_z) take the scene's orthophoto colour at
    # full image resolution instead of the mesh's vertex colours (one per DSM cell).
    orthophoto_drape: bool = True
    drape_min_normal_z: float = Field(0.5, ge=0.0, le=1.0)


class QualityConfig(BaseModel):
    """Chamfer / F-score against the ground-truth mesh, where the scene has one."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    n_samples: int = Field(50_000, ge=100)
    threshold_m: float = Field(0.5, gt=0)


class MeshingStageConfig(MeshingConfig):
    render_frames: RenderFramesConfig = Field(default_factory=RenderFramesConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)

    def library_config(self) -> MeshingConfig:
        return MeshingConfig.model_validate(self.model_dump(exclude={"render_frames", "quality"}))
