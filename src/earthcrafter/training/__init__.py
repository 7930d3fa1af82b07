"""One trainer for all models: devices, DDP, precision, EMA, checkpoints, MLflow."""

from earthcrafter.training.config import TrainerConfig
from earthcrafter.training.sampler import Draw, GlobalBatchSampler
from earthcrafter.training.task import Task
from earthcrafter.training.trainer import Trainer

__all__ = ["Draw", "GlobalBatchSampler", "Task", "Trainer", "TrainerConfig"]
