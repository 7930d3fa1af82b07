"""Orthophotos: world-file affine, bilinear sampling, crops, colouring LiDAR from them."""

from __future__ import annotations

import logging
import shutil

import laspy
import numpy as np
import pytest
from import_helpers import grid_points, write_las
from PIL import Image, TiffImagePlugin
from scipy.ndimage import map_coordinates

from earthcrafter.io.import_common import INTERNATIONAL_FOOT_M, DataImportError
from earthcrafter.io.imported_scene import read_scene_orthophoto, write_imported_scene
from earthcrafter.io.las import check_las, import_las
from earthcrafter.io.orthophoto import Orthophoto, check_orthophoto, find_world_file, read_orthophoto, read_world_file
from earthcrafter.io.scene import read_scene

C, F = 635615.9278659122, 853362.1430851521  # autzen.wld: centre of the top-left pixel


@pytest.fixture(scope="module")
def autzen_ortho(real_data):
    return read_orthophoto(real_data / "autzen.jpg")


def test_world_file_affine_maps_known_pixels(autzen_ortho):
    ortho = autzen_ortho
    assert (ortho.width, ortho.height) == (3248, 4385)
    np.testing.assert_allclose(ortho.affine, [[1, 0, C], [0, -1, F]])
    # pixel centres: (0, 0) is (C, F); one pixel right is +1 ft east, one down is -1 ft north
    np.testing.assert_allclose(ortho.pixel_to_xy([[0, 0], [100, 200], [3247, 4384]]),
                               [[C, F], [C + 100, F - 200], [C + 3247, F - 4384]])
    # the footprint reaches half a pixel beyond the outer centres
    np.testing.assert_allclose(ortho.corners()[0], [C - 0.5, F + 0.5])
    np.testing.assert_allclose(ortho.xy_to_pixel([[C + 100, F - 200]]), [[100, 200]])
    assert ortho.pixel_size == (1.0, 1.0)


def test_sample_at_pixel_centres_returns_the_pixels(autzen_ortho):
    rows = np.array([0, 10, 2000, 4384])
    cols = np.array([0, 3247, 1500, 7])
    xy = autzen_ortho.pixel_to_xy(np.stack([cols, rows], 1))
    np.testing.assert_allclose(autzen_ortho.sample(xy), autzen_ortho.image[rows, cols], atol=1e-3)


def test_bilinear_matches_scipy_on_a_rotated_affine():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    theta = np.deg2rad(30)
    affine = np.array([[0.5 * np.cos(theta), -0.5 * np.sin(theta), 100.0], [0.5 * np.sin(theta), 0.5 * np.cos(theta), 200.0]])
    ortho = Orthophoto(image, affine)
    colrow = np.stack([rng.uniform(0, 59, 500), rng.uniform(0, 39, 500)], 1)
    got = ortho.sample(ortho.pixel_to_xy(colrow))
    want = np.stack([map_coordinates(image[..., c].astype(np.float64), [colrow[:, 1], colrow[:, 0]], order=1)
                     for c in range(3)], axis=1)
    np.testing.assert_allclose(got, want, atol=1e-3)


@pytest.mark.parametrize("shape", [(1, 5), (5, 1), (1, 1), (2, 3)])
def test_bilinear_on_tiny_images_including_the_edge_band(shape):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, shape + (3,), dtype=np.uint8)
    ortho = Orthophoto(image, np.array([[1.0, 0, 0], [0, 1.0, 0]]))
    colrow = np.stack([rng.uniform(-0.5, shape[1] - 0.5, 200), rng.uniform(-0.5, shape[0] - 0.5, 200)], 1)
    want = np.stack([map_coordinates(image[..., c].astype(np.float64), [colrow[:, 1], colrow[:, 0]], order=1,
                                     mode="nearest") for c in range(3)], axis=1)
    np.testing.assert_allclose(ortho.sample(colrow), want, atol=1e-3)


def test_outside_is_nan_and_edge_band_is_inside():
    ortho = Orthophoto(np.full((4, 5, 3), 7, np.uint8), np.array([[2.0, 0, 10], [0, -2.0, 20]]))
    xy = np.array([[10 - 0.99, 20], [10 - 1.01, 20], [10 + 8 + 0.99, 20 - 6 - 0.99], [10 + 8, 20 - 6 - 1.01]])
    out = ortho.sample(xy)
    assert np.isfinite(out[[0, 2]]).all() and np.isnan(out[[1, 3]]).all()
    np.testing.assert_allclose(out[[0, 2]], 7)


def test_crop_keeps_the_same_colours(autzen_ortho):
    box = (636_100.0, 849_000.0, 636_600.0, 849_300.0)
    crop = autzen_ortho.crop(*box)
    assert crop.width < 520 and crop.height < 320
    rng = np.random.default_rng(2)
    xy = np.stack([rng.uniform(box[0], box[2], 300), rng.uniform(box[1], box[3], 300)], 1)
    np.testing.assert_allclose(crop.sample(xy), autzen_ortho.sample(xy), atol=1e-3)
    with pytest.raises(DataImportError, match="does not overlap"):
        autzen_ortho.crop(0, 0, 10, 10)


def test_to_local_is_the_same_map_in_metres(autzen_ortho):
    origin = np.array([636_001.0, 848_935.0])
    local = autzen_ortho.to_local(origin, INTERNATIONAL_FOOT_M)
    xy = np.array([[636_500.0, 849_200.0], [637_000.0, 849_400.0]])
    np.testing.assert_allclose(local.sample((xy - origin) * INTERNATIONAL_FOOT_M), autzen_ortho.sample(xy), atol=1e-3)


def test_orthophoto_colours_agree_with_las_rgb(real_data):
    las = laspy.read(real_data / "autzen_trim.las")
    scene = import_las(real_data / "autzen_trim.las", orthophoto=real_data / "autzen.jpg", color_source="orthophoto")
    meta = scene.metadata
    assert meta["color_source"] == "orthophoto"
    # points south of the image footprint (y < F - 4384.5) are dropped, and counted
    off = np.asarray(las.y) < F - 4384.5
    assert meta["dropped"]["outside_orthophoto_points"] == off.sum() > 0
    assert len(scene.points.xyz) == 110_000 - off.sum()
    # the LAS colours were taken from this image: channels correlate strongly
    raw = np.stack([las.red, las.green, las.blue], 1)[~off].astype(np.float64)
    for c in range(3):
        assert np.corrcoef(scene.points.rgb[:, c], raw[:, c])[0, 1] > 0.95
    # and a one-pixel misregistration would show: the affine is used to the pixel
    shifted = Orthophoto(np.roll(read_orthophoto(real_data / "autzen.jpg").image, 3, axis=1),
                         np.array([[1, 0, C], [0, -1, F]]))
    moved = import_las(real_data / "autzen_trim.las", orthophoto=shifted, color_source="orthophoto")
    assert np.corrcoef(moved.points.rgb[:, 1], raw[:, 1])[0, 1] < np.corrcoef(scene.points.rgb[:, 1], raw[:, 1])[0, 1] - 0.02


def test_auto_colour_falls_back_to_orthophoto_and_scene_keeps_the_crop(tmp_path, real_data):
    xyz = grid_points(n=500, size=300.0, x0=636_100.0, y0=849_000.0)
    las_path = write_las(tmp_path / "dark.las", xyz, rgb=np.zeros((500, 3)), crs=None)
    ortho = read_orthophoto(real_data / "autzen.jpg")
    scene = import_las(las_path, orthophoto=ortho, units="ft")
    assert scene.metadata["color_source"] == "orthophoto"
    np.testing.assert_array_equal(scene.points.rgb, np.round(ortho.sample(xyz[:, :2])).astype(np.uint8))

    out = write_imported_scene(tmp_path / "scenes", scene)
    assert (out / "orthophoto.png").is_file() and (out / "points.npz").is_file()
    assert read_scene(out).metadata["orthophoto"]["file"] == "orthophoto.png"
    local = read_scene_orthophoto(out)  # local metres, same colours at the points' local xy
    np.testing.assert_allclose(local.sample(scene.points.xyz[:, :2]), ortho.sample(xyz[:, :2]), atol=1e-3)
    assert local.pixel_size == pytest.approx((INTERNATIONAL_FOOT_M, INTERNATIONAL_FOOT_M))
    assert not [p for p in (tmp_path / "scenes").iterdir() if p.name.startswith(".")]


def test_orthophoto_without_overlap_is_refused(tmp_path, real_data):
    path = write_las(tmp_path / "far.las", grid_points(), rgb=np.zeros((400, 3)), crs=None)
    with pytest.raises(DataImportError, match=r"far\.las: no point lies on the orthophoto"):
        import_las(path, orthophoto=real_data / "autzen.jpg", units="ft")


def test_world_file_errors_and_lookup(tmp_path):
    img = tmp_path / "tile.jpg"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(img)
    with pytest.raises(DataImportError, match=r"tile\.jpg: no world file found"):
        read_orthophoto(img)
    (tmp_path / "tile.jgw").write_text("1\n0\n0\n-1\n100\n200\n")
    assert find_world_file(img).name == "tile.jgw"
    np.testing.assert_allclose(read_orthophoto(img).affine, [[1, 0, 100], [0, -1, 200]])
    bad = tmp_path / "bad.wld"
    bad.write_text("1\n0\n0\n-1\n100\n")
    with pytest.raises(DataImportError, match=r"bad\.wld: a world file holds 6 numbers"):
        read_world_file(bad)
    bad.write_text("1\n0\n0\nx\n100\n200\n")
    with pytest.raises(DataImportError, match=r"bad\.wld: world file line is not a number"):
        read_world_file(bad)
    bad.write_text("0\n0\n0\n0\n100\n200\n")
    with pytest.raises(DataImportError, match=r"bad\.wld: .*not finite and invertible"):
        read_world_file(bad)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not an image")
    with pytest.raises(DataImportError, match=r"corrupt\.png: not a readable image"):
        read_orthophoto(corrupt, world_file=tmp_path / "tile.jgw")


# --------------------------------------------------------------------------- transparency, nodata, 16 bit


@pytest.fixture(scope="module")
def autzen_pixels(real_data):
    with Image.open(real_data / "autzen.jpg") as im:
        return np.asarray(im.convert("RGB"))


def _save_with_world_file(tmp_path, real_data, name: str, im: Image.Image) -> str:
    im.save(tmp_path / name, compress_level=1)  # big image: favour speed over size
    shutil.copy(real_data / "autzen.wld", (tmp_path / name).with_suffix(".wld"))
    return str(tmp_path / name)


def _nearest_pixel(las) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(col, row, on_image) of each Autzen point's pixel in autzen.jpg (affine [[1, 0, C], [0, -1, F]])."""
    col, row = np.asarray(las.x) - C, F - np.asarray(las.y)
    on_image = (col >= -0.5) & (col <= 3247.5) & (row >= -0.5) & (row <= 4384.5)
    near = lambda v, n: np.clip(np.floor(v + 0.5), 0, n - 1).astype(int)  # noqa: E731
    return near(col, 3248), near(row, 4385), on_image


@pytest.mark.parametrize("how", ["alpha", "nodata_rgb", "nodata_single"])
def test_transparent_and_nodata_pixels_drop_their_points(tmp_path, real_data, autzen_pixels, autzen_ortho, caplog,
                                                         how):
    """Pixels left of column 900 hold no image: their points are dropped and counted, never coloured black."""
    pixels = autzen_pixels.copy()
    if how == "alpha":
        alpha = np.full(pixels.shape[:2], 255, np.uint8)
        alpha[:, :900] = 0
        image, nodata = Image.fromarray(np.dstack([pixels, alpha]), "RGBA"), None
    else:
        pixels[:, :900] = 7 if how == "nodata_single" else (1, 2, 3)
        image, nodata = Image.fromarray(pixels), 7 if how == "nodata_single" else (1, 2, 3)
    ortho = _save_with_world_file(tmp_path, real_data, "holes.png", image)
    las = laspy.read(real_data / "autzen_trim.las")
    col, row, on_image = _nearest_pixel(las)
    if how == "alpha":
        hole = on_image & (col < 900)
    else:  # the value may also occur in the image itself: every pixel holding it is "no image"
        hole = on_image & (pixels[row, col] == (nodata if how == "nodata_rgb" else (7, 7, 7))).all(axis=1)
    assert hole.sum() > 40_000

    with caplog.at_level(logging.WARNING, logger="earthcrafter"):
        options = {"orthophoto_nodata": nodata} if nodata is not None else {}
        scene = import_las(real_data / "autzen_trim.las", orthophoto=ortho, color_source="orthophoto", **options)
    assert not (scene.points.rgb == 0).all(axis=1).any()  # no point took the hole's colour
    dropped = scene.metadata["dropped"]
    assert dropped["orthophoto_nodata_points"] == hole.sum()
    assert dropped["outside_orthophoto_points"] == (~on_image).sum()
    assert len(scene.points.xyz) == (on_image & ~hole).sum()
    assert any("orthophoto_nodata_points" in r.getMessage() for r in caplog.records)
    # away from the hole's edge the colours are those of the untouched image
    xy = np.stack([np.asarray(las.x), np.asarray(las.y)], 1)[on_image & ~hole]
    far = xy[:, 0] - C > 901
    np.testing.assert_array_equal(scene.points.rgb[far], np.round(autzen_ortho.sample(xy[far])).astype(np.uint8))
    # the scene folder keeps which pixels hold no image (alpha 0 in its orthophoto.png)
    kept = read_scene_orthophoto(write_imported_scene(tmp_path / "scenes", scene))
    assert kept.valid is not None and np.array_equal(kept.valid, scene.orthophoto.valid) and not kept.valid.all()


def test_colour_next_to_a_hole_averages_valid_pixels_only():
    image = np.zeros((2, 2, 3), np.uint8)
    image[:, 1] = 200
    valid = np.array([[False, True], [True, True]])
    image[1, 0] = 100
    ortho = Orthophoto(image, np.array([[1.0, 0, 0], [0, 1.0, 0]]), valid=valid)
    # (0.6, 0.6) lies on pixel (1, 1): weights 0.16 / 0.24 / 0.24 / 0.36 on (0,0) (0,1) (1,0) (1,1)
    got = ortho.sample(np.array([[0.6, 0.6], [0.4, 0.4], [0.0, 1.0]]))
    np.testing.assert_allclose(got[0], (0.24 * 200 + 0.24 * 100 + 0.36 * 200) / 0.84, rtol=1e-5)
    assert np.isnan(got[1]).all()  # on the invalid pixel
    np.testing.assert_allclose(got[2], 100)
    assert ortho.crop(0.5, 0.5, 1, 1, margin_px=0).valid is not None


def test_16bit_greyscale_is_scaled_over_the_full_range(tmp_path, real_data, autzen_pixels):
    grey8 = np.asarray(Image.fromarray(autzen_pixels).convert("L"))
    grey8_path = _save_with_world_file(tmp_path, real_data, "grey8.png", Image.fromarray(grey8))
    grey16 = Image.fromarray(grey8.astype(np.uint16) * 257)
    grey16_path = _save_with_world_file(tmp_path, real_data, "grey16.png", grey16)
    with Image.open(grey16_path) as im:
        assert im.mode == "I;16"
    kw = {"color_source": "orthophoto"}
    want = import_las(real_data / "autzen_trim.las", orthophoto=grey8_path, **kw).points.rgb
    got = import_las(real_data / "autzen_trim.las", orthophoto=grey16_path, **kw).points.rgb
    assert got.min() < 100  # not clipped to white
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_16bit_modes_and_their_nodata(tmp_path, mode):
    values = np.array([[0, 257, 32768], [65535, 1000, 65535]])
    if mode == "I;16B":
        im = Image.frombytes("I;16B", (3, 2), values.astype(">u2").tobytes())
    else:
        im = Image.fromarray(values.astype(np.uint16 if mode == "I;16" else np.int32))
    assert im.mode == mode
    im.save(tmp_path / "t.tif")
    (tmp_path / "t.tfw").write_text("1\n0\n0\n-1\n0\n0\n")
    ortho = read_orthophoto(tmp_path / "t.tif")
    np.testing.assert_array_equal(ortho.image[..., 0], [[0, 1, 128], [255, 4, 255]])
    assert ortho.valid is None
    holes = read_orthophoto(tmp_path / "t.tif", nodata=65535)
    np.testing.assert_array_equal(holes.valid, [[True, True, True], [False, True, False]])
    with pytest.raises(DataImportError, match=r"t\.tif: nodata=\(1, 2, 3\) differs per band"):
        read_orthophoto(tmp_path / "t.tif", nodata=(1, 2, 3))


def test_image_modes_that_cannot_give_colour_are_refused(tmp_path):
    (tmp_path / "f.tfw").write_text("1\n0\n0\n-1\n0\n0\n")
    Image.fromarray(np.ones((2, 3), np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(DataImportError, match=r"f\.tif: pixel mode 'F' \(floating point\)"):
        read_orthophoto(tmp_path / "f.tif")
    with pytest.raises(DataImportError, match=r"f\.tif: pixel mode 'F'"):  # from the header alone
        check_orthophoto(tmp_path / "f.tif")
    Image.fromarray(np.array([[0, 70_000]], np.int32)).save(tmp_path / "wide.tif")
    shutil.copy(tmp_path / "f.tfw", tmp_path / "wide.tfw")
    with pytest.raises(DataImportError, match=r"wide\.tif: pixel mode 'I' holds values 0\.\.70000, outside 16 bit"):
        read_orthophoto(tmp_path / "wide.tif")
    Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(tmp_path / "f.png")
    shutil.copy(tmp_path / "f.tfw", tmp_path / "f.pgw")
    with pytest.raises(DataImportError, match=r"f\.png: nodata=\(300, 300, 300\) exceeds 255"):
        read_orthophoto(tmp_path / "f.png", nodata=300)
    with pytest.raises(ValueError, match=r"f\.png: option nodata=-1"):
        read_orthophoto(tmp_path / "f.png", nodata=-1)


# --------------------------------------------------------------------------- GeoTIFF georeferencing


def _geotiff(path, tags: dict, size=(30, 20)) -> str:
    ifd = TiffImagePlugin.ImageFileDirectory_v2()
    for tag, value in tags.items():
        ifd[tag] = value
        ifd.tagtype[tag] = 3 if tag == 34735 else 12  # GeoKey directory: SHORT; the others: DOUBLE
    Image.fromarray(np.full((size[1], size[0], 3), 90, np.uint8)).save(path, tiffinfo=ifd)
    return str(path)


def test_geotiff_scale_and_tiepoint_place_a_north_up_image(tmp_path):
    # tiepoint: raster (0, 0), the top-left pixel's outer corner under PixelIsArea, at (1000, 2000)
    path = _geotiff(tmp_path / "geo.tif", {33550: (2.0, 3.0, 0.0), 33922: (0.0, 0.0, 0.0, 1000.0, 2000.0, 0.0)})
    ortho = read_orthophoto(path)
    np.testing.assert_allclose(ortho.affine, [[2, 0, 1001], [0, -3, 1998.5]])  # pixel centres
    np.testing.assert_allclose(ortho.corners()[0], [1000, 2000])
    assert ortho.georef_file == ortho.source == str((tmp_path / "geo.tif").resolve())
    affine, size = check_orthophoto(path)
    assert size == (30, 20) and np.allclose(affine, ortho.affine)
    # a tiepoint elsewhere in the raster, and PixelIsPoint (GTRasterTypeGeoKey 1025 = 2): no half-pixel shift
    point = _geotiff(tmp_path / "point.tif", {33550: (2.0, 3.0, 0.0), 33922: (10.0, 4.0, 0.0, 1000.0, 2000.0, 0.0),
                                              34735: (1, 1, 0, 1, 1025, 0, 1, 2)})
    np.testing.assert_allclose(read_orthophoto(point).affine, [[2, 0, 980], [0, -3, 2012]])


def test_geotiff_model_transformation_may_rotate(tmp_path):
    theta = np.deg2rad(30)
    a, b, d, e = 2 * np.cos(theta), -2 * np.sin(theta), 2 * np.sin(theta), 2 * np.cos(theta)
    matrix = (a, b, 0.0, 500.0, d, e, 0.0, 700.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    ortho = read_orthophoto(_geotiff(tmp_path / "rot.tif", {34264: matrix}))
    np.testing.assert_allclose(ortho.affine, [[a, b, 500 + (a + b) / 2], [d, e, 700 + (d + e) / 2]])


def test_geotiff_problems_and_the_world_file_winning(tmp_path):
    gcps = _geotiff(tmp_path / "gcps.tif", {33550: (1.0, 1.0, 0.0), 33922: (0.0,) * 6 + (5.0, 5.0, 0.0, 9.0, 9.0, 0.0)})
    with pytest.raises(DataImportError, match=r"gcps\.tif: GeoTIFF holds 2 tiepoints .*ground control points"):
        read_orthophoto(gcps)
    lonely = _geotiff(tmp_path / "lonely.tif", {33922: (0.0, 0.0, 0.0, 5.0, 5.0, 0.0)})
    with pytest.raises(DataImportError, match=r"lonely\.tif: GeoTIFF has ModelTiepoint but no ModelPixelScale"):
        check_orthophoto(lonely)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "plain.tif")
    with pytest.raises(DataImportError, match=r"plain\.tif: no world file found .* and no GeoTIFF georeferencing tags"):
        read_orthophoto(tmp_path / "plain.tif")
    both = _geotiff(tmp_path / "both.tif", {33550: (2.0, 3.0, 0.0), 33922: (0.0, 0.0, 0.0, 1000.0, 2000.0, 0.0)})
    (tmp_path / "both.tfw").write_text("1\n0\n0\n-1\n100\n200\n")
    ortho = read_orthophoto(both)
    np.testing.assert_allclose(ortho.affine, [[1, 0, 100], [0, -1, 200]])
    assert ortho.georef_file == str((tmp_path / "both.tfw").resolve())


def test_las_coloured_from_a_geotiff_lists_absolute_source_files(tmp_path, monkeypatch):
    xyz = grid_points(n=300, size=50.0, x0=1000.0, y0=1950.0)
    las_path = write_las(tmp_path / "g.las", xyz, rgb=np.zeros((300, 3)), crs=None)
    _geotiff(tmp_path / "geo.tif", {33550: (2.0, 3.0, 0.0), 33922: (0.0, 0.0, 0.0, 1000.0, 2000.0, 0.0)})
    monkeypatch.chdir(tmp_path)
    check_las("g.las", orthophoto="geo.tif", units="m")
    scene = import_las("g.las", orthophoto="geo.tif", units="m")
    assert scene.metadata["color_source"] == "orthophoto" and (scene.points.rgb == 90).all()
    assert scene.metadata["source_files"] == [str(las_path.resolve()), str((tmp_path / "geo.tif").resolve())]


def test_source_files_are_absolute_and_name_the_world_file(tmp_path, real_data, monkeypatch):
    monkeypatch.chdir(real_data)
    scene = import_las(real_data / "autzen_trim.las", orthophoto="autzen.jpg", max_points=1000)
    assert scene.metadata["source_files"] == [
        str((real_data / name).resolve()) for name in ("autzen_trim.las", "autzen.jpg", "autzen.wld")
    ]
    assert scene.orthophoto.source == str((real_data / "autzen.jpg").resolve())


def test_points_all_on_transparent_pixels_fail(tmp_path):
    xyz = grid_points(n=100, size=20.0, x0=0.0, y0=0.0)
    las_path = write_las(tmp_path / "clear.las", xyz, rgb=np.zeros((100, 3)), crs=None)
    Image.fromarray(np.zeros((30, 30, 4), np.uint8), "RGBA").save(tmp_path / "clear.png")
    (tmp_path / "clear.pgw").write_text("1\n0\n0\n-1\n0\n25\n")
    with pytest.raises(DataImportError, match=r"clear\.las: every point on the orthophoto .* transparent"):
        import_las(las_path, orthophoto=tmp_path / "clear.png", units="m")
