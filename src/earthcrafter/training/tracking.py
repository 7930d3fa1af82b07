"""The MLflow run of one training: nested under an active run, top-level otherwise.

``kedro run`` opens one run per invocation (earthcrafter.hooks); each training inside it
becomes a nested run named after its configuration (e.g. ``structvae/cblock``) and tagged
``model``, ``ablation`` and ``table`` so reports can query them. Without an active run a
top-level run is started. The tracking URI comes from ``MLFLOW_TRACKING_URI`` or MLflow's
default; only rank 0 talks to MLflow.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)


@contextlib.contextmanager
def training_run(
    run_name: str, tags: dict[str, Any], *, enabled: bool = True, resume_run_id: str | None = None
) -> Iterator[str | None]:
    """Open the run (or re-open ``resume_run_id``), yield its id, close it FINISHED/FAILED."""
    if not enabled:
        yield None
        return
    import mlflow

    nested = mlflow.active_run() is not None
    run = None
    if resume_run_id:
        try:
            if mlflow.get_run(resume_run_id).info.lifecycle_stage == "active":
                run = mlflow.start_run(run_id=resume_run_id, nested=nested)
                log.info("resuming MLflow run %s", resume_run_id)
        except Exception as e:  # the run lived in another tracking store: start a new one
            log.warning("cannot reopen MLflow run %s (%s); starting a new run", resume_run_id, e)
    if run is None:
        run = mlflow.start_run(run_name=run_name, nested=nested)
    mlflow.set_tags({k: str(v) for k, v in tags.items()})
    try:
        yield run.info.run_id
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    mlflow.end_run(status="FINISHED")


def set_tags_keeping_first(tags: dict[str, Any], changed_prefix: str) -> list[str]:
    """Set ``tags`` on the active run (rank 0), keeping the value of one it already holds: a different
    value (a run resumed under other code) is set as ``changed_prefix + key`` instead. Returns the
    keys set that way."""
    from earthcrafter import tracking

    if not tracking.active():
        return []
    import mlflow

    held = mlflow.get_run(mlflow.active_run().info.run_id).data.tags
    new, changed = {}, []
    for key, value in ((k, str(v)) for k, v in tags.items()):
        if key not in held:
            new[key] = value
        elif held[key] != value:
            changed.append(key)
            new[f"{changed_prefix}{key}"] = value
    tracking.set_tags(new)
    return changed
