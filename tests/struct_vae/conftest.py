import importlib.util
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "training"))

from shared_fixtures import mlflow_uri, one_thread  # noqa: E402,F401


@pytest.fixture
def load_script():
    """``load_script("name")``: scripts/name.py imported as a module (scripts/ is not a package)."""

    def load(name: str):
        path = Path(__file__).resolve().parents[2] / "scripts" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
