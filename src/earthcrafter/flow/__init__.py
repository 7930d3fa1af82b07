"""Flow matching: the rectified-flow objective, timestep sampling, the Euler sampler with CFG, and
the latent statistics the flow models normalise with. Works on dense tensors [B, ...] and on
:class:`~earthcrafter.sparse.SparseTensor` batches alike."""

from earthcrafter.flow.matching import RectifiedFlow, drop_condition, sample_timesteps, shift_timesteps
from earthcrafter.flow.sampler import cfg_velocity, euler_sample, guidance, timestep_schedule

__all__ = [
    "RectifiedFlow",
    "cfg_velocity",
    "drop_condition",
    "euler_sample",
    "guidance",
    "sample_timesteps",
    "shift_timesteps",
    "timestep_schedule",
]
