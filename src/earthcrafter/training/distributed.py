"""Process group from the environment ``torchrun`` sets; a plain process is world size 1.

Launch many GPUs or nodes with ``torchrun --nproc-per-node=G [--nnodes ...] <entry>``; the
same entry point trains on one CPU when started without it. NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import atexit
import datetime
import os
import secrets
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}={raw!r} is not an integer") from None


# What a configuration's ``device`` may say (checked again, with the reasons, by :func:`local_device`).
DEVICE_PATTERN = r"^(auto|cpu|cuda(:[0-9]+)?)$"


def local_device(device: str = "auto") -> torch.device:
    """This process's device for ``device`` = "auto" (cuda:LOCAL_RANK when CUDA exists, else cpu),
    "cpu", "cuda" (cuda:LOCAL_RANK) or "cuda:N" (GPU N, for a single process); joins no process
    group (for inference after training, generation). A CUDA device becomes the current one:
    spconv and gsplat launch their kernels on the current device, whatever their tensors' device."""
    index = None
    if device.startswith("cuda:"):
        try:
            index = int(device.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"device must be auto|cpu|cuda|cuda:N, got {device!r}") from None
        if _env_int("WORLD_SIZE", 1) > 1:
            raise ValueError(f"device {device!r} names one GPU, but under torchrun each rank takes cuda:LOCAL_RANK: "
                             "use device auto or cuda")  # fmt: skip
    elif device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto|cpu|cuda|cuda:N, got {device!r}")
    use_cuda = torch.cuda.is_available() if device == "auto" else device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError(f"device={device!r} requested but CUDA is not available")
    if not use_cuda:
        return torch.device("cpu")
    dev = torch.device("cuda", _env_int("LOCAL_RANK", 0) if index is None else index)
    if dev.index >= torch.cuda.device_count():
        raise RuntimeError(f"device {dev} requested but this machine has {torch.cuda.device_count()} GPU(s)")
    torch.cuda.set_device(dev)
    return dev


def setup(device: str = "auto", timeout_s: float = 1800.0) -> DistEnv:
    """Read RANK/WORLD_SIZE/LOCAL_RANK, pick the device, join the process group if W > 1.

    ``device``: as :func:`local_device` ("auto", "cpu", "cuda", or "cuda:N" for one process).
    """
    rank, world, local = _env_int("RANK", 0), _env_int("WORLD_SIZE", 1), _env_int("LOCAL_RANK", 0)
    dev = local_device(device)  # the current CUDA device too
    use_cuda = dev.type == "cuda"
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if use_cuda else "gloo",
            timeout=datetime.timedelta(seconds=timeout_s),
            **({"device_id": dev} if use_cuda else {}),
        )
        # One group per process, shared by every training in it; destroyed when the process exits
        # (re-initialising a destroyed group under torchrun's store hangs).
        atexit.register(_destroy)
    return DistEnv(rank=rank, world_size=world, local_rank=local, device=dev)


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def all_reduce_sum(t: torch.Tensor, env: DistEnv) -> torch.Tensor:
    if env.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_gather_object(obj, env: DistEnv) -> list:
    if not env.distributed:
        return [obj]
    out = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, env: DistEnv, src: int = 0):
    if not env.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def decided_on_main(fn, env: DistEnv, what: str):
    """``fn()`` on rank 0, its result on every rank. An exception there is raised on every rank
    (the others get its text: any exception pickles that way), so no rank is left waiting in the
    next collective for one that failed."""
    result, error = None, None
    if env.is_main:
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - re-raised below, on every rank
            error = e
    result, text = broadcast_object((result, None if error is None else f"{type(error).__name__}: {error}"), env)
    if error is not None:
        raise error
    if text is not None:
        raise RuntimeError(f"rank 0 failed {what}: {text}")
    return result


_SHARED_MARKER = ".shared-by-ranks-"


def check_shared_folder(folder: str | Path, env: DistEnv, name: str = "output_dir", wait_s: float = 2.0) -> None:
    """Raise on every rank unless every rank reads, in ``folder``, the file rank 0 has just written there.

    Rank 0 alone writes a training's checkpoints; a job restarted with another node as rank 0
    resumes from what that node sees, so a folder some node does not share would silently start
    the run over (or resume an older one). Rank 0 writes a file named and filled with a random
    token, every rank reads it (for up to ``wait_s`` seconds: a network filesystem may show a new
    file late), and rank 0 removes it. A single process checks nothing."""
    if not env.distributed:
        return
    folder = Path(folder)

    def write() -> str:
        folder.mkdir(parents=True, exist_ok=True)
        for leftover in folder.glob(f"{_SHARED_MARKER}*"):  # of a job killed during its check
            leftover.unlink(missing_ok=True)
        token = secrets.token_hex(16)
        (folder / f"{_SHARED_MARKER}{token}").write_text(token)
        return token

    token, main_folder = decided_on_main(lambda: (write(), str(folder)), env, f"to write into {name} {folder}")
    marker = folder / f"{_SHARED_MARKER}{token}"
    seen = all_gather_object((socket.gethostname(), str(folder), _read_token(marker, token, wait_s)), env)
    if env.is_main:
        marker.unlink(missing_ok=True)
    blind = [f"rank {rank} on {host}{'' if path == main_folder else f' (looking in {path})'}: {why}"
             for rank, (host, path, why) in enumerate(seen) if why]  # fmt: skip
    if blind:
        raise RuntimeError(
            f"{name} {main_folder} is not shared by all ranks: {'; '.join(blind)}. Rank 0 alone writes the "
            f"checkpoints there, and a restarted job resumes from what its rank 0 sees: put {name} on a "
            "filesystem every node sees"
        )


def _read_token(path: Path, token: str, wait_s: float) -> str:
    """'' when ``path`` holds ``token``, else what went wrong (after retrying for ``wait_s`` seconds)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            why = "" if path.read_text() == token else "it holds something else"
        except OSError as e:
            why = f"{type(e).__name__}: {e.strerror or e}"
        if not why or time.monotonic() >= deadline:
            return why
        time.sleep(0.1)
