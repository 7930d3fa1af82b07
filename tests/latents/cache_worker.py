"""Run by ``torchrun --nproc-per-node=2`` from test_cache_latents_ddp.py: cache the tiles of
``<root>/manifest.parquet`` into ``<out>/latents`` and write what this rank returned."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import torch

from earthcrafter.latents.cache import cache_latents


def run(root: Path, out: Path) -> dict:
    torch.set_num_threads(1)
    cfg = {"structvae_path": str(root / "structvae.pt"), "texvae_path": str(root / "texvae.pt"),
           "out_dir": str(out / "latents"), "progress": False, "mlflow": False, "device": "cpu"}  # fmt: skip
    table, stats, skipped, metrics = cache_latents(pd.read_parquet(root / "manifest.parquet"), cfg)
    return {"table": table.to_dict("records"), "stats": stats, "skipped": skipped.to_dict("records"), "metrics": metrics}


if __name__ == "__main__":
    import os

    root, out = Path(sys.argv[1]), Path(sys.argv[2])
    result = run(root, out)
    (out / f"rank{os.environ['RANK']}.json").write_text(json.dumps(result))
