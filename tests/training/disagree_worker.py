"""Run by torchrun from test_ddp.py: two ranks that see different things must still take the
same decisions and pair their collectives.

usage: torchrun --nproc-per-node=2 disagree_worker.py OUT_DIR MODE [PHASE]
- MODE keys: rank 0 logs a key rank 1 never logs (a TexVAE rank whose batches were skipped);
  every rank writes its train history.
- MODE fingerprint PHASE: phase 1 trains to step 4 and is killed; in phase 2 rank 1 would see
  another training-data fingerprint than rank 0 (a tile mid-rewrite on one node). Only rank 0
  decides (and takes the fingerprint); every rank writes its history and, for each fingerprint it
  took, the training steps it had run by then.
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


class ExtraKeyTask(ToyTask):
    def training_step(self, model, batch):
        loss, logs = super().training_step(model, batch)
        return loss, {**logs, "extra": 1.0} if RANK == 0 else logs


class CountingTask(ToyTask):
    steps = 0

    def training_step(self, model, batch):
        CountingTask.steps += 1
        return super().training_step(model, batch)


class NodeLocalData(ToyData):
    calls: list[int] = []  # the steps trained when each fingerprint was taken

    def fingerprint(self) -> str:
        NodeLocalData.calls.append(CountingTask.steps)
        return "rank 1 sees a tile mid-rewrite" if PHASE == "2" and RANK == 1 else super().fingerprint()


if __name__ == "__main__":
    out, mode = Path(sys.argv[1]), sys.argv[2]
    PHASE = sys.argv[3] if len(sys.argv) > 3 else ""
    cfg = TrainerConfig(steps=6, batch_size=8, log_every=1, ckpt_every=2, val_every=0, progress=False, figures=False)
    task, data = (ExtraKeyTask(), ToyData()) if mode == "keys" else (CountingTask(), NodeLocalData())
    trainer = Trainer(task, cfg, data, out_dir=out, device="cpu", mlflow=False)
    trainer.fit(stop_after=4 if PHASE == "1" else None)
    (out / f"rank{RANK}.json").write_text(json.dumps({"history": trainer.history["train"],
                                                      "fingerprints": NodeLocalData.calls}))
