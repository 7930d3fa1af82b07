"""Kedro dataset of the train_texvae stage: the trained model (generic atomic datasets live in
``earthcrafter.datasets``)."""

from __future__ import annotations

from kedro.io import DatasetError

from earthcrafter.datasets import FileDataset
from earthcrafter.models.tex_vae import TexVAE


class TexVAEModelDataset(FileDataset):
    """A trained TexVAE (config + EMA weights) as one ``.pt`` file; loads on CPU in eval mode."""

    def load(self) -> TexVAE:
        if not self._path.is_file():
            raise DatasetError(f"no TexVAE at {self._path}: run `kedro run --pipelines=train_texvae` first")
        return TexVAE.load(self._path)

    def save(self, data: TexVAE) -> None:
        if not isinstance(data, TexVAE):
            raise DatasetError(f"TexVAEModelDataset saves a TexVAE, got {type(data).__name__}")
        data.save(self._path)
