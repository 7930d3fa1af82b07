"""LAS/LAZ import: the real Autzen file, units from CRS records, colour, classes, filters."""

from __future__ import annotations

import logging

import laspy
import numpy as np
import pytest
from import_helpers import geokey, geokey_directory, grid_points, write_las

from earthcrafter.io.import_common import INTERNATIONAL_FOOT_M, US_SURVEY_FOOT_M, DataImportError
from earthcrafter.io.las import check_las, import_las
from earthcrafter.semantics import ASPRS_TO_CLASS, CLASS_ID

# --------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def autzen(real_data):
    las = laspy.read(real_data / "autzen_trim.las")
    return las, import_las(real_data / "autzen_trim.las")


def test_autzen_points_classes_and_colours(autzen):
    las, scene = autzen
    meta, pts = scene.metadata, scene.points
    assert meta["source"] == "lidar" and scene.mesh is None and scene.frames == []
    dropped = sum(meta["dropped"].values())
    assert len(pts.xyz) == 110_000 - dropped == meta["num_points"]
    # ground -> bare_soil, unclassified -> unlabeled (the shared map), and nothing else
    codes = np.asarray(las.classification)
    assert meta["class_histogram"]["bare_soil"] == int((codes == 2).sum()) == 26_107
    assert meta["class_histogram"]["unlabeled"] == int((codes == 1).sum()) == 83_893
    assert ASPRS_TO_CLASS[2] == CLASS_ID["bare_soil"] and ASPRS_TO_CLASS[1] == CLASS_ID["unlabeled"]
    assert set(np.unique(pts.semantic)) == {CLASS_ID["bare_soil"], CLASS_ID["unlabeled"]}
    # 8-bit values stored in 16-bit fields: taken as they are, not divided by 257
    raw = np.stack([las.red, las.green, las.blue], axis=1)
    assert raw.max() <= 255 and meta["color_bit_depth"] == 8
    np.testing.assert_array_equal(pts.rgb, raw.astype(np.uint8))
    assert pts.rgb.max() > 200  # not crushed to near-black


def test_autzen_units_are_international_feet(autzen):
    las, scene = autzen
    meta = scene.metadata
    units = meta["origin"]["units"]
    assert units["horizontal"]["metres"] == INTERNATIONAL_FOOT_M and units["horizontal"]["source"] == "crs"
    # Header extents (feet) converted with the international foot
    header_extent = (np.asarray(las.header.maxs) - np.asarray(las.header.mins)) * INTERNATIONAL_FOOT_M
    np.testing.assert_allclose(meta["extent_m"], header_extent[:2], atol=1e-6)
    assert meta["extent_m"][0] == pytest.approx(358.9, abs=0.1) and meta["extent_m"][1] == pytest.approx(171.5, abs=0.1)
    assert meta["size_m"] == max(meta["extent_m"])  # one number, like a synthetic site's side
    # the US survey foot would be off by 2 ppm: distinguishable at this precision
    assert abs(meta["extent_m"][0] - header_extent[0] / INTERNATIONAL_FOOT_M * US_SURVEY_FOOT_M) > 5e-4
    # every local point maps back onto its source coordinate
    raw = np.stack([las.x, las.y, las.z], axis=1)
    back = scene.points.xyz / np.asarray(meta["origin"]["metres_per_unit"]) + meta["origin"]["source_units"]
    np.testing.assert_allclose(back, raw, atol=1e-6)
    assert meta["crs"]["wkt"] and "Lambert" in meta["crs"]["name"]


def test_chunked_read_equals_one_shot(real_data, autzen):
    _, whole = autzen
    chunked = import_las(real_data / "autzen_trim.las", chunk_size=7_000)
    np.testing.assert_array_equal(chunked.points.xyz, whole.points.xyz)
    np.testing.assert_array_equal(chunked.points.rgb, whole.points.rgb)
    np.testing.assert_array_equal(chunked.points.semantic, whole.points.semantic)


def test_max_points_is_a_seeded_uniform_subset(real_data, autzen):
    las, whole = autzen
    a = import_las(real_data / "autzen_trim.las", max_points=5_000, chunk_size=1_000, seed=3)
    b = import_las(real_data / "autzen_trim.las", max_points=5_000, chunk_size=50_000, seed=3)
    assert len(a.points.xyz) == 5_000 and a.metadata["dropped"]["subsampled_points"] == 105_000
    # every kept point is an original point (in source units; the origin moves with the subset)
    to_src = lambda s: s.points.xyz / 0.3048 + s.metadata["origin"]["source_units"]  # noqa: E731
    full = {tuple(r) for r in np.round(np.stack([las.x, las.y, las.z], 1), 2)}
    assert all(tuple(r) in full for r in np.round(to_src(a), 2))
    # uniform: class proportions match the file within sampling noise (p=0.237, n=5000: sd 0.006)
    assert np.mean(a.points.semantic == CLASS_ID["bare_soil"]) == pytest.approx(26_107 / 110_000, abs=0.03)
    assert len(b.points.xyz) == 5_000


def test_crop_in_source_units(real_data, autzen):
    las, _ = autzen
    box = (636_300.0, 849_000.0, 636_700.0, 849_300.0)
    scene = import_las(real_data / "autzen_trim.las", crop=box)
    x, y = np.asarray(las.x), np.asarray(las.y)
    inside = (x >= box[0]) & (x <= box[2]) & (y >= box[1]) & (y <= box[3])
    assert len(scene.points.xyz) == inside.sum()
    assert scene.metadata["dropped"]["outside_crop_points"] == (~inside).sum()
    assert scene.metadata["extent_m"][0] <= 400 * INTERNATIONAL_FOOT_M + 1e-9


def test_laz_round_trip(tmp_path, real_data, autzen):
    if not laspy.LazBackend.detect_available():
        pytest.skip("no LAZ backend (install lazrs or laszip) to write LAZ")
    las, whole = autzen
    laz = tmp_path / "autzen_trim.laz"
    las.write(str(laz))
    scene = import_las(laz)
    assert scene.scene_id == "autzen_trim"
    np.testing.assert_array_equal(scene.points.xyz, whole.points.xyz)
    np.testing.assert_array_equal(scene.points.rgb, whole.points.rgb)
    np.testing.assert_array_equal(scene.points.semantic, whole.points.semantic)
    cut = tmp_path / "cut.laz"
    cut.write_bytes(laz.read_bytes()[: laz.stat().st_size // 2])
    with pytest.raises(DataImportError, match=r"cut\.laz: point data unreadable after \d+ of 110000 points"):
        import_las(cut)


# --------------------------------------------------------------------------- units


def test_us_survey_foot_from_epsg_geokeys(tmp_path):
    xyz = grid_points(x0=1_000_000.0, y0=200_000.0)
    xyz[0, :2], xyz[1, :2] = [1_000_000.0, 200_000.0], [1_001_000.0, 200_500.0]
    path = write_las(tmp_path / "ny.las", xyz, rgb=np.full((len(xyz), 3), 100), crs="EPSG:2263")  # NY LI, ftUS
    scene = import_las(path)
    assert scene.metadata["origin"]["units"]["horizontal"]["metres"] == pytest.approx(US_SURVEY_FOOT_M, rel=1e-12)
    np.testing.assert_allclose(scene.metadata["extent_m"], [1000 * US_SURVEY_FOOT_M, 500 * US_SURVEY_FOOT_M], rtol=1e-12)
    assert abs(scene.metadata["extent_m"][0] - 1000 * INTERNATIONAL_FOOT_M) > 5e-4


def test_user_defined_geokeys_with_unit_code_only(tmp_path):
    keys = [geokey(1024, 1), geokey(3072, 32767), geokey(3076, 9003)]  # projected, user-defined, US survey foot
    path = write_las(tmp_path / "ud.las", grid_points(), rgb=np.full((400, 3), 9), crs=None, vlrs=[geokey_directory(keys)])
    scene = import_las(path)
    units = scene.metadata["origin"]["units"]
    assert units["horizontal"] == {"name": "US survey foot", "metres": pytest.approx(US_SURVEY_FOOT_M), "source": "geokeys"}
    assert units["vertical"]["metres"] == pytest.approx(US_SURVEY_FOOT_M) and units["vertical"]["source"].startswith("assumed")


def test_compound_crs_gives_separate_vertical_unit(tmp_path):
    xyz = grid_points(x0=600_000.0, y0=800_000.0)
    path = write_las(tmp_path / "c.las", xyz, rgb=np.full((400, 3), 9), crs="EPSG:2994+5703", point_format=7, version="1.4")
    scene = import_las(path)
    f = scene.metadata["origin"]["metres_per_unit"]
    assert f == [INTERNATIONAL_FOOT_M, INTERNATIONAL_FOOT_M, 1.0]  # feet across, metres up (NAVD88 height)
    z_extent = scene.points.xyz[:, 2].max() - scene.points.xyz[:, 2].min()
    assert z_extent == pytest.approx(np.ptp(xyz[:, 2]), abs=1e-9)


def test_no_unit_information_fails_unless_given(tmp_path):
    path = write_las(tmp_path / "nocrs.las", grid_points(), rgb=np.full((400, 3), 9), crs=None)
    with pytest.raises(DataImportError, match=r"nocrs\.las.*no linear unit.*units="):
        import_las(path)
    scene = import_las(path, units="ft")
    assert scene.metadata["origin"]["units"]["horizontal"]["source"] == "argument"
    np.testing.assert_allclose(scene.metadata["extent_m"], np.ptp(grid_points()[:, :2], axis=0) * INTERNATIONAL_FOOT_M)


def test_crs_and_geokeys_disagreeing_fails(tmp_path, real_data):
    las = laspy.read(real_data / "autzen_trim.las")
    header = las.header
    header.vlrs.get("GeoKeyDirectoryVlr")[0].geo_keys = [
        geokey(k.id, 9003) if k.id == 3076 else k for k in header.vlrs.get("GeoKeyDirectoryVlr")[0].geo_keys
    ]
    path = tmp_path / "conflict.las"
    las.write(str(path))
    with pytest.raises(DataImportError, match="disagrees between the CRS.*GeoKeys"):
        import_las(path)
    assert import_las(path, units="ft").metadata["num_points"] == 110_000


def test_geographic_crs_is_refused(tmp_path):
    xyz = np.array([[-123.07, 44.05, 120.0], [-123.06, 44.06, 121.0]])
    path = write_las(tmp_path / "geo.las", xyz, rgb=np.full((2, 3), 9), crs="EPSG:4326", scale=1e-7)
    with pytest.raises(DataImportError, match="geographic"):
        import_las(path)


# --------------------------------------------------------------------------- colour and classes


def test_true_16bit_colour_is_scaled(tmp_path):
    rng = np.random.default_rng(1)
    rgb16 = rng.integers(0, 65536, (400, 3))
    rgb16[0] = [65535, 0, 257]
    scene = import_las(write_las(tmp_path / "c16.las", grid_points(), rgb=rgb16))
    assert scene.metadata["color_bit_depth"] == 16
    np.testing.assert_array_equal(scene.points.rgb, np.round(rgb16 / 257).astype(np.uint8))
    assert scene.points.rgb[0].tolist() == [255, 0, 1]


def test_noise_withheld_and_unknown_classes(tmp_path):
    classes = np.array([2, 7, 18, 6, 25, 5, 1, 25] * 50)
    withheld = np.zeros(400, bool)
    withheld[3] = True  # a building point
    path = write_las(tmp_path / "cls.las", grid_points(), classes=classes, rgb=np.full((400, 3), 50), withheld=withheld)
    scene = import_las(path)
    meta = scene.metadata
    assert meta["dropped"]["noise_points"] == 100 and meta["dropped"]["withheld_points"] == 1
    assert meta["unknown_classes"] == {"policy": "unlabeled", "points": 100, "codes": {"25": 100}}
    assert len(scene.points.xyz) == 299
    assert meta["class_histogram"]["building_roof"] == 49 and meta["class_histogram"]["tree"] == 50
    assert meta["class_histogram"]["unlabeled"] == 50 + 100  # code 1 and the unknown code 25

    dropped = import_las(path, unknown_class="drop")
    assert dropped.metadata["dropped"]["unknown_class_points"] == 100 and len(dropped.points.xyz) == 199
    with pytest.raises(DataImportError, match=r"cls\.las.*codes not in the class map.*'25': 100"):
        import_las(path, unknown_class="error")


def test_overlap_points_are_dropped_unless_asked_to_keep(tmp_path, caplog):
    overlap = np.zeros(400, bool)
    overlap[::4] = True
    withheld = np.zeros(400, bool)
    withheld[:8] = True  # two of them also overlap: counted once, as withheld (that filter runs first)
    path = write_las(tmp_path / "ov.las", grid_points(), rgb=np.full((400, 3), 50), point_format=7, version="1.4",
                     overlap=overlap, withheld=withheld)
    with caplog.at_level(logging.WARNING, logger="earthcrafter"):
        scene = import_las(path)
    assert scene.metadata["dropped"]["overlap_points"] == 98 and scene.metadata["dropped"]["withheld_points"] == 8
    assert len(scene.points.xyz) == 400 - 98 - 8
    assert any("overlap_points" in r.getMessage() and "98" in r.getMessage() for r in caplog.records)
    kept = import_las(path, drop_overlap=False)
    assert kept.metadata["dropped"]["overlap_points"] == 0 and len(kept.points.xyz) == 392
    # point formats 0-5 have no overlap flag: nothing to drop, nothing fails
    assert import_las(write_las(tmp_path / "old.las", grid_points(), rgb=np.full((400, 3), 50))).metadata[
        "dropped"]["overlap_points"] == 0


def test_drop_and_error_are_logged(tmp_path, caplog):
    classes = np.array([2, 7] * 200)
    path = write_las(tmp_path / "noise.las", grid_points(), classes=classes, rgb=np.full((400, 3), 50))
    with caplog.at_level(logging.WARNING, logger="earthcrafter"):
        import_las(path)
    assert any("noise_points" in r.getMessage() and "200" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- bad input


def test_missing_file(tmp_path):
    with pytest.raises(DataImportError, match=r"nothere\.las: LAS/LAZ file not found"):
        import_las(tmp_path / "nothere.las")


def test_truncated_header(tmp_path):
    good = write_las(tmp_path / "good.las", grid_points(), rgb=np.full((400, 3), 9))
    cut = tmp_path / "cut.las"
    cut.write_bytes(good.read_bytes()[:100])
    with pytest.raises(DataImportError, match=r"cut\.las: not a readable LAS/LAZ file"):
        import_las(cut)


def test_corrupt_signature(tmp_path):
    data = bytearray(write_las(tmp_path / "good.las", grid_points(), rgb=np.full((400, 3), 9)).read_bytes())
    data[:4] = b"XXXX"
    bad = tmp_path / "bad.las"
    bad.write_bytes(bytes(data))
    with pytest.raises(DataImportError, match=r"bad\.las: not a readable LAS/LAZ file"):
        import_las(bad)


def test_truncated_point_data(tmp_path):
    good = write_las(tmp_path / "good.las", grid_points(), rgb=np.full((400, 3), 9))
    cut = tmp_path / "short.las"
    data = good.read_bytes()
    cut.write_bytes(data[: len(data) - 34 * 100 - 5])  # PDRF 3 records are 34 bytes
    with pytest.raises(DataImportError, match=r"short\.las: truncated: header says 400 points, the file holds 299"):
        import_las(cut)


def test_nan_scale_in_header(tmp_path):
    data = bytearray(write_las(tmp_path / "good.las", grid_points(), rgb=np.full((400, 3), 9)).read_bytes())
    data[131:139] = np.float64(np.nan).tobytes()  # x scale factor of a LAS 1.2 header
    bad = tmp_path / "nanscale.las"
    bad.write_bytes(bytes(data))
    with pytest.raises(DataImportError, match=r"nanscale\.las: .*(scale|not a readable)"):
        import_las(bad)


def test_zero_points(tmp_path):
    path = write_las(tmp_path / "empty.las", np.zeros((0, 3)), rgb=np.zeros((0, 3)))
    with pytest.raises(DataImportError, match=r"empty\.las: the file holds zero points"):
        import_las(path)


def test_all_points_filtered(tmp_path):
    path = write_las(tmp_path / "allnoise.las", grid_points(), classes=np.full(400, 7), rgb=np.full((400, 3), 9))
    with pytest.raises(DataImportError, match=r"allnoise\.las: no points left.*noise_points': 400"):
        import_las(path)


def test_all_zero_colour_without_orthophoto(tmp_path):
    path = write_las(tmp_path / "black.las", grid_points(), rgb=np.zeros((400, 3)))
    with pytest.raises(DataImportError, match=r"black\.las: no colour: its RGB is all zero and no orthophoto"):
        import_las(path)
    no_rgb = write_las(tmp_path / "norgb.las", grid_points(), point_format=1)
    with pytest.raises(DataImportError, match=r"norgb\.las: no colour: the point format has no RGB"):
        import_las(no_rgb)


def test_black_las_colours_are_counted_and_filled_from_the_orthophoto(tmp_path, caplog):
    """Points with LAS colour (0, 0, 0) (the colouring imagery missed them) are counted, warned about,
    and coloured from the orthophoto when one is given; the other points keep their LAS colour."""
    from earthcrafter.io.orthophoto import Orthophoto

    rgb = np.full((400, 3), 150 * 257)
    rgb[:160] = 0
    path = write_las(tmp_path / "partblack.las", grid_points(), rgb=rgb)
    with caplog.at_level(logging.WARNING, logger="earthcrafter"):
        plain = import_las(path)
    assert plain.metadata["black_color_points"] == 160 and plain.metadata["black_color_filled_from_orthophoto"] == 0
    assert (plain.points.rgb.sum(1) == 0).sum() == 160
    assert "160 points (40%) have LAS colour (0, 0, 0)" in caplog.text and "an orthophoto with color_source='auto'" in caplog.text
    # a 1 m orthophoto over the patch (north up), one colour
    ortho = Orthophoto(np.full((110, 110, 3), (10, 200, 30), np.uint8),
                       np.array([[1.0, 0, 499_995.5], [0, -1.0, 4_000_104.5]]))  # fmt: skip
    scene = import_las(path, orthophoto=ortho)
    assert scene.metadata["color_source"] == "las" and scene.metadata["black_color_filled_from_orthophoto"] == 160
    assert (scene.points.rgb == [10, 200, 30]).all(1).sum() == 160
    assert (scene.points.rgb == [150, 150, 150]).all(1).sum() == 240
    explicit = import_las(path, orthophoto=ortho, color_source="las")  # LAS colour only: counted, not filled
    assert explicit.metadata["black_color_filled_from_orthophoto"] == 0
    full = import_las(write_las(tmp_path / "coloured.las", grid_points(), rgb=np.full((400, 3), 9000)))
    assert "black_color_points" not in full.metadata


def test_scene_ids_cannot_leave_the_scenes_folder(tmp_path):
    from earthcrafter.io.imported_scene import write_imported_scene

    path = write_las(tmp_path / "a.las", grid_points(), rgb=np.full((400, 3), 9000))
    with pytest.raises(ValueError, match="scene_id='../escaped'"):
        import_las(path, scene_id="../escaped")
    scene = import_las(path)
    scene.scene_id = "../escaped"  # a scene renamed after import: the writer refuses it too
    with pytest.raises(ValueError, match="does not name a folder inside"):
        write_imported_scene(tmp_path / "scenes", scene)
    assert not (tmp_path / "escaped").exists()


def test_absurd_extent(tmp_path):
    xyz = grid_points(size=200_000.0)  # 200 km wide in a metre CRS
    path = write_las(tmp_path / "huge.las", xyz, rgb=np.full((400, 3), 9), scale=0.1)
    with pytest.raises(DataImportError, match=r"huge\.las: point coordinates span .* over the 100 km limit"):
        import_las(path)


def test_bad_options_name_the_file():
    bad = [({"color_source": "intensity"}, "color_source='intensity'"), ({"max_points": 0}, "max_points=0"),
           ({"crop": (1, 1, 0, 0)}, r"crop=\(1, 1, 0, 0\)"), ({"unknown_class": "keep"}, "unknown_class='keep'"),
           ({"chunk_size": 0}, "chunk_size=0"), ({"units": "furlong"}, "units='furlong'"),
           ({"orthophoto_nodata": (1, 2)}, r"orthophoto_nodata=\(1, 2\)")]
    for options, what in bad:
        for call in (import_las, check_las):
            with pytest.raises(ValueError, match=rf"^x\.las: option {what}: ") as err:
                call("x.las", **options)
            assert not isinstance(err.value, DataImportError)


def test_crop_missing_the_header_bounds_fails_before_reading(real_data, monkeypatch, tmp_path):
    monkeypatch.setattr("earthcrafter.io.las._read_points", lambda *a, **k: pytest.fail("read the points"))
    metres_box = (0.0, 0.0, 100.0, 50.0)  # local metres, a common mistake: crop is in the file's units (feet)
    want = (r"autzen_trim\.las: crop \(0\.0, 0\.0, 100\.0, 50\.0\) .*misses the header's bounds "
            r"x 636001\.\d+\.\.637179\.\d+, y 848935\.\d+\.\.849497\.\d+: crop is in the file's CRS units \(foot")
    for call in (check_las, import_las):
        with pytest.raises(DataImportError, match=want):
            call(real_data / "autzen_trim.las", crop=metres_box)
    # a crop that touches the bounds passes the check (the points decide what is kept)
    check_las(real_data / "autzen_trim.las", crop=(637_179.0, 849_497.0, 638_000.0, 850_000.0))


def test_orthophoto_in_another_crs_than_the_las_file_is_refused(tmp_path):
    """A GeoTIFF tagged EPSG:2263 beside a LAS file in EPSG:32610 fails in the check and the import,
    naming both; the same GeoTIFF tagged EPSG:32610 colours the points."""
    from PIL import Image, TiffImagePlugin

    def geotiff(path, epsg: int) -> str:
        ifd = TiffImagePlugin.ImageFileDirectory_v2()
        tags = {33550: (1.0, 1.0, 0.0), 33922: (0.0, 0.0, 0.0, 499_990.0, 4_000_110.0, 0.0),
                34735: (1, 1, 0, 2, 1024, 0, 1, 1, 3072, 0, 1, epsg)}  # fmt: skip
        for tag, value in tags.items():
            ifd[tag] = value
            ifd.tagtype[tag] = 3 if tag == 34735 else 12
        Image.fromarray(np.full((130, 130, 3), 90, np.uint8)).save(path, tiffinfo=ifd)
        return str(path)

    las = write_las(tmp_path / "c.las", grid_points(), rgb=np.zeros((400, 3)))
    wrong = geotiff(tmp_path / "o2263.tif", 2263)
    for call in (check_las, import_las):
        with pytest.raises(DataImportError, match=r"EPSG:2263 .* differs from the CRS of .*c\.las, EPSG:32610"):
            call(las, orthophoto=wrong)
    scene = import_las(las, orthophoto=geotiff(tmp_path / "o32610.tif", 32610))
    assert scene.metadata["color_source"] == "orthophoto" and (scene.points.rgb == 90).all()


@pytest.mark.parametrize("scene_id", [".hidden", "", "a/b", ".."])
def test_scene_writer_refuses_ids_that_are_not_one_visible_folder(tmp_path, scene_id):
    from earthcrafter.io.scene import Scene, write_scene

    with pytest.raises(ValueError, match="does not name a folder inside"):
        write_scene(tmp_path, Scene(scene_id))
    assert not any(tmp_path.iterdir())
