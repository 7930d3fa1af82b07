"""Fixtures shared by the training and StructVAE tests."""

import os

import pytest
import torch


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory):
    """One throw-away sqlite tracking store for the session (creating one costs seconds)."""
    import mlflow

    uri = "sqlite:///" + str(tmp_path_factory.mktemp("mlflow") / "mlflow.db")
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    yield uri
    if old is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = old


@pytest.fixture(autouse=True)
def one_thread():
    """These tests run tiny sparse workloads, where OpenMP thread wake-ups cost more than the
    arithmetic (up to 18x slower with 2 threads on a busy 2-core machine): use one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
