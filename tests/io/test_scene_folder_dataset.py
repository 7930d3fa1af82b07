"""SceneFolderDataset: a save replaces the folder whole or not at all; ids must be listable."""

from __future__ import annotations

import numpy as np
import pytest
from kedro.io import DatasetError

from earthcrafter.datasets import SceneFolderDataset
from earthcrafter.io.scene import Points, Scene, list_scenes, read_scene


def _scene(sid: str, n: int = 5) -> Scene:
    xyz = np.arange(3 * n, dtype=np.float64).reshape(n, 3)
    points = Points(xyz, np.zeros((n, 3), np.uint8), np.zeros(n, np.uint8))
    return Scene(sid, {"source": "lidar", "size_m": 1.0}, points=points)


def _points(root, sid: str) -> int:
    return len(read_scene(root / sid, load_frames=False).points.xyz)


def test_save_replaces_the_folder_and_drops_stale_scenes(tmp_path):
    ds = SceneFolderDataset(str(tmp_path / "scenes"))
    ds.save({"a": _scene("a"), "b": lambda: _scene("b")})
    ds.save({"b": _scene("b", 7), "c": _scene("c")})
    assert list_scenes(tmp_path / "scenes") == ["b", "c"] == sorted(ds.load())
    assert _points(tmp_path / "scenes", "b") == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scenes"]  # no staging folder left


def test_a_failing_scene_leaves_the_previous_folder_whole(tmp_path):
    ds = SceneFolderDataset(str(tmp_path / "scenes"))
    ds.save({"a": _scene("a"), "b": _scene("b")})

    def broken():
        raise ValueError("bad source")

    with pytest.raises(DatasetError, match="bad source"):  # Kedro wraps what the producer raised
        ds.save({"a": _scene("a", 9), "c": _scene("c"), "d": broken})
    assert list_scenes(tmp_path / "scenes") == ["a", "b"]
    assert _points(tmp_path / "scenes", "a") == 5  # not the rewritten version
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scenes"]


def test_ids_that_would_not_be_listed_and_empty_saves_are_refused(tmp_path):
    ds = SceneFolderDataset(str(tmp_path / "scenes"))
    ds.save({"a": _scene("a")})
    for bad in ("survey/2024", ".hidden", ""):
        with pytest.raises(DatasetError, match="not plain folder names"):
            ds.save({bad: _scene(bad), "b": _scene("b")})
    with pytest.raises(DatasetError, match="no scenes to save"):
        ds.save({})
    with pytest.raises(DatasetError, match="every scene was skipped"):
        ds.save({"b": lambda: None})
    assert list_scenes(tmp_path / "scenes") == ["a"]
