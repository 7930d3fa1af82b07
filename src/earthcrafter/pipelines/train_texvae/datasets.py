"""Kedro dataset of the train_texvae stage: the trained model (generic atomic datasets live in
``earthcrafter.datasets``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from earthcrafter.models.tex_vae import TexVAE


class TexVAEModelDataset(AbstractDataset[TexVAE, TexVAE]):
    """A trained TexVAE (config + EMA weights) as one ``.pt`` file; loads on CPU in eval mode."""

    def __init__(self, path: str, metadata: dict | None = None):
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> TexVAE:
        if not self._path.is_file():
            raise DatasetError(f"no TexVAE at {self._path}: run `kedro run --pipeline=train_texvae` first")
        return TexVAE.load(self._path)

    def save(self, data: TexVAE) -> None:
        if not isinstance(data, TexVAE):
            raise DatasetError(f"TexVAEModelDataset saves a TexVAE, got {type(data).__name__}")
        data.save(self._path)

    def _exists(self) -> bool:
        return self._path.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
