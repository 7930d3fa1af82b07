"""Train StructFM and TexFM a few steps on ``<root>/manifest.parquet`` and save the weights: run by
``torchrun --nproc-per-node=2`` from test_flow_ddp.py (one file per rank), and in the test's own
process as the single-process reference.

usage: [torchrun --nproc-per-node=2] flow_ddp_worker.py ROOT OUT_DIR
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pandas as pd
import torch

from earthcrafter.training.structfm import load_structfm, train_structfm
from earthcrafter.training.texfm import load_texfm, train_texfm

# ema_decay 0: the exported (EMA) weights are the trained ones, so a difference in training shows
TR = dict(steps=3, batch_size=4, lr=1e-3, ema_decay=0.0, progress=False, cpu_threads=1, val_batch_size=2, figures=False)


def run(root: Path, out: Path) -> None:
    manifest, stats = pd.read_parquet(root / "manifest.parquet"), json.loads((root / "stats.json").read_text())
    rank = os.environ.get("RANK", "0")
    sfm = train_structfm(manifest, stats, {"output_dir": str(out / "sfm"), "mlflow": False, "preview_tiles": 0,
                                           "model": {"grid": 2, "width": 32, "depth": 1, "num_heads": 2},
                                           "sample": {"steps": 2}, "coarse": TR, "fine": TR})  # fmt: skip
    tfm = train_texfm(manifest, stats, {"output_dir": str(out / "tfm"), "mlflow": False, "preview_tiles": 0,
                                        "model": {"layout_grid": 2, "width": 32, "depth": 1, "num_heads": 2, "window": 4},
                                        "sample": {"steps": 2}, "trainer": TR})  # fmt: skip
    metrics = {"sfm": sfm["fine/val_loss"], "sfm_acc": sfm["fine/acc"], "tfm": tfm["val_loss"]}
    torch.save({"structfm": load_structfm(out / "sfm").state_dict(), "texfm": load_texfm(out / "tfm").state_dict(),
                "metrics": metrics}, out / f"rank{rank}.pt")  # fmt: skip


if __name__ == "__main__":
    run(Path(sys.argv[1]), Path(sys.argv[2]))
