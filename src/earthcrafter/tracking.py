"""MLflow helpers for library code: log when a run is active, stay silent otherwise.

Library functions (trainers, reports, data stages) call these; whether a run exists is
decided by whoever drives them (the Kedro hook, a script, a test). Only rank 0 of a
distributed job logs.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import mlflow


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def active() -> bool:
    return is_main_process() and mlflow.active_run() is not None


def log_metrics(metrics: dict[str, float], step: int | None = None, prefix: str = "") -> None:
    if active():
        clean = {f"{prefix}{k}": float(v) for k, v in metrics.items() if v is not None}
        mlflow.log_metrics(clean, step=step)


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
