"""Worker of test_tex_vae_train's DDP test (run by torchrun, two gloo ranks): at step 1 every sample
of rank 1's batch is skipped while rank 0's is not; both ranks must still all-reduce the same
gradients, and the next step must pair up again. Writes <out>/rank<r>.pt (the gradients)."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as tdist
from torch.nn.parallel import DistributedDataParallel

from earthcrafter.models.tex_vae import TexVAEConfig
from earthcrafter.models.tex_vae_data import SkippedSample, TexVAEDataConfig, TexVAEDataset
from earthcrafter.models.tex_vae_task import TexVAELossConfig, TexVAETask
from earthcrafter.training.sampler import Draw
from earthcrafter.training.synthetic import textured_tile, write_textured_tiles


def main(out: Path) -> None:
    tdist.init_process_group("gloo")
    rank = tdist.get_rank()
    torch.set_num_threads(1)
    manifest = write_textured_tiles(out / f"tiles{rank}", [(*textured_tile(L=12, voxel_size=1.0, views=2, px=24, seed=0,
                                                                             tile_id="a"), "train")])  # fmt: skip
    data = TexVAEDataConfig(view_width=12, views_per_sample=1, flip=False, rotate=False)
    ds = TexVAEDataset(manifest, split="train", features="f_feat", config=data, augment=False)
    task = TexVAETask(TexVAEConfig(width=16, num_heads=2, enc_depth=1, dec_depth=1, window=4), ds.layout_channels(),
                      TexVAELossConfig(ssim=0, lpips_vgg=0, lpips_alex=0))  # fmt: skip
    torch.manual_seed(0)
    ddp = DistributedDataParallel(task.build_model())
    grads = []
    for step in range(2):
        skip = rank == 1 and step == 0
        batch = task.collate([SkippedSample("a", "no view sees the crop")] if skip else [ds[Draw(0, (0, 0))]])
        ddp.zero_grad()
        loss, logs = task.training_step(ddp, batch)
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in ddp.parameters()]))
    torch.save(torch.stack(grads), out / f"rank{rank}.pt")
    tdist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
