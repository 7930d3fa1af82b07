import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "latents"))
sys.path.insert(0, str(Path(__file__).parent.parent / "training"))

from shared_fixtures import mlflow_uri, one_thread  # noqa: E402,F401


import pytest  # noqa: E402


class _Tiles32(tuple):
    structvae: str


@pytest.fixture
def tiles32(tmp_path):
    """6 cached L=32 tiles (grid 4): (latents manifest, stats), with ``.structvae`` the weights."""
    import torch
    from latent_synth import save_models, write_tiles

    from earthcrafter.latents.cache import cache_latents
    from earthcrafter.models.struct_vae import StructVAE, StructVAEConfig
    from earthcrafter.training.structvae import save_structvae

    manifest = write_tiles(tmp_path / "voxels", ["train"] * 4 + ["val"] * 2, size=32)
    _, tex = save_models(tmp_path)
    torch.manual_seed(0)
    struct = save_structvae(StructVAE(StructVAEConfig(L=32, widths=(16, 16, 32, 32), head_dim=16, enc_depths=(1, 1, 1),
                                                      dec_depths=(1, 1, 1))), tmp_path / "structvae32.pt")  # fmt: skip
    table, stats, _, _ = cache_latents(manifest, {"structvae_path": str(struct), "texvae_path": None,
                                                  "out_dir": str(tmp_path / "latents"), "progress": False,
                                                  "mlflow": False})  # fmt: skip
    out = _Tiles32((table, stats))
    out.structvae = str(struct)
    return out
