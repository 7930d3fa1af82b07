from kedro.pipeline import Pipeline, node, pipeline

from earthcrafter.pipelines.voxelization.nodes import assemble_tiles


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(assemble_tiles, ["featured_scenes", "params:voxelization"], ["voxel_manifest", "voxel_skipped"],
                 name="assemble_tiles"),
        ]
    )
