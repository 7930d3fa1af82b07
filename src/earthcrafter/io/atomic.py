"""Atomic writes: every file and folder earthcrafter produces appears whole or not at all."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path; on success rename it onto ``path``.

    Works for files and folders. On error the temporary is removed and ``path`` is
    untouched, so a crash never leaves a half-written output behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    target = tmp / path.name
    try:
        yield target
        if not target.exists():
            raise FileNotFoundError(f"atomic write of {path} produced nothing")
        if path.is_dir() and target.is_dir():
            # Swap folders: move the old one aside, move the new one in, drop the old.
            old = tmp / (path.name + ".old")
            os.replace(path, old)
            os.replace(target, path)
        else:
            if path.is_dir():
                shutil.rmtree(path)
            os.replace(target, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_problem(path: str | os.PathLike, marker: str, what: str) -> str | None:
    """Why an atomic folder write may not replace ``path`` whole (None: it may). It must be new, empty,
    or an earlier ``what``, which holds the file ``marker``: anything else in it would be lost."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        return "the output path exists and is not a folder"
    if path.is_dir() and any(path.iterdir()) and not (path / marker).is_file():
        return (f"the output folder exists and is not {what} (no {marker}); it would be replaced whole: "
                "choose a new or empty folder")
    return None


def json_default(o):
    """``json.dumps(default=...)`` hook for numpy scalars/arrays and paths."""
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-serialisable: {type(o)}")


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
