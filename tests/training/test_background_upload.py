"""Large artifacts (the exported model, the last checkpoint) upload to MLflow on a background thread:
rank 0 does not hold the other ranks while a multi-GB checkpoint goes to a slow server."""

from __future__ import annotations

import logging
import threading

import pytest

from earthcrafter import tracking


@pytest.fixture
def experiment(mlflow_uri):
    """This file's experiment in the test store (another test may have left another one active)."""
    import mlflow

    mlflow.set_experiment("background-upload-tests")
    return mlflow_uri


@pytest.fixture
def held_uploads(monkeypatch):
    """Uploads wait until the test sets the returned event."""
    import mlflow

    release = threading.Event()
    real = mlflow.MlflowClient.log_artifact

    def held(self, run_id, local_path, artifact_path=None):
        assert release.wait(30), "upload never released"
        return real(self, run_id, local_path, artifact_path)

    monkeypatch.setattr(mlflow.MlflowClient, "log_artifact", held)
    yield release
    release.set()
    tracking.wait_for_uploads()


def _paths(run_id: str, folder: str) -> list[str]:
    import mlflow

    return [a.path for a in mlflow.MlflowClient().list_artifacts(run_id, folder)]


def test_upload_returns_at_once_and_the_wait_sees_it_through(tmp_path, experiment, held_uploads):
    import mlflow

    ckpt = tmp_path / "step_4.pt"
    ckpt.write_bytes(b"\0" * 4096)
    with mlflow.start_run() as run:
        tracking.log_artifact_in_background(ckpt, "checkpoints")  # returns while the upload is held
    assert _paths(run.info.run_id, "checkpoints") == []  # the run ended; its upload has not happened yet
    held_uploads.set()
    assert tracking.wait_for_uploads() == 0
    assert _paths(run.info.run_id, "checkpoints") == ["checkpoints/step_4.pt"]
    assert tracking.wait_for_uploads() == 0  # nothing left to wait for


def test_a_failed_upload_is_reported_with_the_file_and_run(tmp_path, experiment, monkeypatch, caplog):
    import mlflow

    def broken(self, run_id, local_path, artifact_path=None):
        raise OSError("tracking server unreachable")

    monkeypatch.setattr(mlflow.MlflowClient, "log_artifact", broken)
    model = tmp_path / "model.pt"
    model.write_bytes(b"\0" * 16)
    with mlflow.start_run() as run:
        tracking.log_artifact_in_background(model, "checkpoints")
    with caplog.at_level(logging.ERROR, logger="earthcrafter.tracking"):
        assert tracking.wait_for_uploads() == 1
    assert "tracking server unreachable" in caplog.text and model.is_file()
    # the command that redoes it names the store, the run and the folder
    assert (f"MLFLOW_TRACKING_URI={mlflow.get_tracking_uri()} mlflow artifacts log-artifact --local-file {model} "
            f"--run-id {run.info.run_id} --artifact-path checkpoints") in caplog.text


def test_without_a_run_nothing_is_queued(tmp_path):
    import mlflow

    assert mlflow.active_run() is None
    tracking.log_artifact_in_background(tmp_path / "missing.pt")
    assert tracking.wait_for_uploads() == 0
