from kedro.pipeline import Pipeline, node, pipeline

from earthcrafter.pipelines.meshing.nodes import mesh_scenes, summarize_meshing


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(mesh_scenes, ["raw_scenes", "params:meshing"], "meshed_scenes", name="mesh_scenes"),
            node(summarize_meshing, "meshed_scenes", "meshing_report", name="summarize_meshing"),
        ]
    )
