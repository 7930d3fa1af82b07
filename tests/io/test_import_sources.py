"""The dispatcher and the scene writer: ids, options, atomic output, skipping bad sources."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from import_helpers import grid_points, write_las
from PIL import Image

from earthcrafter.io import imported_scene
from earthcrafter.io.import_common import DataImportError, scene_id_from_path
from earthcrafter.io.scene import list_scenes, read_scene, write_scene
from earthcrafter.io.sources import import_source, import_to_scenes


def test_scene_ids_from_names():
    assert scene_id_from_path("/data/Autzen Trim.copc.laz") == "autzen_trim"
    assert scene_id_from_path("tile-07.PLY") == "tile-07"
    assert scene_id_from_path("/flights/2024 06 01/") == "2024_06_01"
    with pytest.raises(ValueError, match="scene id"):
        scene_id_from_path("###.las")


def test_import_source_dispatches_with_options(tmp_path):
    path = write_las(tmp_path / "Block 12.las", grid_points(), rgb=np.full((400, 3), 60))
    scene = import_source("las", path, max_points=100)
    assert scene.scene_id == "block_12" and len(scene.points.xyz) == 100
    assert import_source("las", path, scene_id="custom").scene_id == "custom"
    with pytest.raises(ValueError, match="source kind 'gpkg'"):
        import_source("gpkg", path)


def test_import_to_scenes_writes_whole_scenes(tmp_path, real_data):
    ok = write_las(tmp_path / "ok.las", grid_points(x0=636_100.0, y0=849_000.0), rgb=np.zeros((400, 3)), crs=None)
    spec = {"sources": [
        {"kind": "las", "path": str(ok), "units": "ft", "orthophoto": str(real_data / "autzen.jpg")},
        {"kind": "las", "path": str(real_data / "autzen_trim.las"), "scene_id": "autzen"},
    ]}
    out = import_to_scenes(spec, tmp_path / "raw")
    assert [p.name for p in out] == ["ok", "autzen"] and list_scenes(tmp_path / "raw") == ["autzen", "ok"]
    scene = read_scene(out[0])
    assert scene.metadata["color_source"] == "orthophoto" and (out[0] / "orthophoto.png").is_file()
    assert len(read_scene(out[1]).points.xyz) == 110_000
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["autzen", "ok"]  # no temporaries left


def test_bad_source_raises_or_is_skipped(tmp_path):
    good = write_las(tmp_path / "good.las", grid_points(), rgb=np.full((400, 3), 60))
    bad = write_las(tmp_path / "bad.las", grid_points(), rgb=np.zeros((400, 3)))
    spec = [{"kind": "las", "path": str(bad)}, {"kind": "las", "path": str(good)}]
    with pytest.raises(DataImportError, match=r"bad\.las: no colour"):
        import_to_scenes(spec, tmp_path / "raw")
    assert list_scenes(tmp_path / "raw") == []
    assert [p.name for p in import_to_scenes(spec, tmp_path / "raw", on_error="skip")] == ["good"]
    with pytest.raises(ValueError, match="share scene ids"):
        import_to_scenes([{"kind": "las", "path": str(good)}] * 2, tmp_path / "raw")
    with pytest.raises(ValueError, match="'kind' and 'path'"):
        import_to_scenes([{"path": str(good)}], tmp_path / "raw")


def test_failure_while_writing_leaves_nothing(tmp_path, real_data, monkeypatch):
    path = write_las(tmp_path / "t.las", grid_points(x0=636_100.0, y0=849_000.0), rgb=np.full((400, 3), 9), crs=None)
    spec = {"kind": "las", "path": str(path), "units": "ft", "orthophoto": str(real_data / "autzen.jpg")}

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(imported_scene.Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        import_to_scenes(spec, tmp_path / "raw")
    assert list((tmp_path / "raw").iterdir()) == []
    monkeypatch.undo()
    # an earlier complete version survives a failed rewrite untouched
    first = import_to_scenes(spec, tmp_path / "raw")[0]
    before = (first / "metadata.json").read_text()
    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError):
        import_to_scenes(spec, tmp_path / "raw")
    assert (first / "metadata.json").read_text() == before and (first / "orthophoto.png").is_file()
    assert [p.name for p in (tmp_path / "raw").iterdir()] == ["t"]


def test_package_exports_the_importers():
    from earthcrafter.io import DataImportError as exported_error
    from earthcrafter.io import import_source as exported

    assert exported is import_source and exported_error is DataImportError


def test_plain_write_scene_never_names_a_missing_orthophoto(tmp_path, real_data):
    path = write_las(tmp_path / "t.las", grid_points(x0=636_100.0, y0=849_000.0), rgb=np.full((400, 3), 9), crs=None)
    scene = import_source("las", path, units="ft", orthophoto=real_data / "autzen.jpg")
    assert scene.orthophoto is not None
    out = write_scene(tmp_path / "plain", scene)
    assert "orthophoto" not in read_scene(out).metadata and not (out / "orthophoto.png").exists()
    assert imported_scene.read_scene_orthophoto(out) is None


def test_mostly_unlabeled_scenes_are_warned_about_once_with_the_counts(tmp_path, caplog):
    """ASPRS 1 (unclassified) imports as "unlabeled": over half unlabeled is warned about, the share recorded."""
    classes = np.r_[np.full(300, 1), np.full(100, 2)]  # 75 % unclassified, like most of Autzen
    path = write_las(tmp_path / "raw.las", grid_points(), classes=classes, rgb=np.full((400, 3), 60))
    with caplog.at_level(logging.WARNING, logger="earthcrafter.io"):
        out = import_to_scenes([{"kind": "las", "path": str(path), "scene_id": "survey"}], tmp_path / "raw")
    (record,) = [r for r in caplog.records if "unlabeled" in r.getMessage()]
    message = record.getMessage()
    assert "raw.las (scene survey): 75.0 % of its points are class 'unlabeled' (300 of 400)" in message
    assert "'bare_soil': 100" in message and "ASPRS codes {'1': 300, '2': 100}" in message
    assert read_scene(out[0]).metadata["unlabeled_share"] == 0.75
    classified = write_las(tmp_path / "ok.las", grid_points(), classes=3 - classes, rgb=np.full((400, 3), 60))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="earthcrafter.io"):
        scene = import_source("las", classified)  # 25 % unlabeled: no warning
    assert scene.metadata["unlabeled_share"] == 0.25 and "unlabeled" not in caplog.text


def test_the_real_survey_is_mostly_unlabeled(real_data, caplog):
    with caplog.at_level(logging.WARNING, logger="earthcrafter.io.import_common"):
        scene = import_source("las", real_data / "autzen_trim.las", scene_id="autzen")
    assert scene.metadata["unlabeled_share"] == pytest.approx(83_893 / 110_000)
    assert "(scene autzen): 76.3 % of its points are class 'unlabeled' (83,893 of 110,000)" in caplog.text
