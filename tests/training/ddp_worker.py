"""Entry point of the DDP test: the same script trains single-process or under torchrun.

usage: [torchrun --nproc-per-node=2] ddp_worker.py OUT_DIR
Writes OUT_DIR/rank<r>.pt (final weights of rank r) and, on rank 0, OUT_DIR/metrics.json.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "struct_vae")]

from synthetic import memory_tiles  # noqa: E402

from earthcrafter.training import Trainer, TrainerConfig  # noqa: E402
from earthcrafter.training.structvae import StructVAETask, build_datasets, StructVAERunConfig  # noqa: E402

MODEL = dict(L=32, widths=(16, 16, 32, 32), head_dim=16, enc_depths=(1, 1, 1), dec_depths=(1, 1, 1),
             bottleneck_depth=1, cblock_every=1, pe_channels=24)
TRAINER = dict(steps=3, batch_size=4, lr=1e-3, warmup_steps=0, ema_decay=0.5, log_every=1, val_every=0,
               ckpt_every=0, val_batch_size=1, progress=False, figures=False, seed=3)


def run(out: Path) -> dict:
    data_dir = out / "tiles"
    data_dir.mkdir(parents=True, exist_ok=True)
    manifest, read = memory_tiles(data_dir, 32, 6, 2)
    cfg = StructVAERunConfig(model=MODEL, data=dict(max_voxels=600, flip=True), trainer=TRAINER)
    train, val = build_datasets(manifest, cfg, read)
    trainer = Trainer(StructVAETask(cfg.model), TrainerConfig(**TRAINER), train, val, out_dir=out / "run",
                      device="cpu", mlflow=False)
    metrics = trainer.fit()
    rank = int(os.environ.get("RANK", "0"))
    torch.save(trainer.model.state_dict(), out / f"rank{rank}.pt")
    if rank == 0:
        # the same EMA weights validated by one process over the whole validation set
        task = StructVAETask(cfg.model)
        local = task.validate(trainer.ema.model, [task.collate([val[i]]) for i in range(len(val))])
        (out / "metrics.json").write_text(json.dumps({"trainer": metrics, "local": local}))
    return metrics


if __name__ == "__main__":
    run(Path(sys.argv[1]))
