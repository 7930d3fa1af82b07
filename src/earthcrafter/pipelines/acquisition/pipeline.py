from kedro.pipeline import Pipeline, node, pipeline

from earthcrafter.pipelines.acquisition.nodes import acquire_scenes, summarize_scenes


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(acquire_scenes, "params:acquisition", "raw_scenes", name="acquire_scenes"),
            node(summarize_scenes, "raw_scenes", "raw_scenes_summary", name="summarize_scenes"),
        ]
    )
