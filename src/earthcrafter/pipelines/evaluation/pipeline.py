"""Pipeline ``evaluation``: the generated scenes scored, every stage's results in one report."""

from kedro.pipeline import Pipeline, node, pipeline

from earthcrafter.pipelines.evaluation.nodes import evaluate


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [node(evaluate, ["generated_manifest", "latents_manifest", "generation_metrics", "params:evaluation"],
              ["evaluation_scenes", "evaluation_metrics"], name="evaluation")]
    )  # fmt: skip
