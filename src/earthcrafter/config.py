"""Parameters are data, validated at load.

Each top-level key of the Kedro parameters maps to one pydantic model, owned by the
library module whose behaviour it configures. Models forbid unknown keys, so a typo in
``conf/`` fails at start with a message naming the key path and the bad value.
"""

from __future__ import annotations

import importlib
from typing import Any

from pydantic import BaseModel, ValidationError

# top-level parameter key -> "module:Class" (imported lazily: validating the acquisition
# config must not import torch).
PARAMETER_SCHEMAS: dict[str, str] = {
    "acquisition": "earthcrafter.pipelines.acquisition.config:AcquisitionConfig",
    "meshing": "earthcrafter.pipelines.meshing.config:MeshingStageConfig",
    "semantic_aggregation": "earthcrafter.pipelines.semantic_aggregation.config:SemanticAggregationConfig",
    "voxelization": "earthcrafter.pipelines.voxelization.config:VoxelizationConfig",
    "train_structvae": "earthcrafter.training.structvae:StructVAERunConfig",
    "train_texvae": "earthcrafter.models.tex_vae_train:TexVAETrainConfig",
    "cache_latents": "earthcrafter.latents.cache:LatentCacheConfig",
    "train_structfm": "earthcrafter.training.structfm:StructFMRunConfig",
    "train_texfm": "earthcrafter.training.texfm:TexFMRunConfig",
    "generation": "earthcrafter.latents.generate:GenerationConfig",
    "evaluation": "earthcrafter.evaluation.generated:EvaluationConfig",
}


class ConfigError(ValueError):
    """A parameter file holds an unknown key or an invalid value."""


def register_schema(key: str, target: str) -> None:
    PARAMETER_SCHEMAS[key] = target


def _schema(key: str) -> type[BaseModel]:
    module, _, cls = PARAMETER_SCHEMAS[key].partition(":")
    return getattr(importlib.import_module(module), cls)


def _format(key: str, err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in (key, *e["loc"]))
        value = e.get("input")
        shown = repr(value) if not isinstance(value, dict) else "{...}"
        if len(shown) > 80:
            shown = shown[:77] + "..."
        lines.append(f"  parameters.{loc}: {e['msg']} (got {shown})")
    return "invalid parameters:\n" + "\n".join(lines)


def validate(key: str, raw: Any) -> BaseModel:
    """Validate one top-level parameter section; raise ConfigError naming the bad key/value."""
    if key not in PARAMETER_SCHEMAS:
        raise ConfigError(f"unknown parameter section {key!r}; known: {sorted(PARAMETER_SCHEMAS)}")
    try:
        return _schema(key).model_validate(raw if raw is not None else {})
    except ValidationError as e:
        raise ConfigError(_format(key, e)) from None


def validate_all(params: dict[str, Any]) -> dict[str, BaseModel]:
    """Validate every section of the Kedro parameters; unknown sections are errors too."""
    unknown = sorted(set(params) - set(PARAMETER_SCHEMAS))
    if unknown:
        raise ConfigError(
            f"unknown parameter section(s) {unknown} in conf/; known sections: {sorted(PARAMETER_SCHEMAS)}"
        )
    return {key: validate(key, value) for key, value in params.items()}


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts/lists -> {"a.b.0.c": value} for MLflow params."""
    out: dict[str, Any] = {}
    if isinstance(d, BaseModel):
        d = d.model_dump(mode="json")
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
    elif isinstance(d, (list, tuple)) and d and any(isinstance(v, (dict, list, tuple)) for v in d):
        for i, v in enumerate(d):
            out.update(flatten(v, f"{prefix}{i}."))
    else:
        out[prefix[:-1]] = d
    return out
