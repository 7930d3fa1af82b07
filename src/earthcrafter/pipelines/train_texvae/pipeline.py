"""Pipelines: ``train_texvae`` (the default TexVAE, Table 2 row TexE) and ``texvae_ablations``.

``texvae_ablations`` trains each row of ``train_texvae.ablations.rows`` in its own node (one
nested MLflow run each; a row whose features the tiles lack is logged as skipped), then writes
Table 2 from those runs.
"""

from kedro.pipeline import Pipeline, node, pipeline

from earthcrafter.models.tex_vae_train import TABLE2_ROWS
from earthcrafter.pipelines.train_texvae.nodes import make_row_trainer, report_table2, train_main


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(train_main, ["params:train_texvae", "voxel_manifest"], ["texvae_model", "texvae_metrics"],
                 name="train_texvae"),
        ]
    )  # fmt: skip


def create_ablation_pipeline(rows: tuple[str, ...] = tuple(TABLE2_ROWS), **kwargs) -> Pipeline:
    trainers = [
        node(make_row_trainer(row), ["params:train_texvae", "voxel_manifest"], f"texvae_ablations.{row}_run",
             name=f"train_texvae_{row}", namespace="texvae_ablations")
        for row in rows
    ]  # fmt: skip
    report = node(
        report_table2, ["params:train_texvae", *(f"texvae_ablations.{row}_run" for row in rows)],
        ["texvae_table2_csv", "texvae_table2_md"], name="report_texvae_table2", namespace="texvae_ablations",
    )  # fmt: skip
    return pipeline([*trainers, report])
