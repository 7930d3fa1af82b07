"""Trainer settings, shared by every model (``trainer:`` in a model's parameters)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TrainerConfig(BaseModel):
    """Optimisation, schedule, precision, checkpointing and logging of one training run.

    ``batch_size`` is the *global* batch: with W processes each rank takes
    ``batch_size / W`` samples per step (in ``accum_steps`` micro-batches), so a run's trajectory
    does not depend on how many devices it is spread over.
    """

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(1000, ge=1, description="optimizer steps in the whole run (the schedule's length)")
    batch_size: int = Field(4, ge=1, description="global batch (samples per step over all ranks)")
    accum_steps: int = Field(
        1, ge=1, description="micro-batches per rank per step (gradient accumulation): the same global batch in "
        "less memory; batch_size / world size must be a multiple of it")
    lr: float = Field(1e-4, gt=0, description="peak AdamW learning rate")
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="final lr as a fraction of the peak")
    warmup_steps: int = Field(0, ge=0, description="linear warm-up from 0 to the peak lr")
    poly_power: float = Field(1.0, gt=0, description="polynomial decay power after warm-up")
    weight_decay: float = Field(0.01, ge=0, description="AdamW decay (not applied to biases and norms)")
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = Field(1.0, ge=0, description="max global grad norm; 0 disables clipping")
    ema_decay: float = Field(0.999, ge=0, lt=1, description="EMA of the weights; validation/export use it")
    ema_start: int = Field(0, ge=0, description="steps before the EMA starts tracking (copies weights until then)")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="auto = bf16 autocast on CUDA, fp32 on CPU"
    )
    seed: int = 0
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes per rank")
    cpu_threads: int = Field(
        0, ge=0, description="torch intra-op threads when training on CPU (0: torch's default)"
    )
    log_every: int = Field(10, ge=1)
    val_every: int = Field(0, ge=0, description="validate every k steps (0: only at the end)")
    val_batch_size: int = Field(4, ge=1, description="validation samples per rank per batch")
    ckpt_every: int = Field(0, ge=0, description="checkpoint every k steps (0: only at the end)")
    keep_last: int = Field(2, ge=1, description="checkpoints kept on disk")
    resume: bool = Field(True, description="continue from the newest checkpoint in the run folder")
    figures: bool = Field(True, description="write and log the task's figures after training")
    progress: bool = Field(True, description="tqdm progress bars (rank 0)")
    activation_checkpointing: bool = Field(
        False, description="recompute each block's activations in the backward pass instead of keeping them: "
        "one more forward pass per step for a fraction of the activation memory (large models on large samples)")

    @model_validator(mode="after")
    def _check(self) -> TrainerConfig:
        if self.warmup_steps >= self.steps and self.warmup_steps > 0:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be < steps ({self.steps})")
        if self.batch_size % self.accum_steps:
            raise ValueError(f"batch_size ({self.batch_size}) must be a multiple of accum_steps ({self.accum_steps})")
        return self
