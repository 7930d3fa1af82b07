from kedro.pipeline import Pipeline, node, pipeline

from earthcrafter.pipelines.semantic_aggregation.nodes import aggregate_scenes, train_feature_extractor


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(train_feature_extractor, ["meshed_scenes", "params:semantic_aggregation"], "feature_extractor",
                 name="train_feature_extractor"),
            node(aggregate_scenes, ["meshed_scenes", "feature_extractor", "params:semantic_aggregation"],
                 "featured_scenes", name="aggregate_scenes"),
        ]
    )
