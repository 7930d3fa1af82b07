import pytest

from ec_toy_scene import make_scene, torch_threads


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def toy_scene():
    return make_scene()
