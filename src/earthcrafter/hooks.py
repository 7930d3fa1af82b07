"""Kedro hooks: parameter validation at start, and one MLflow run per ``kedro run``."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from earthcrafter import config, tracking

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"


class ParameterValidationHook:
    """Fail before anything runs when a parameter key or value is wrong."""

    @hook_impl
    def after_context_created(self, context) -> None:
        config.validate_all(context.params)


class MlflowRunHook:
    """Every ``kedro run`` is one MLflow run: flattened parameters, git commit, env, pipeline.

    ``conf/<env>/mlflow.yml`` sets ``tracking_uri`` (default: a local sqlite store in the
    project folder) and ``experiment``; the ``MLFLOW_TRACKING_URI`` environment variable
    wins over both, so pointing at a server is one line either way. Under ``torchrun``
    only rank 0 opens the run.
    """

    def __init__(self) -> None:
        self._context = None
        self._started = False

    @hook_impl
    def after_context_created(self, context) -> None:
        self._context = context

    def _settings(self) -> dict[str, Any]:
        try:
            settings = dict(self._context.config_loader["mlflow"] or {})
        except (KeyError, ValueError):
            settings = {}
        unknown = set(settings) - {"tracking_uri", "experiment", "enabled"}
        if unknown:
            raise config.ConfigError(f"mlflow.yml: unknown key(s) {sorted(unknown)}; known: tracking_uri, experiment, enabled")
        return settings

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        import mlflow

        settings = self._settings()
        if not settings.get("enabled", True) or not tracking.is_main_process():
            return
        project = Path(run_params.get("project_path") or Path.cwd())
        uri = os.environ.get("MLFLOW_TRACKING_URI") or settings.get("tracking_uri") or DEFAULT_TRACKING_URI
        if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
            uri = "sqlite:///" + str(project / uri[len("sqlite:///") :])
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(settings.get("experiment", "earthcrafter"))
        names = run_params.get("pipeline_names") or ["__default__"]
        pipeline_name = "+".join(names)
        mlflow.start_run(run_name=pipeline_name)
        self._started = True
        params = self._context.params if self._context is not None else {}
        # the validated sections, defaults filled in: what the run actually used
        tracking.log_params(config.flatten(config.validate_all(params)))
        tracking.set_tags(
            {
                "pipeline": pipeline_name,
                "kedro_env": run_params.get("env") or "local",
                "kedro_run_id": run_params.get("run_id"),
                "git_commit": tracking.git_commit(project),
                "mlflow.source.git.commit": tracking.git_commit(project),
                "runtime_params": run_params.get("runtime_params") or {},
            }
        )
        log.info("MLflow run %s at %s", mlflow.active_run().info.run_id, uri)

    @hook_impl
    def after_pipeline_run(self, run_params, run_result, pipeline, catalog) -> None:
        self._end("FINISHED")

    @hook_impl
    def on_pipeline_error(self, error, run_params, pipeline, catalog) -> None:
        self._end("FAILED")

    def _end(self, status: str) -> None:
        import mlflow

        tracking.wait_for_uploads()  # the trainers' checkpoints upload in the background
        if self._started:
            while mlflow.active_run() is not None:  # close nested runs a node left open
                mlflow.end_run(status=status)
            self._started = False
