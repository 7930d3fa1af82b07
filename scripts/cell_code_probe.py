"""How much of one latent cell's occupancy can a 32-number code carry, learnt from these tiles?

A probe of the StructVAE's finest level without its architecture: every occupied L/8 cell of a
tile (8 x 8 x 8 voxels at L) is encoded on its own by an MLP into ``--channels`` numbers (no KL,
no neighbours) and decoded by a second MLP that is also given the cell's L/2 occupancy, as the
StructVAE's last PSS block is. The score is the StructVAE's teacher-forced accuracy at L: correct
keep / drop decisions over the 8 children of every occupied L/2 voxel, on the validation tiles.

Training cells come from the trainer's own datasets (``build_datasets`` with the project's
``train_structvae`` parameters: random windows, flips, and with ``--augment all`` quarter
turns and sub-cell shifts), so the probe sees the cell placements the StructVAE sees.

    python scripts/cell_code_probe.py --augment flips --steps 8000
    python scripts/cell_code_probe.py --augment all --steps 8000
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from earthcrafter.training import Draw
from earthcrafter.training.structvae import StructVAERunConfig, build_datasets, read_tile_occupancy
from earthcrafter.training.voxel_data import VoxelTileDataset

CELL = 8


def cells_of(coords: torch.Tensor, L: int) -> torch.Tensor:
    """Occupancy [n, 512] (float) of every occupied L/8 cell of one sample."""
    g = torch.zeros(L, L, L, dtype=torch.bool)
    c = coords.long()
    g[c[:, 0], c[:, 1], c[:, 2]] = True
    n = L // CELL
    flat = g.view(n, CELL, n, CELL, n, CELL).permute(0, 2, 4, 1, 3, 5).reshape(-1, CELL**3)
    return flat[flat.any(1)].float()


def parent_mask(cells: torch.Tensor) -> torch.Tensor:
    """1 on the 8 children of every occupied L/2 voxel of each cell: the candidates at L."""
    h = CELL // 2
    p = cells.view(-1, h, 2, h, 2, h, 2).amax((2, 4, 6))
    return p.repeat_interleave(2, 1).repeat_interleave(2, 2).repeat_interleave(2, 3).reshape(-1, CELL**3)


def mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    layers = [nn.Linear(n_in, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, n_out)]
    return nn.Sequential(*layers)


class CellCode(nn.Module):
    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.encode = mlp(CELL**3, hidden, channels)
        self.decode = mlp(channels + CELL**3, hidden, CELL**3)

    def forward(self, cells: torch.Tensor, parents: torch.Tensor) -> torch.Tensor:
        return self.decode(torch.cat([self.encode(cells), parents], 1))


@torch.no_grad()
def candidate_accuracy(model: CellCode, cells: torch.Tensor) -> float:
    parents = parent_mask(cells)
    right = ((model(cells, parents) > 0).float() == cells).float()
    return float((right * parents).sum() / parents.sum())


def load_project(root: Path, env: str | None) -> tuple[StructVAERunConfig, pd.DataFrame]:
    """The project's ``train_structvae`` parameters (conf/base, then ``env``) and voxel manifest."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(root)
    with KedroSession.create(project_path=root, env=env) as session:
        ctx = session.load_context()
        return StructVAERunConfig.model_validate(ctx.params["train_structvae"]), ctx.catalog.load("voxel_manifest")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=".", help="project root holding data/ and conf/")
    ap.add_argument("--env", default=None, help="Kedro environment over conf/base")
    ap.add_argument("--augment", choices=("flips", "all"), default="all",
                    help="flips: the base configuration's; all: with quarter turns and sub-cell shifts")  # fmt: skip
    ap.add_argument("--channels", type=int, default=32, help="code size per cell (the StructVAE's c_s)")
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--steps", type=int, default=10000)
    ap.add_argument("--cells", type=int, default=256, help="cells per step")
    ap.add_argument("--eval-every", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    root = Path(args.root).resolve()
    config, manifest = load_project(root, args.env)
    moves = args.augment == "all"
    data = config.data.model_copy(update={"rotate": moves, "subcell_shift": moves, "root": str(root)})
    config = config.model_copy(update={"data": data})
    L = config.model.L
    train, val = build_datasets(manifest, config)
    whole = VoxelTileDataset(manifest, read_tile_occupancy, split=data.train_split, L=L, config=data)  # un-augmented
    val_cells = torch.cat([cells_of(val[i].coords, L) for i in range(len(val))])
    train_cells = torch.cat([cells_of(whole[i].coords, L) for i in range(len(whole))])  # the fit
    print(f"{len(train)} training / {len(val)} validation tiles, {len(val_cells)} validation cells, {args.augment}")
    model = CellCode(args.channels, args.hidden)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(args.seed)
    pool = torch.empty(0, CELL**3)
    t0, draw = time.time(), 0
    print("| step | s | train acc | val acc |\n|--:|--:|--:|--:|")
    for step in range(1, args.steps + 1):
        while len(pool) < args.cells:  # refill from freshly augmented samples
            sample = train[Draw(int(rng.integers(len(train))), (args.seed, draw))]
            pool, draw = torch.cat([pool, cells_of(sample.coords, L)]), draw + 1
        pool = pool[torch.randperm(len(pool))]
        cells, pool = pool[: args.cells], pool[args.cells :]
        parents = parent_mask(cells)
        loss = (F.binary_cross_entropy_with_logits(model(cells, parents), cells, reduction="none") * parents).sum()
        opt.zero_grad()
        (loss / parents.sum()).backward()
        opt.step()
        if step % args.eval_every == 0 or step == args.steps:
            tr, va = candidate_accuracy(model, train_cells), candidate_accuracy(model, val_cells)
            print(f"| {step} | {time.time() - t0:.0f} | {tr:.4f} | {va:.4f} |", flush=True)


if __name__ == "__main__":
    main()
