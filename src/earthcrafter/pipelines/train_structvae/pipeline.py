"""Pipelines: ``train_structvae`` (main configuration) and ``structvae_ablations`` (Table 3).

``structvae_ablations`` trains every row of ``train_structvae.ablations`` (one nested
MLflow run each, same data and budget) and then writes Table 3 from those runs.
"""

from kedro.pipeline import Pipeline, node, pipeline

from earthcrafter.evaluation.reports import TABLE3_ROWS
from earthcrafter.pipelines.train_structvae.nodes import make_row_trainer, report_table3, train_main


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [node(train_main, ["voxel_manifest", "params:train_structvae"], "train_structvae_metrics", name="train_structvae")]
    )


def create_ablations_pipeline(rows: tuple[str, ...] = tuple(TABLE3_ROWS), **kwargs) -> Pipeline:
    trainers = [
        node(make_row_trainer(row), ["voxel_manifest", "params:train_structvae"], f"structvae_ablations.{row}_metrics",
             name=f"train_structvae_{row}", namespace="structvae_ablations")
        for row in rows
    ]
    report = node(
        report_table3, ["params:train_structvae", *(f"structvae_ablations.{row}_metrics" for row in rows)],
        "structvae_table3", name="report_table3", namespace="structvae_ablations",
    )
    return pipeline([*trainers, report])
