"""One survey imported twice: identical input files fail at start, overlapping LiDAR surveys are warned about."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
from import_helpers import grid_points, write_las
from PIL import Image

from earthcrafter.io import sources
from earthcrafter.io.scene import list_scenes
from earthcrafter.io.sources import check_sources, import_to_scenes
from earthcrafter.pipelines.acquisition import nodes


def _las(path, **kwargs):
    return str(write_las(path, grid_points(**kwargs), rgb=np.full((400, 3), 60)))


def test_a_renamed_copy_of_the_readme_survey_fails_at_start_naming_both(tmp_path, real_data, monkeypatch):
    """The README's autzen entry kept, and the same file copied under another name: two scenes of one survey."""
    copy = tmp_path / "autzen_trim.las"
    shutil.copyfile(real_data / "autzen_trim.las", copy)
    options = {"orthophoto": str(real_data / "autzen.jpg"), "world_file": str(real_data / "autzen.wld")}
    imports = [{"kind": "las", "path": str(real_data / "autzen_trim.las"), "scene_id": "autzen", "options": options},
               {"kind": "las", "path": str(copy)}]
    monkeypatch.setattr(nodes, "generate_site", lambda *a: pytest.fail("generated a site before checking imports"))
    params = {"synthetic": {"num_sites": 1}, "imports": imports}
    with pytest.raises(ValueError, match="import the same data") as err:
        nodes.acquire_scenes(params)
    message = str(err.value)
    assert f"acquisition.imports[0] (las {real_data / 'autzen_trim.las'}, scene autzen)" in message
    assert f"acquisition.imports[1] (las {copy}, scene autzen_trim)" in message
    assert "training" in message and "remove one entry" in message
    assert not isinstance(err.value, sources.DataImportError)


def test_the_same_path_twice_and_skip_mode_fail_too(tmp_path):
    path = _las(tmp_path / "a.las")
    spec = [{"kind": "las", "path": path}, {"kind": "las", "path": path, "scene_id": "again"}]
    with pytest.raises(ValueError, match=r"sources\[0\] .*scene a\) and sources\[1\] .*scene again\)"):
        import_to_scenes(spec, tmp_path / "raw")
    with pytest.raises(ValueError, match="import the same data"):  # not a bad source to skip: the list is wrong
        import_to_scenes(spec, tmp_path / "raw", on_error="skip")
    assert list_scenes(tmp_path / "raw") == []


def test_identical_camera_files_of_two_frame_folders_are_found(tmp_path):
    record = {"rgb": "img.png", "K": [[50, 0, 16], [0, 50, 16], [0, 0, 1]], "world_to_camera": np.eye(4).tolist(),
              "width": 32, "height": 32}
    for name in ("flight", "flight_copy"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "cameras.json").write_text(json.dumps({"frames": [record]}))
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / name / "img.png")
    spec = [{"kind": "frames", "path": str(tmp_path / name)} for name in ("flight", "flight_copy")]
    with pytest.raises(ValueError, match="identical camera files"):
        check_sources(spec)


def test_files_are_hashed_only_when_another_has_their_size(tmp_path, monkeypatch):
    a = _las(tmp_path / "a.las")
    shutil.copyfile(a, tmp_path / "a_copy.las")
    other = _las(tmp_path / "other.las", seed=1)  # same point count: same size, other content
    smaller = str(write_las(tmp_path / "small.las", grid_points(100), rgb=np.full((100, 3), 60)))
    calls = []
    digest = sources._file_digest
    monkeypatch.setattr(sources, "_file_digest", lambda f, whole: calls.append((f.name, whole)) or digest(f, whole))
    assert sources._identical_files([sources.Path(p) for p in (a, other, smaller, tmp_path / "a_copy.las")]) == [(0, 3)]
    assert sorted(calls) == [("a.las", False), ("a.las", True), ("a_copy.las", False), ("a_copy.las", True),
                             ("other.las", False)]  # read whole only where the first blocks agree; small.las never


def test_disjoint_crops_of_one_file_are_two_parts_not_a_copy(tmp_path, caplog):
    path = _las(tmp_path / "survey.las")  # x 500000..500100
    west = {"kind": "las", "path": path, "scene_id": "west", "crop": (500_000, 4_000_000, 500_050, 4_000_100)}
    east = {"kind": "las", "path": path, "scene_id": "east", "crop": (500_050, 4_000_000, 500_100, 4_000_100)}
    with caplog.at_level(logging.WARNING, logger="earthcrafter.io.sources"):
        sources.check_distinct_sources([west, east])
    assert "overlap" not in caplog.text
    with pytest.raises(ValueError, match="import the same data"):
        sources.check_distinct_sources([west, {**east, "crop": (500_040, 4_000_000, 500_100, 4_000_100)}])


def test_overlapping_surveys_in_one_crs_are_warned_about(tmp_path, caplog):
    base = _las(tmp_path / "tile_a.las")  # x 500000..500100, y 4000000..4000100, EPSG:32610
    shifted = _las(tmp_path / "tile_b.las", x0=500_050.0)  # its eastern half overlaps
    apart = _las(tmp_path / "tile_c.las", x0=501_000.0)
    other_crs = str(write_las(tmp_path / "tile_d.las", grid_points(), rgb=np.full((400, 3), 60), crs="EPSG:32611"))
    spec = [{"kind": "las", "path": p} for p in (base, shifted, apart, other_crs)]
    with caplog.at_level(logging.WARNING, logger="earthcrafter.io.sources"):
        check_sources(spec, what="acquisition.imports")
    (record,) = [r for r in caplog.records if "overlap" in r.getMessage()]
    message = record.getMessage()
    assert "1 pair(s) of LiDAR sources overlap" in message
    assert "acquisition.imports[0] (las " in message and "acquisition.imports[1] (las " in message
    assert "scene tile_c" not in message and "scene tile_d" not in message  # apart; another CRS
    assert "crop" in message



def test_overlap_check_keeps_laspy_error_lines_back(tmp_path, caplog, monkeypatch):
    """laspy logs an ERROR line per LAZ backend that fails to open a file, then raises. The overlap
    check reads headers only and must not print them: the file's own check reports the problem."""
    import laspy

    def failing_open(path, *args, **kwargs):
        logging.getLogger("laspy.lasreader").error("backend lazrs: cannot read chunk table")
        raise laspy.errors.LaspyException("no backend could open it")

    monkeypatch.setattr(sources.laspy, "open", failing_open)
    with caplog.at_level(logging.DEBUG, logger="earthcrafter.io.las"):  # a Kedro run may have set its level
        sources._warn_overlapping_surveys([{"kind": "las", "path": str(tmp_path / "a.laz")},
                                           {"kind": "las", "path": str(tmp_path / "b.laz")}], "x")  # fmt: skip
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert "cannot read chunk table" in caplog.text  # kept, at DEBUG
