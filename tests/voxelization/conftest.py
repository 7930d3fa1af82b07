import pytest

from ec_vox_helpers import PoolExtractor, make_scene, toy_config, torch_threads

from earthcrafter.geometry.voxelize import voxelize_scene


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def vox_scene():
    return make_scene()


@pytest.fixture(scope="session")
def vox_result(vox_scene):
    with torch_threads(1):
        return voxelize_scene(vox_scene, PoolExtractor(), toy_config())
