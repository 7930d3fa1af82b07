"""A tiny regression task exercising every trainer code path (dropout uses the RNG)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from earthcrafter.training import Draw, Task


class ToyData(Dataset):
    def __init__(self, n: int = 48, seed: int = 0):
        self.seed = seed
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 8, generator=g)
        w = torch.randn(8, 1, generator=g)
        self.y = torch.sin(self.x @ w)

    def __len__(self) -> int:
        return len(self.x)

    def fingerprint(self) -> str:  # what the trainer compares before resuming
        return f"toy n={len(self.x)} seed={self.seed}"

    def __getitem__(self, item):
        if isinstance(item, Draw):  # seeded input jitter, like a training augmentation
            rng = np.random.default_rng(list(item.seed))
            jitter = torch.from_numpy(rng.normal(0, 0.01, size=8).astype(np.float32))
            return self.x[item.index] + jitter, self.y[item.index]
        return self.x[item], self.y[item]


class ToyTask(Task):
    name = "toy"

    def build_model(self) -> nn.Module:
        return nn.Sequential(nn.Linear(8, 32), nn.GELU(), nn.Dropout(0.1), nn.Linear(32, 1))

    def collate(self, samples):
        return torch.stack([s[0] for s in samples]), torch.stack([s[1] for s in samples])

    def training_step(self, model, batch):
        x, y = batch
        loss = ((model(x) - y) ** 2).mean()
        return loss, {"mse": loss.detach()}

    def count(self, batch):
        return {"samples": len(batch[0])}

    def validation_stats(self, model, batch):
        x, y = batch
        return {"sq_err": ((model(x) - y) ** 2).sum().double(), "n": torch.tensor(float(len(x)), dtype=torch.float64)}

    def metrics_from_stats(self, stats):
        return {"mse": float(stats["sq_err"] / stats["n"])}

    def export_config(self):
        return {"in": 8}
