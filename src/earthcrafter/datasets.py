"""Kedro datasets for earthcrafter's data layers (the only io code that knows Kedro).

Every save is atomic: a crashed node leaves the previous version in place, never half of
a new one. Under ``torchrun`` only rank 0 saves (:class:`ProjectDataset`).
"""

from __future__ import annotations

import functools
import io
import json
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from kedro.io import AbstractDataset, DatasetError

from earthcrafter import tracking
from earthcrafter.io.atomic import atomic_path, atomic_write_text, json_default
from earthcrafter.io.imported_scene import read_imported_scene, write_imported_scene
from earthcrafter.io.scene import Scene, is_folder_name, list_scenes

log = logging.getLogger(__name__)

_NOTHING = object()


class ProjectDataset(AbstractDataset):
    """Base of earthcrafter's datasets: under ``torchrun`` only rank 0 saves.

    Every rank of a torchrun job runs the pipeline, and the trainers hand rank 0's results to every
    rank; rank 0 writes them. On the other ranks a save writes nothing (N ranks renaming into one
    path race, and model files would be written N times); what it was given is kept, as the file
    would read back (:meth:`_as_loaded`), and that rank's later loads return it, so a node
    downstream does not read a file rank 0 may still be writing. A dataset whose data does not read
    back as given (a folder of scenes) keeps nothing: its loads read the disk.
    """

    _held: Any = _NOTHING

    def _as_loaded(self, data: Any) -> Any:
        """``data`` as a load would return it after it was saved (``_NOTHING``: loads read the disk)."""
        return _NOTHING

    @classmethod
    def _save_wrapper(cls, save_func):
        save = super()._save_wrapper(save_func)

        @functools.wraps(save_func)
        def save_on_rank_zero(self, data) -> None:
            if tracking.is_main_process():
                return save(self, data)
            log.debug("rank %s: not saving %s (rank 0 does)", os.environ.get("RANK"), self)
            self._held = self._as_loaded(data)

        save_on_rank_zero.__savewrapped__ = True  # Kedro re-wraps an inherited save from __wrapped__ (the plain one)
        return save_on_rank_zero

    @classmethod
    def _load_wrapper(cls, load_func):
        load = super()._load_wrapper(load_func)

        @functools.wraps(load_func)
        def held_or_load(self):
            return load(self) if self._held is _NOTHING else self._held

        held_or_load.__loadwrapped__ = True
        return held_or_load


class SceneFolderDataset(ProjectDataset, AbstractDataset[dict[str, Callable[[], Scene]], dict[str, Any]]):
    """A folder of scene folders (``<path>/<scene_id>/``), partitioned by scene.

    ``load`` returns ``{scene_id: loader}`` where ``loader()`` reads the scene (an
    ``ImportedScene`` with its orthophoto when the folder has one), so nodes map over scenes
    without holding them all in memory. ``save`` takes
    ``{scene_id: Scene | callable returning Scene}`` (callables are evaluated one at a
    time, writing as they go) into a new folder beside ``path`` that replaces it only once
    every scene is written, so the folder always equals the latest output: a failure on any
    scene leaves the previous folder whole. Scene ids must be plain folder names (no path
    separator, no leading dot) and a save needs at least one scene.
    """

    def __init__(self, path: str, load_frames: bool = True, metadata: dict | None = None):
        self._path = Path(path)
        self._load_frames = load_frames
        self.metadata = metadata

    def load(self) -> dict[str, Callable[[], Scene]]:
        if not self._path.is_dir():
            raise DatasetError(f"no scenes at {self._path}: run the stage that produces them first")
        ids = list_scenes(self._path)
        return {sid: (lambda sid=sid: read_imported_scene(self._path / sid, self._load_frames)) for sid in ids}

    def save(self, data: dict[str, Any]) -> None:
        if not data:
            raise DatasetError(f"no scenes to save to {self._path}; refusing to replace it with an empty folder")
        bad = [sid for sid in data if not is_folder_name(sid)]
        if bad:
            raise DatasetError(f"scene ids {bad} are not plain folder names; {self._path} would not list them")
        written, skipped = [], []
        with atomic_path(self._path) as staging:
            staging.mkdir()
            for sid, item in data.items():
                scene = item() if callable(item) else item
                if scene is None:  # the producer skipped it and logged why
                    skipped.append(sid)
                    continue
                if scene.scene_id != sid:
                    raise DatasetError(f"scene id mismatch: key {sid!r} holds scene {scene.scene_id!r}")
                write_imported_scene(staging, scene)  # keeps an orthophoto crop when the scene has one
                written.append(sid)
            if not written:
                raise DatasetError(f"every scene was skipped; {self._path} is unchanged")
            missing = sorted(set(written) - set(list_scenes(staging)))
            if missing:
                raise DatasetError(f"scenes {missing} were written but are not listed; {self._path} is unchanged")
        if skipped:
            log.warning("saved %d scenes to %s; skipped %d: %s", len(written), self._path, len(skipped), skipped)
        else:
            log.info("saved %d scenes to %s", len(written), self._path)

    def _exists(self) -> bool:
        return bool(list_scenes(self._path))

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path), "load_frames": self._load_frames}


class FileDataset(ProjectDataset):
    """Base of the single-file datasets: a ``path`` (and Kedro ``metadata``); exists when the file does."""

    def __init__(self, path: str, metadata: dict | None = None):
        self._path = Path(path)
        self.metadata = metadata

    def _exists(self) -> bool:
        return self._path.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}


class AtomicJSONDataset(FileDataset):
    """A JSON file written atomically (reports, metrics)."""

    def load(self) -> dict:
        return json.loads(self._path.read_text())

    def save(self, data: dict) -> None:
        atomic_write_text(self._path, json.dumps(data, indent=2, sort_keys=True, default=_json_or_str) + "\n")

    def _as_loaded(self, data: dict) -> dict:
        return json.loads(json.dumps(data, default=_json_or_str))


def _json_or_str(o):
    try:
        return json_default(o)
    except TypeError:
        return str(o)


class AtomicTextDataset(FileDataset):
    """A text file (CSV, markdown) written atomically."""

    def load(self) -> str:
        if not self._path.is_file():
            raise DatasetError(f"text file not found: {self._path}")
        return self._path.read_text()

    def save(self, data: str) -> None:
        atomic_write_text(self._path, data)

    def _as_loaded(self, data: str) -> str:
        return data


class AtomicParquetDataset(FileDataset):
    """A pandas DataFrame as one Parquet file, written atomically."""

    def load(self) -> pd.DataFrame:
        if not self._path.is_file():
            raise DatasetError(f"table not found: {self._path}")
        return pd.read_parquet(self._path)

    def save(self, data: pd.DataFrame) -> None:
        with atomic_path(self._path) as tmp:
            data.to_parquet(tmp, index=False)

    def _as_loaded(self, data: pd.DataFrame) -> pd.DataFrame:
        return pd.read_parquet(io.BytesIO(data.to_parquet(index=False)))


class SceneTilesDataset(ProjectDataset, AbstractDataset[dict[str, Path], dict[str, Any]]):
    """Per-scene voxel tiles: ``<path>/<scene_id>/`` holds ``<tile_id>.parquet``,
    ``<tile_id>.views.npz`` and ``report.json`` (with the skipped items and their reasons).

    ``save`` takes ``{scene_id: SceneVoxels | callable returning SceneVoxels}`` and writes each
    scene folder atomically; ``load`` returns ``{scene_id: folder}``.
    """

    def __init__(self, path: str, metadata: dict | None = None):
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> dict[str, Path]:
        if not self._path.is_dir():
            raise DatasetError(f"no featured scenes at {self._path}: run semantic_aggregation first")
        return {p.name: p for p in sorted(self._path.iterdir()) if (p / "report.json").is_file()}

    def save(self, data: dict[str, Any]) -> None:
        from earthcrafter.io.tiles import write_scene_tiles

        self._path.mkdir(parents=True, exist_ok=True)
        for sid, item in data.items():
            voxels = item() if callable(item) else item
            with atomic_path(self._path / sid) as tmp:
                tmp.mkdir()
                write_scene_tiles(tmp, voxels.tiles, voxels.views)
                report = {"report": voxels.report, "skipped": voxels.skipped}
                (tmp / "report.json").write_text(json.dumps(report, indent=1, default=json_default))
        for stale in {p.name for p in self._path.iterdir() if p.is_dir() and not p.name.startswith(".")} - set(data):
            shutil.rmtree(self._path / stale)

    def _exists(self) -> bool:
        return self._path.is_dir() and any(self._path.iterdir())

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}

