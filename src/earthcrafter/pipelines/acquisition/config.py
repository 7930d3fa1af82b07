"""Parameters of the acquisition stage (``acquisition:`` in conf/*/parameters_acquisition.yml)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from earthcrafter.io.import_common import check_scene_id, scene_id_from_path
from earthcrafter.world import WorldConfig


class SyntheticSource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    num_sites: int = Field(8, ge=0, description="sites generated from the synthetic world")
    first_index: int = Field(0, ge=0, description="index of the first site (sites are a pure function of seed and index)")
    world: WorldConfig = Field(default_factory=WorldConfig)


class ImportSource(BaseModel):
    """One real-data source: aerial LiDAR (las/laz), a mesh file, or a folder of posed frames.

    Validated without reading any file: ``scene_id`` (given, or derived from the file name as
    ``scene_id_from_path`` does) is a lower-case folder name; ``options`` are keyword arguments
    of the kind's importer, converted to its annotated types. The files are checked when the
    stage starts (``earthcrafter.io.sources.check_source``).
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["las", "mesh", "frames"]
    path: str
    scene_id: str | None = Field(None, description="default: the file or folder name, lower-cased")
    options: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the kind's importer")

    @field_validator("scene_id")
    @classmethod
    def _scene_id(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        try:
            return check_scene_id(value)
        except ValueError as err:
            raise ValueError(f"{info.data.get('path', '?')}: {err}") from None

    @model_validator(mode="after")
    def _resolve(self) -> ImportSource:
        from earthcrafter.io.sources import bind_options  # the importers: only when imports are configured

        if "scene_id" in self.options:
            raise ValueError(f"{self.path}: give scene_id next to kind and path, not in options")
        self.options = bind_options(self.kind, self.path, self.options)
        if self.scene_id is None:
            try:
                self.scene_id = scene_id_from_path(self.path)
            except ValueError as err:
                raise ValueError(f"{err} (scene_id: next to kind and path)") from None
        return self

    def spec(self) -> dict[str, Any]:
        """The source spec of ``earthcrafter.io.sources`` (``kind``, ``path``, ``scene_id``, options)."""
        return {"kind": self.kind, "path": self.path, "scene_id": self.scene_id, **self.options}


class AcquisitionConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    synthetic: SyntheticSource = Field(default_factory=SyntheticSource)
    imports: list[ImportSource] = Field(default_factory=list)

    @model_validator(mode="after")
    def _distinct_ids(self) -> AcquisitionConfig:
        # Only ids here: config validation reads no file (it runs before every pipeline). Two imports
        # of the same file under two ids fail when the stage starts (``check_distinct_sources``).
        ids = [src.scene_id for src in self.imports]
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        if repeated:
            raise ValueError(f"imports share scene ids {repeated}; give each a distinct scene_id")
        return self
