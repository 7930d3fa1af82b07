"""Pipeline ``train_texfm``: cached texture latents -> TexFM."""

from kedro.pipeline import Pipeline, node, pipeline

from earthcrafter.pipelines.train_texfm.nodes import train


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [node(train, ["latents_manifest", "latents_stats", "params:train_texfm"], "train_texfm_metrics",
              name="train_texfm")]
    )  # fmt: skip
