"""Helpers shared by the voxelization tests (the known scene lives in tests/features)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "features"))

from ec_toy_scene import BUILDING, PoolExtractor, make_cameras, make_mesh, make_scene, torch_threads  # noqa: E402,F401

from earthcrafter.geometry.crops import CropConfig  # noqa: E402
from earthcrafter.geometry.voxelize import VoxelizeConfig  # noqa: E402


def toy_config(**kw) -> VoxelizeConfig:
    """2 x 2 tiles of 60 m (stride 40) over the central 100 m of the 120 m toy scene, L = 32."""
    base = dict(L=32, crop=CropConfig(central_size_m=100, tile_size_m=60, tile_stride_m=40))
    base.update(kw)
    cfg = VoxelizeConfig(**base)
    cfg.aggregation.progress = False
    return cfg
