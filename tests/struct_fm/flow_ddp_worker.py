"""Run by ``torchrun --nproc-per-node=2`` from test_flow_ddp.py: train StructFM and TexFM a few
steps on ``<root>/manifest.parquet`` and save each rank's weights."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pandas as pd
import torch

from earthcrafter.training.structfm import train_structfm
from earthcrafter.training.texfm import train_texfm

TR = dict(steps=3, batch_size=4, lr=1e-3, progress=False, cpu_threads=1, val_batch_size=2, figures=False)

if __name__ == "__main__":
    root, out = Path(sys.argv[1]), Path(sys.argv[2])
    manifest, stats = pd.read_parquet(root / "manifest.parquet"), json.loads((root / "stats.json").read_text())
    rank = os.environ["RANK"]
    sfm = train_structfm(manifest, stats, {"output_dir": str(out / "sfm"), "mlflow": False, "preview_tiles": 0,
                                           "model": {"grid": 2, "width": 32, "depth": 1, "num_heads": 2},
                                           "sample": {"steps": 2}, "coarse": TR, "fine": TR})  # fmt: skip
    tfm = train_texfm(manifest, stats, {"output_dir": str(out / "tfm"), "mlflow": False, "preview_tiles": 0,
                                        "model": {"layout_grid": 2, "width": 32, "depth": 1, "num_heads": 2, "window": 4},
                                        "sample": {"steps": 2}, "trainer": TR})  # fmt: skip
    from earthcrafter.training.structfm import load_structfm
    from earthcrafter.training.texfm import load_texfm

    torch.save({"structfm": load_structfm(out / "sfm").state_dict(), "texfm": load_texfm(out / "tfm").state_dict(),
                "metrics": {"sfm": sfm["fine/val_loss"], "tfm": tfm["val_loss"]}}, out / f"rank{rank}.pt")  # fmt: skip
