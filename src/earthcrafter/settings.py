"""Kedro project settings."""

from kedro.config import OmegaConfigLoader

from earthcrafter.hooks import MlflowRunHook, ParameterValidationHook

# LIFO: parameters are validated before the MLflow run opens.
HOOKS = (MlflowRunHook(), ParameterValidationHook())

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "config_patterns": {
        "mlflow": ["mlflow*", "mlflow*/**"],
    },
}
