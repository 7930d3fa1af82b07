"""Project pipelines: every folder under ``earthcrafter/pipelines`` with a ``create_pipeline``."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

# The stage order of the data flow (DESIGN §2). ``__default__`` runs the stages that
# exist, in this order; pipelines not listed (ablation sweeps) run only by name.
STAGES = (
    "acquisition",
    "meshing",
    "semantic_aggregation",
    "voxelization",
    "train_structvae",
    "train_texvae",
    "cache_latents",
    "train_structfm",
    "train_texfm",
    "generation",
    "evaluation",
)


def register_pipelines() -> dict[str, Pipeline]:
    pipelines = find_pipelines(raise_errors=True)
    pipelines["__default__"] = sum((pipelines[name] for name in STAGES if name in pipelines), Pipeline([]))
    return pipelines
