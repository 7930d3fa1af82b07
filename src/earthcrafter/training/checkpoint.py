"""Checkpoints: atomic writes, keep the newest k, load the newest readable one.

A checkpoint is one file ``<dir>/step_<step:08d>.pt`` holding plain tensors and Python
containers (loadable with ``weights_only=True``). It is written to a temporary sibling and
renamed into place, so a crash mid-write leaves the previous checkpoint untouched.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from earthcrafter.io.atomic import atomic_path

log = logging.getLogger(__name__)

_NAME = re.compile(r"^step_(\d{8})\.pt$")


def checkpoint_path(directory: str | Path, step: int) -> Path:
    return Path(directory) / f"step_{step:08d}.pt"


def list_checkpoints(directory: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of every finished checkpoint in ``directory``, oldest first."""
    d = Path(directory)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def save_checkpoint(directory: str | Path, step: int, state: dict[str, Any], keep_last: int) -> Path:
    """Write ``state`` atomically, then delete all but the newest ``keep_last`` checkpoints.

    The file's data reaches the disk before its name does (fsync, then rename, then fsync of the
    folder): after a power cut or a node crash the newest name holds a whole checkpoint, not an
    empty file. Temporaries of a writer killed mid-write are removed."""
    path = checkpoint_path(directory, step)
    for leftover in Path(directory).glob(".step_*.pt.*.tmp"):  # one writer (rank 0): nothing else is writing
        shutil.rmtree(leftover, ignore_errors=True)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
        _fsync(tmp)
    _fsync(path.parent)
    for _, old in list_checkpoints(directory)[:-keep_last]:
        old.unlink(missing_ok=True)
    return path


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_latest(directory: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any] | None:
    """The newest checkpoint that loads, or None. Unreadable files are skipped with a warning."""
    found = load_latest_with_path(directory, map_location)
    return found[1] if found else None


def load_latest_with_path(
    directory: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[Path, dict[str, Any]] | None:
    """(path, state) of the newest checkpoint that loads, or None."""
    for step, path in reversed(list_checkpoints(directory)):
        try:
            return path, torch.load(path, map_location=map_location, weights_only=True)
        except Exception as e:  # a damaged file must not block resuming from an older one
            log.warning("checkpoint %s (step %d) is unreadable, trying an older one: %s", path, step, e)
    return None


def rng_state() -> dict[str, Any]:
    """Every RNG the training step may touch, as weights_only-loadable values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu())


def load_export(
    path: str | Path, model: str, produced_by: str, what: str | None = None, map_location: str | torch.device = "cpu"
) -> dict:
    """The blob of a trainer's ``model.pt`` export (``{"model", "config", "state_dict", ...}``),
    checked to hold ``model``; ``what`` (default: the model name) and ``produced_by`` (a pipeline)
    name the file in the missing-file error."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what or model} not found: {path} (run `kedro run --pipelines={produced_by}`)")
    blob = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(blob, dict) or blob.get("model") != model:
        found = blob.get("model") if isinstance(blob, dict) else type(blob).__name__
        raise ValueError(f"{path}: holds a {found!r} model, not a {model}")
    return blob
