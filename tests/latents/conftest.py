"""Fixtures of the latent cache tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "training"))

from latent_synth import save_models, write_tiles  # noqa: E402
from shared_fixtures import one_thread  # noqa: E402,F401


@pytest.fixture
def tiles(tmp_path) -> dict:
    """4 train + 2 val tiles, both VAEs on disk, and a cache config writing under tmp_path."""
    manifest = write_tiles(tmp_path / "voxels", ["train"] * 4 + ["val"] * 2)
    struct, tex = save_models(tmp_path)
    cfg = {"structvae_path": str(struct), "texvae_path": str(tex), "out_dir": str(tmp_path / "latents"),
           "progress": False, "mlflow": False, "device": "cpu"}  # fmt: skip
    return {"manifest": manifest, "cfg": cfg, "root": tmp_path}
