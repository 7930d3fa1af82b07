"""Pipeline ``generation``: the trained flows and VAEs -> generated scenes you can open."""

from kedro.pipeline import Pipeline, node, pipeline

from earthcrafter.pipelines.generation.nodes import generate


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [node(generate, ["latents_manifest", "latents_stats", "train_structfm_metrics", "train_texfm_metrics",
                         "params:generation"], ["generated_manifest", "generation_metrics"], name="generation")]
    )  # fmt: skip
