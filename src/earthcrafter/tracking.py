"""MLflow helpers for library code: log when a run is active, stay silent otherwise.

Library functions (trainers, reports, data stages) call these; whether a run exists is
decided by whoever drives them (the Kedro hook, a script, a test). Only rank 0 of a
distributed job logs.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import subprocess
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import mlflow

log = logging.getLogger(__name__)


def is_main_process() -> bool:
    """Rank 0 of a torchrun job, or a plain process (RANK unset or empty)."""
    return int(os.environ.get("RANK") or 0) == 0


def active() -> bool:
    return is_main_process() and mlflow.active_run() is not None


def log_metrics(metrics: dict[str, float], step: int | None = None, prefix: str = "") -> None:
    if active():
        clean = {f"{prefix}{k}": float(v) for k, v in metrics.items() if v is not None}
        mlflow.log_metrics(clean, step=step)


def log_metrics_to_run(run_id: str | None, metrics: dict[str, float], prefix: str = "") -> None:
    """Add ``metrics`` to a run that may already be closed (e.g. a training's, once generation from
    it is scored); rank 0 only, nothing without a run id."""
    if run_id and is_main_process():
        clean = {f"{prefix}{k}": float(v) for k, v in metrics.items() if v is not None}
        client = mlflow.MlflowClient()
        for key, value in clean.items():
            client.log_metric(run_id, key, value)


def log_params(params: dict[str, Any], prefix: str = "", changed_prefix: str = "") -> list[str]:
    """Log params in batches (MLflow caps a batch at 100 and a value at 6000 chars).

    MLflow never changes a logged value. Keys the active run already holds with the same value
    are skipped; one with another value (a resumed run on more GPUs, at another logging cadence)
    is logged again under ``changed_prefix + key``, or raises without a ``changed_prefix``.
    Returns the changed keys."""
    if not active():
        return []
    held = mlflow.get_run(mlflow.active_run().info.run_id).data.params
    items, changed = {}, []
    for k, v in params.items():
        key, value = _param_key(f"{prefix}{k}"), str(v)[:6000]
        if key not in held:
            items[key] = value
        elif held[key] != value:
            if not changed_prefix:
                raise ValueError(f"MLflow param {key!r} is {held[key]!r} in this run; cannot log {value!r}")
            changed.append(key)
            items[_param_key(f"{changed_prefix}{key}")] = value
    pairs = [(k, v) for k, v in items.items() if held.get(k, v) == v]  # a repeated resume at the same step
    for i in range(0, len(pairs), 100):
        mlflow.log_params(dict(pairs[i : i + 100]))
    return changed


def _param_key(key: str) -> str:
    """MLflow keys allow alphanumerics and ``_-. :/``; anything else becomes ``_``."""
    return re.sub(r"[^\w\-. :/]", "_", key)


def set_tags(tags: dict[str, Any]) -> None:
    if active():
        mlflow.set_tags({k: str(v) for k, v in tags.items()})


def log_figure(fig, name: str) -> None:
    """Log a matplotlib figure as ``<name>`` (PNG) under the active run."""
    if active():
        mlflow.log_figure(fig, name)


def log_dict(d: dict, name: str) -> None:
    if active():
        mlflow.log_dict(d, name)


def log_artifact(path: str | os.PathLike, artifact_path: str | None = None) -> None:
    if active():
        mlflow.log_artifact(str(path), artifact_path)


# Uploads that can take minutes (a multi-GB checkpoint to a remote server) run on one background
# thread: the other ranks of a distributed job go on instead of waiting at a barrier for rank 0.
_uploader: ThreadPoolExecutor | None = None
_pending: list[tuple[Future, str, str, str | None, str]] = []  # future, file, run id, artifact path, tracking URI
_lock = threading.Lock()


def log_artifact_in_background(path: str | os.PathLike, artifact_path: str | None = None) -> None:
    """Upload ``path`` to the active run from a background thread and return at once.

    The file must stay in place until `wait_for_uploads` (the Kedro hook calls it when the
    pipeline ends, and it runs at exit). The run may be ended meanwhile: the upload names it by id.
    """
    global _uploader
    if not active():
        return
    run_id, client = mlflow.active_run().info.run_id, mlflow.MlflowClient()
    with _lock:
        if _uploader is None:
            _uploader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlflow-upload")
            atexit.register(wait_for_uploads)
        future = _uploader.submit(client.log_artifact, run_id, str(path), artifact_path)
        _pending.append((future, str(path), run_id, artifact_path, mlflow.get_tracking_uri()))


def wait_for_uploads() -> int:
    """Block until every background upload has finished. A failed one is logged with the command
    that uploads the file by hand (the file itself is kept); returns how many failed."""
    with _lock:
        pending, _pending[:] = list(_pending), []
    running = sum(not p[0].done() for p in pending)
    if running:
        log.info("waiting for %d artifact upload(s) to MLflow", running)
    failed = 0
    for future, path, run_id, artifact_path, uri in pending:
        try:
            future.result()
        except Exception as e:
            failed += 1
            into = f" --artifact-path {artifact_path}" if artifact_path else ""
            log.error("MLflow upload of %s to run %s failed (%s: %s); the file is kept. To upload it: "
                      "MLFLOW_TRACKING_URI=%s mlflow artifacts log-artifact --local-file %s --run-id %s%s",
                      path, run_id, type(e).__name__, e, uri, path, run_id, into)  # fmt: skip
    return failed


def log_image(image, name: str) -> None:
    """Log an HxWx3 uint8 array as a PNG artifact."""
    if active():
        mlflow.log_image(image, name)


def git_commit(cwd: str | os.PathLike | None = None) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, timeout=10,
        ).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
