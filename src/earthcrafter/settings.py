"""Kedro project settings."""

from kedro.config import OmegaConfigLoader

from earthcrafter.hooks import MlflowRunHook, ParameterValidationHook

# LIFO: parameters are validated before the MLflow run opens.
HOOKS = (MlflowRunHook(), ParameterValidationHook())

# Envs whose parameter files override conf/base key by key.
KEY_BY_KEY_ENVS = frozenset({"local"})


class ProjectConfigLoader(OmegaConfigLoader):
    """``OmegaConfigLoader`` where conf/local overrides the base parameters key by key.

    - ``local`` (the default run env, your machine's overrides): nested mappings merge key by
      key, so ``acquisition: {imports: [...]}`` keeps ``acquisition.synthetic`` from base.
      A list is a value: it replaces the base list whole.
    - Any other env (``--env=paper``): each top-level section it names replaces the base
      section whole, so the section is read as written there (Kedro's default).
    """

    def __init__(self, conf_source, env=None, runtime_params=None, **kwargs):
        if (env or kwargs.get("default_run_env")) in KEY_BY_KEY_ENVS:
            kwargs["merge_strategy"] = {"parameters": "soft", **(kwargs.get("merge_strategy") or {})}
        super().__init__(conf_source, env, runtime_params, **kwargs)


CONFIG_LOADER_CLASS = ProjectConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "config_patterns": {
        "mlflow": ["mlflow*", "mlflow*/**"],
    },
}
