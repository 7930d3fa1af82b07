"""Checks before importing: option names and types, units against the CRS, files, world files."""

from __future__ import annotations

import logging

import laspy
import numpy as np
import pytest
from import_helpers import grid_points, write_las
from PIL import Image

from earthcrafter.io.import_common import INTERNATIONAL_FOOT_M, US_SURVEY_FOOT_M, DataImportError, metres_per_unit
from earthcrafter.io.las import check_las, import_las
from earthcrafter.io.scene import list_scenes
from earthcrafter.io.sources import bind_options, check_source, check_sources, import_source, import_to_scenes

# --------------------------------------------------------------------------- options


@pytest.mark.parametrize(
    ("name", "metres"),
    [("feet", INTERNATIONAL_FOOT_M), ("Foot", INTERNATIONAL_FOOT_M), ("ft", INTERNATIONAL_FOOT_M),
     ("us_ft", US_SURVEY_FOOT_M), ("us_feet", US_SURVEY_FOOT_M), ("meters", 1.0), ("metres", 1.0), ("m", 1.0)],
)
def test_unit_spellings(name, metres):
    assert metres_per_unit(name) == metres


def test_option_names_are_checked_with_the_file_named(tmp_path):
    path = tmp_path / "scan.las"
    with pytest.raises(ValueError, match=r"scan\.las: unknown option\(s\) 'orthofoto' \(did you mean 'orthophoto'\?\)"):
        bind_options("las", path, {"orthofoto": "x.jpg"})
    with pytest.raises(ValueError, match=r"scan\.las: option max_points='many'"):
        bind_options("las", path, {"max_points": "many"})
    with pytest.raises(ValueError, match="source kind 'gpkg'"):
        bind_options("gpkg", path, {})


@pytest.mark.parametrize("kind", ["las", "mesh", "frames"])
def test_the_listed_options_leave_out_scene_id(tmp_path, kind):
    """scene_id is given next to kind and path (the config refuses it in options): not listed as an option."""
    with pytest.raises(ValueError, match="unknown option") as err:
        bind_options(kind, tmp_path / "x", {"scene": "a"})
    assert "scene_id" not in str(err.value)
    assert bind_options(kind, tmp_path / "x", {"scene_id": "a"}) == {"scene_id": "a"}  # still taken from Python


def test_option_values_are_converted_to_the_importer_types(tmp_path):
    opts = bind_options("las", tmp_path / "a.las", {"max_points": "1000", "crop": [0, 0, 5, 5], "drop_withheld": "no"})
    assert opts == {"max_points": 1000, "crop": (0.0, 0.0, 5.0, 5.0), "drop_withheld": False}
    mesh_options = bind_options("mesh", tmp_path / "a.ply", {"max_faces": "20", "units": "feet"})
    assert mesh_options == {"max_faces": 20, "units": "feet"}
    path = write_las(tmp_path / "ft.las", grid_points(), rgb=np.full((400, 3), 60), crs=None)
    scene = import_source("las", path, units="feet", max_points="100")
    assert len(scene.points.xyz) == 100 and scene.metadata["origin"]["metres_per_unit"][0] == INTERNATIONAL_FOOT_M


def test_explicit_scene_ids_must_be_folder_names(tmp_path):
    path = write_las(tmp_path / "a.las", grid_points(), rgb=np.full((400, 3), 60))
    for bad in ("survey/2024", "Survey", ".hidden", ""):
        with pytest.raises(ValueError, match=r"a\.las: scene_id="):
            import_source("las", path, scene_id=bad)


# --------------------------------------------------------------------------- units against the CRS


def test_units_contradicting_the_crs_fail_unless_forced(tmp_path, real_data, caplog):
    autzen = real_data / "autzen_trim.las"  # its CRS: international feet
    with pytest.raises(DataImportError, match=r"units='m' \(1 m\) contradicts the file's CRS records: foot"):
        import_las(autzen, units="m", max_points=100)
    with pytest.raises(DataImportError, match="contradicts"):
        check_las(autzen, units="us_ft")  # 2 ppm apart, still not the same unit
    agreeing = import_las(autzen, units="ft", max_points=1000, seed=1)
    with caplog.at_level(logging.WARNING, logger="earthcrafter.io.las"):
        forced = import_las(autzen, units="m", force_units=True, max_points=1000, seed=1)
    assert "overrides the CRS records" in caplog.text
    assert forced.metadata["origin"]["units"]["horizontal"]["source"].startswith("argument, overriding")
    np.testing.assert_allclose(forced.metadata["size_m"] * INTERNATIONAL_FOOT_M, agreeing.metadata["size_m"], rtol=1e-6)


def test_geographic_crs_is_refused_even_with_units(tmp_path):
    xyz = np.array([[-123.07, 44.05, 120.0], [-123.06, 44.06, 121.0]])
    path = write_las(tmp_path / "geo.las", xyz, rgb=np.full((2, 3), 9), crs="EPSG:4326", scale=1e-7)
    for units in (None, "m"):
        with pytest.raises(DataImportError, match="geographic"):
            import_las(path, units=units)
        with pytest.raises(DataImportError, match="geographic"):
            check_las(path, units=units, force_units=True)


def test_tiny_extent_is_warned_about(tmp_path, caplog):
    xyz = grid_points(size=0.5)  # half a unit across: metres of a scan given in kilometres?
    path = write_las(tmp_path / "small.las", xyz, rgb=np.full((400, 3), 60), crs=None)
    with caplog.at_level(logging.WARNING):
        import_las(path, units="m")
    assert "spans only" in caplog.text and "small.las" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        import_las(write_las(tmp_path / "big.las", grid_points(), rgb=np.full((400, 3), 60), crs=None), units="m")
    assert "spans only" not in caplog.text


def test_cut_laz_raises_without_backend_error_lines(tmp_path, caplog):
    if not laspy.LazBackend.detect_available():
        pytest.skip("no LAZ backend (install lazrs or laszip) to write LAZ")
    las = laspy.read(write_las(tmp_path / "a.las", grid_points(20_000), rgb=np.full((20_000, 3), 60)))
    laz = tmp_path / "a.laz"
    las.write(str(laz))
    cut = tmp_path / "cut.laz"
    cut.write_bytes(laz.read_bytes()[: laz.stat().st_size // 2])
    with caplog.at_level(logging.DEBUG), pytest.raises(DataImportError, match=r"cut\.laz: point data unreadable"):
        import_las(cut)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


# --------------------------------------------------------------------------- files, before anything is read


def _ortho(tmp_path, name: str, world: str) -> str:
    Image.fromarray(np.full((20, 30, 3), 90, np.uint8)).save(tmp_path / f"{name}.png")
    (tmp_path / f"{name}.pgw").write_text(world)
    return str(tmp_path / f"{name}.png")


def test_check_las_finds_file_and_orthophoto_problems_without_reading_points(tmp_path, monkeypatch):
    xyz = grid_points()
    path = write_las(tmp_path / "a.las", xyz, crs="EPSG:32610", point_format=1)  # no RGB: needs an orthophoto
    here = f"10\n0\n0\n-10\n{xyz[:, 0].min() - 5}\n{xyz[:, 1].max() + 5}\n"
    far = f"10\n0\n0\n-10\n{xyz[:, 0].min() + 50_000}\n{xyz[:, 1].max()}\n"
    monkeypatch.setattr("earthcrafter.io.las._read_points", lambda *a, **k: pytest.fail("read the points"))
    check_las(path, orthophoto=_ortho(tmp_path, "here", here))
    with pytest.raises(DataImportError, match=r"far\.png: the image covers .* which misses the data"):
        check_las(path, orthophoto=_ortho(tmp_path, "far", far))
    with pytest.raises(DataImportError, match=r"five\.pgw: a world file holds 6 numbers"):
        check_las(path, orthophoto=_ortho(tmp_path, "five", "1\n0\n0\n-1\n5\n"))
    with pytest.raises(DataImportError, match=r"a\.las: no colour"):
        check_las(path)
    with pytest.raises(DataImportError, match=r"missing\.las: LAS/LAZ file not found"):
        check_las(tmp_path / "missing.las")
    (tmp_path / "cut.las").write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataImportError, match=r"cut\.las: not a readable LAS/LAZ file"):
        check_las(tmp_path / "cut.las")
    with pytest.raises(ValueError, match="color_source='intensity'"):
        check_source("las", path, color_source="intensity")


def test_check_source_for_meshes_and_frames(tmp_path):
    (tmp_path / "fake.ply").write_text("solid nothing\n")
    with pytest.raises(DataImportError, match=r"fake\.ply: not a PLY file"):
        check_source("mesh", tmp_path / "fake.ply")
    (tmp_path / "m.dxf").write_text("0\n")
    with pytest.raises(DataImportError, match="unsupported mesh format"):
        check_source("mesh", tmp_path / "m.dxf")
    flight = tmp_path / "flight"
    flight.mkdir()
    record = {"rgb": "img.png", "K": [[50, 0, 16], [0, 50, 16], [0, 0, 1]], "world_to_camera": np.eye(4).tolist(),
              "width": 32, "height": 32}
    (flight / "cameras.json").write_text(__import__("json").dumps({"frames": [record]}))
    with pytest.raises(DataImportError, match=r"img\.png: image file not found"):
        check_source("frames", flight)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(flight / "img.png")
    check_source("frames", flight)


def test_a_bad_source_fails_before_any_scene_is_written(tmp_path):
    good = write_las(tmp_path / "good.las", grid_points(), rgb=np.full((400, 3), 60))
    spec = [{"kind": "las", "path": str(good)},
            {"kind": "las", "path": str(tmp_path / "gone.las")},
            {"kind": "las", "path": str(good), "scene_id": "other", "orthophoto": str(tmp_path / "nope.png")}]
    with pytest.raises(DataImportError) as err:
        import_to_scenes(spec, tmp_path / "raw")
    message = str(err.value)
    assert message.startswith("sources: 2 of 3 cannot be imported:")
    assert "sources[1] (las " in message and "gone.las: LAS/LAZ file not found" in message
    assert "sources[2] (las " in message and "nope.png: orthophoto image not found" in message
    assert list_scenes(tmp_path / "raw") == []  # the good source, first in the list, was not written either
    with pytest.raises(ValueError, match=r"sources\[0\] .*unknown option"):
        check_sources([{"kind": "las", "path": str(good), "orthofoto": "x"}])


def test_skipped_sources_are_counted_with_their_reasons(tmp_path, caplog):
    good = write_las(tmp_path / "good.las", grid_points(), rgb=np.full((400, 3), 60))
    dark = write_las(tmp_path / "dark.las", grid_points(), rgb=np.zeros((400, 3)))
    spec = [{"kind": "las", "path": str(tmp_path / "gone.las")}, {"kind": "las", "path": str(dark)},
            {"kind": "las", "path": str(good)}]
    with caplog.at_level(logging.WARNING, logger="earthcrafter.io.sources"):
        written = import_to_scenes(spec, tmp_path / "raw", on_error="skip")
    assert [p.name for p in written] == ["good"]
    summary = caplog.records[-1].getMessage()
    assert "imported 1 of 3 sources; skipped 2" in summary
    assert "gone.las: LAS/LAZ file not found" in summary and "dark.las: no colour" in summary
    assert f"sources[1] (las {dark}, scene dark): " in summary


def test_a_skipped_source_is_named_even_when_its_orthophoto_failed(tmp_path, caplog):
    """The footprint error names the image only: the closing warning adds the source's index, kind, file and scene."""
    xyz = grid_points()
    tile = write_las(tmp_path / "tile.las", xyz, crs="EPSG:32610", point_format=1)
    far = _ortho(tmp_path, "ortho_m", f"10\n0\n0\n-10\n{xyz[:, 0].min() + 50_000}\n{xyz[:, 1].max()}\n")
    good = write_las(tmp_path / "good.las", grid_points(seed=1), rgb=np.full((400, 3), 60))
    spec = [{"kind": "las", "path": str(good)},
            {"kind": "las", "path": str(tile), "scene_id": "east", "orthophoto": far}]
    with caplog.at_level(logging.WARNING, logger="earthcrafter.io.sources"):
        assert [p.name for p in import_to_scenes(spec, tmp_path / "raw", on_error="skip")] == ["good"]
    summary = caplog.records[-1].getMessage()
    assert f"sources[1] (las {tile}, scene east): {far}: the image covers" in summary


def test_forced_units_set_z_too(tmp_path, monkeypatch):
    """Records declared wrong by force_units do not decide z either: ``units`` sets both axes
    unless ``vertical_units`` is given. (A file whose CRS records give metres on both axes: laspy
    cannot write a compound CRS, so the records are what the CRS parser returns.)"""
    from earthcrafter.io import las
    from earthcrafter.io.crs_units import LinearUnit

    metre = LinearUnit("metre", 1.0, "crs")
    monkeypatch.setattr(las, "units_from_crs", lambda crs: (metre, metre, None))
    xyz = grid_points(size=40.0)
    path = write_las(tmp_path / "metres.las", xyz, rgb=np.full((len(xyz), 3), 60))
    forced = import_las(path, units="ft", force_units=True)
    units = forced.metadata["origin"]["units"]
    assert units["horizontal"]["metres"] == units["vertical"]["metres"] == INTERNATIONAL_FOOT_M
    kept = import_las(path, units="ft", vertical_units="m", force_units=True)
    assert kept.metadata["origin"]["units"]["vertical"]["metres"] == 1.0
