"""Pipeline ``train_structfm``: cached structure latents -> StructFM (coarse + fine stages)."""

from kedro.pipeline import Pipeline, node, pipeline

from earthcrafter.pipelines.train_structfm.nodes import OPTIONAL_ROWS, make_row_trainer, report_table4, train


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [node(train, ["latents_manifest", "latents_stats", "params:train_structfm"], "train_structfm_metrics",
              name="train_structfm")]
    )  # fmt: skip


def create_ablations_pipeline(**kwargs) -> Pipeline:
    """Table 4: the two-stage StructFM and the one-stage DenseSFM, same data and budget, then the
    table; and, when configured, the optional rows (the two stages with the paper's Swin U-Net as
    the fine stage, or with its Swin CondNet)."""
    rows = ("two_stage", "dense", *OPTIONAL_ROWS)
    trainers = [
        node(make_row_trainer(row, optional=row in OPTIONAL_ROWS), ["latents_manifest", "latents_stats",
             "params:train_structfm"], f"structfm_ablations.{row}_metrics", name=f"train_structfm_{row}",
             namespace="structfm_ablations")
        for row in rows
    ]  # fmt: skip
    report = node(report_table4, ["params:train_structfm", *(f"structfm_ablations.{r}_metrics" for r in rows)],
                  "structfm_table4", name="report_table4", namespace="structfm_ablations")  # fmt: skip
    return pipeline([*trainers, report])
