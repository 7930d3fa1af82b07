"""Run by torchrun from test_rank_outputs.py: what two gloo ranks hand back and where they write.

usage: torchrun --nproc-per-node=2 rank_outputs_worker.py OUT_DIR (MLFLOW_TRACKING_URI set)
1. Each rank gives the trainer a folder of its own (a folder not shared by the nodes): every rank
   must raise, naming the folder, before training.
2. Both ranks train in one folder, tracked in MLflow: each returns its metrics and run id.
Every rank writes OUT_DIR/rank<r>.json.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from toy import ToyData, ToyTask  # noqa: E402

from earthcrafter.training import Trainer, TrainerConfig  # noqa: E402

RANK = int(os.environ["RANK"])
CFG = TrainerConfig(steps=4, batch_size=8, log_every=2, ckpt_every=2, val_every=0, progress=False, figures=False)

if __name__ == "__main__":
    out = Path(sys.argv[1])
    error = ""
    try:
        Trainer(ToyTask(), CFG, ToyData(), out_dir=out / f"node{RANK}", device="cpu", mlflow=False).fit()
    except RuntimeError as e:
        error = str(e)
    trainer = Trainer(ToyTask(), CFG, ToyData(), ToyData(16, seed=1), out_dir=out / "shared", run_name="toy/ranks",
                      device="cpu", mlflow=True)
    metrics = trainer.fit()
    (out / f"rank{RANK}.json").write_text(json.dumps({"error": error, "metrics": metrics, "run_id": trainer.run_id,
                                                      "shared": sorted(p.name for p in (out / "shared").iterdir())}))
