"""Run by torchrun from test_ddp.py: a toy training on 2 ranks, killed after a step or not, then
resumed; every rank writes its final weights.

usage: torchrun --nproc-per-node=2 resume_worker.py OUT_DIR STOP_AFTER (0: run to the end)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from toy import ToyData, ToyTask  # noqa: E402

from earthcrafter.training import Trainer, TrainerConfig  # noqa: E402

CFG = dict(steps=12, batch_size=8, lr=1e-2, warmup_steps=2, ckpt_every=6, log_every=3, val_every=0,
           ema_decay=0.9, progress=False, figures=False)

if __name__ == "__main__":
    out, stop_after = Path(sys.argv[1]), int(sys.argv[2])
    trainer = Trainer(ToyTask(), TrainerConfig(**CFG), ToyData(), out_dir=out, device="cpu", mlflow=False)
    trainer.fit(stop_after=stop_after or None)
    if not stop_after:
        torch.save(trainer.model.state_dict(), out / f"rank{os.environ['RANK']}.pt")
