"""Seeded, resumable data order shared by all ranks.

The training stream is the concatenation of per-epoch permutations of the dataset,
``perm(seed, 0) ++ perm(seed, 1) ++ ...``. Global step ``s`` consumes draws
``[s·B, (s+1)·B)`` of that stream and rank ``r`` of ``W`` takes the contiguous share
``[r·B/W, (r+1)·B/W)``. The order is therefore a pure function of ``(seed, step)``: a resumed
run continues exactly where the checkpoint left off, and W ranks together see the same
global batch as one process would.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import numpy as np


class Draw(NamedTuple):
    """One sample request: dataset index and the seed of its augmentation RNG."""

    index: int
    seed: tuple[int, int]  # (base seed, global draw number): unique per draw


class GlobalBatchSampler:
    """Infinite batch sampler (for ``DataLoader(batch_sampler=...)``) yielding this rank's draws."""

    def __init__(
        self, num_samples: int, batch_size: int, *, rank: int = 0, world_size: int = 1, seed: int = 0, start_step: int = 0
    ):
        if num_samples <= 0:
            raise ValueError("GlobalBatchSampler: the dataset is empty")
        if batch_size % world_size:
            raise ValueError(f"global batch_size {batch_size} is not divisible by world size {world_size}")
        self.n, self.batch_size, self.seed = num_samples, batch_size, seed
        self.rank, self.world_size, self.start_step = rank, world_size, start_step
        self.per_rank = batch_size // world_size
        self._perm_epoch, self._perm = -1, np.empty(0, dtype=np.int64)

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
            self._perm_epoch = epoch
        return self._perm

    def draws(self, step: int) -> list[Draw]:
        """This rank's draws for global step ``step``."""
        first = step * self.batch_size + self.rank * self.per_rank
        out = []
        for k in range(first, first + self.per_rank):
            epoch, pos = divmod(k, self.n)
            out.append(Draw(int(self._permutation(epoch)[pos]), (self.seed, k)))
        return out

    def state(self, step: int) -> dict:
        return {"seed": self.seed, "step": step, "epoch": step * self.batch_size // self.n}

    def __iter__(self) -> Iterator[list[Draw]]:
        step = self.start_step
        while True:
            yield self.draws(step)
            step += 1


def shard_indices(num_samples: int, rank: int, world_size: int, batch_size: int) -> list[list[int]]:
    """Deterministic validation batches for one rank: indices ``rank::world_size`` in order."""
    mine = list(range(rank, num_samples, world_size))
    return [mine[i : i + batch_size] for i in range(0, len(mine), batch_size)]
