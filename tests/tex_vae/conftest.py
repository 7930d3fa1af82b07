import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from texvae_synth import make_tile, write_dataset  # noqa: E402


@pytest.fixture(scope="session")
def synth_tile():
    """(VoxelTile, TileViews): L = 12, 1 m voxels, 4 ray-cast views of 40 px."""
    return make_tile(L=12, voxel_size=1.0, views=4, px=40, seed=0, tile_id="synth_a")


@pytest.fixture(scope="session")
def synth_manifest(tmp_path_factory, synth_tile):
    """Two tiles on disk: synth_a (train) and synth_b (val), and their manifest."""
    other = make_tile(L=12, voxel_size=1.0, views=4, px=40, seed=1, tile_id="synth_b")
    root = tmp_path_factory.mktemp("texvae_tiles")
    return write_dataset(root, [(*synth_tile, "train"), (*other, "val")])


@pytest.fixture(autouse=True)
def one_torch_thread():
    """These tests run tiny ops, for which one intra-op thread is fastest (and stays fast
    on a busy 2-core machine, where two threads per process oversubscribe the cores)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
