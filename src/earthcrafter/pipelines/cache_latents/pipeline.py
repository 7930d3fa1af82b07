"""Pipeline ``cache_latents``: voxel tiles + trained VAEs -> latent files, manifest, statistics."""

from kedro.pipeline import Pipeline, node, pipeline

from earthcrafter.pipelines.cache_latents.nodes import encode_tiles


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(encode_tiles, ["voxel_manifest", "train_structvae_metrics", "texvae_metrics", "params:cache_latents"],
                 ["latents_manifest", "latents_stats", "latents_skipped", "cache_latents_metrics"], name="cache_latents"),
        ]
    )  # fmt: skip
