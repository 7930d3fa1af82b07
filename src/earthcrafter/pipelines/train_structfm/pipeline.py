"""Pipeline ``train_structfm``: cached structure latents -> StructFM (coarse + fine stages)."""

from kedro.pipeline import Pipeline, node, pipeline

from earthcrafter.pipelines.train_structfm.nodes import train


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [node(train, ["latents_manifest", "latents_stats", "params:train_structfm"], "train_structfm_metrics",
              name="train_structfm")]
    )  # fmt: skip
