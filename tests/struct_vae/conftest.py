import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "training"))

from shared_fixtures import mlflow_uri, one_thread  # noqa: E402,F401
