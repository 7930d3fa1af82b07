"""structfm_ablations: the rows of the paper's Table 4 (two-stage StructFM vs one-stage DenseSFM) + the table."""

from earthcrafter.pipelines.train_structfm.pipeline import create_ablations_pipeline as create_pipeline

__all__ = ["create_pipeline"]
