"""Orthophotos: world-file affine, bilinear sampling, crops, colouring LiDAR from them."""

from __future__ import annotations

import logging
import shutil

import laspy
import numpy as np
import pytest
import tifffile
from import_helpers import grid_points, write_las
from PIL import Image, TiffImagePlugin
from scipy.ndimage import map_coordinates

from earthcrafter.io.import_common import INTERNATIONAL_FOOT_M, DataImportError
from earthcrafter.io.imported_scene import read_scene_orthophoto, write_imported_scene
from earthcrafter.io.las import check_las, import_las
from earthcrafter.io import orthophoto as orthophoto_module
from earthcrafter.io.orthophoto import (
    Orthophoto,
    check_orthophoto,
    check_same_crs,
    find_world_file,
    read_orthophoto,
    read_world_file,
    scale_16_to_8,
)
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


def _tiff16(path, pixels: np.ndarray, **kw) -> str:
    """A north-up GeoTIFF of 16-bit samples (tifffile), 1 unit pixels, top-left corner at (0, 0)."""
    geo = [(33550, "d", 3, (1.0, 1.0, 0.0), False), (33922, "d", 6, (0.0, 0.0, 0.0, 0.0, 0.0, 0.0), False)]
    tifffile.imwrite(path, pixels.astype(np.uint16), extratags=geo, **kw)
    return str(path)


def test_16bit_rgb_tiff_nodata_is_compared_with_the_stored_values(tmp_path):
    # PIL reads 16-bit RGB as 8 bit (the high byte): dark pixels (< 256) would look like nodata=0
    pixels = np.full((4, 6, 3), 30000, np.uint16)
    pixels[0, :2] = 0  # nodata 0
    pixels[1, :2] = 200  # valid, dark
    pixels[2, :2] = 65535  # nodata 65535
    pixels[3, 0] = (0, 0, 7)  # only two bands at 0: valid
    path = _tiff16(tmp_path / "rgb16.tif", pixels, photometric="rgb")
    with Image.open(path) as im:
        assert im.mode == "RGB"  # what PIL makes of it
    ortho = read_orthophoto(path, nodata=0)
    want_valid = np.ones((4, 6), bool)
    want_valid[0, :2] = False
    np.testing.assert_array_equal(ortho.valid, want_valid)
    np.testing.assert_array_equal(ortho.image[1:], scale_16_to_8(pixels[1:]))  # scaled like one-band 16 bit
    holes = read_orthophoto(path, nodata=65535)
    assert (~holes.valid).sum() == 2 and not holes.valid[2, :2].any()
    np.testing.assert_array_equal(read_orthophoto(path, nodata=(0, 0, 7)).valid[3], [False] + [True] * 5)
    check_orthophoto(path, nodata=65535)  # a 16-bit value for a 16-bit file, from the header alone
    with pytest.raises(DataImportError, match=r"rgb8\.tif: nodata=\(300, 300, 300\) exceeds 255"):
        read_orthophoto(_geotiff(tmp_path / "rgb8.tif", {33550: (1.0, 1.0, 0.0), 33922: (0.0,) * 6}), nodata=300)


@pytest.mark.parametrize("layout", ["alpha", "premultiplied", "unspecified 4th band", "planar", "lzw"])
def test_16bit_rgb_tiff_layouts(tmp_path, layout):
    pixels = np.zeros((3, 4, 4), np.uint16)
    pixels[..., :3] = (65535, 32768, 129)  # PIL's high byte would make 129 a 0
    pixels[..., 3] = 65535
    pixels[0, 0, 3] = 0  # transparent (when the 4th band is alpha)
    pixels[1, 0] = (16384, 8192, 0, 32768)  # half transparent: premultiplied, it stands for (32768, 16384, 0)
    kw = {"alpha": {"extrasamples": ["unassalpha"]}, "premultiplied": {"extrasamples": ["assocalpha"]},
          "unspecified 4th band": {"extrasamples": ["unspecified"]}, "planar": {"planarconfig": "separate"},
          "lzw": {"compression": "lzw", "predictor": True}}[layout]  # LZW, GDAL's usual: imagecodecs decodes it
    if layout == "planar":
        pixels = np.moveaxis(pixels[..., :3], -1, 0)
    elif layout == "lzw":
        pixels = pixels[..., :3]
    ortho = read_orthophoto(_tiff16(tmp_path / "t.tif", pixels, photometric="rgb", **kw))
    np.testing.assert_array_equal(ortho.image[2, 3], [255, 128, 1])
    if layout in ("alpha", "premultiplied"):
        assert ortho.valid.sum() == 11 and not ortho.valid[0, 0]
    else:
        assert ortho.valid is None
    if layout == "premultiplied":
        np.testing.assert_array_equal(ortho.image[1, 0], [128, 64, 0])


def test_12bit_rgb_in_16_bits_warns_like_greyscale(tmp_path, caplog):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 4096, (5, 5, 3))
    pixels[2, 2, 1] = 4095
    rgb12 = _tiff16(tmp_path / "rgb12.tif", pixels, photometric="rgb")
    with caplog.at_level(logging.WARNING, logger="earthcrafter"):
        ortho = read_orthophoto(rgb12)
    assert ortho.image.max() <= 16
    assert "rgb12.tif: 16-bit pixels reach only 4095 of 65535" in caplog.text
    # the range is that of the pixels holding image: a 65535 nodata fill does not hide it (one band or three)
    grey = rng.integers(0, 4000, (5, 5))
    grey[0] = 65535
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="earthcrafter"):
        read_orthophoto(_tiff16(tmp_path / "g12.tif", grey, photometric="minisblack"), nodata=65535)
        read_orthophoto(_tiff16(tmp_path / "rgb8bit.tif", np.full((5, 5, 3), 65535), photometric="rgb"))
    assert f"g12.tif: 16-bit pixels reach only {grey[1:].max()} of 65535" in caplog.text
    assert "rgb8bit.tif" not in caplog.text


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


GEO = {33550: (1.0, 1.0, 0.0), 33922: (0.0, 0.0, 0.0, 500000.0, 4100100.0, 0.0)}


@pytest.mark.parametrize(("geokeys", "epsg"), [
    ((1, 1, 0, 2, 1024, 0, 1, 1, 3072, 0, 1, 2263), 2263),  # projected
    ((1, 1, 0, 2, 1024, 0, 1, 2, 2048, 0, 1, 4326), 4326),  # geographic
    ((1, 1, 0, 1, 3072, 0, 1, 32610), 32610),  # no model type
    ((1, 1, 0, 2, 1024, 0, 1, 1, 3072, 0, 1, 32767), None),  # user-defined projection
    ((1, 1, 0, 3, 1024, 0, 1, 1, 2048, 0, 1, 4269, 3072, 0, 1, 32767), None),  # 4269 is only its base
    ((1, 1, 0, 1, 1025, 0, 1, 1), None),  # GeoKeys without a CRS
])
def test_geotiff_crs_is_read_from_its_geokeys(tmp_path, geokeys, epsg):
    ortho = read_orthophoto(_geotiff(tmp_path / "crs.tif", {**GEO, 34735: geokeys}))
    assert ortho.crs_epsg == epsg
    assert ortho.crop(500000, 4100090, 500010, 4100100).to_local((500000, 4100000), 1.0).crs_epsg == epsg


def test_geotiff_crs_must_match_the_point_clouds(tmp_path, caplog):
    path = _geotiff(tmp_path / "ny.tif", {**GEO, 34735: (1, 1, 0, 2, 1024, 0, 1, 1, 3072, 0, 1, 2263)})
    match = r"ny\.tif: GeoTIFF CRS EPSG:2263 \(NAD83 / New York .*\) differs from the CRS of cloud\.las, EPSG:32610"
    with pytest.raises(DataImportError, match=match):
        check_orthophoto(path, data_epsg=32610, data_path="cloud.las")
    with pytest.raises(DataImportError, match=match + r" .*gdalwarp -t_srs EPSG:32610"):
        check_same_crs(read_orthophoto(path).crs_epsg, 32610, path, "cloud.las")
    check_orthophoto(path, data_epsg=2263, data_path="cloud.las")
    check_same_crs(4326, 4326, path, "cloud.las")
    with caplog.at_level(logging.INFO, logger="earthcrafter"):
        check_orthophoto(path, data_epsg=None, data_path="cloud.las")  # the point cloud's CRS unknown
        check_same_crs(None, 32610, "tile.jpg", "cloud.las")  # a world file: no CRS
    logged = caplog.text
    assert "ny.tif: CRS not checked against cloud.las (orthophoto EPSG 2263, point cloud EPSG unknown)" in logged
    assert "tile.jpg: CRS not checked against cloud.las (orthophoto EPSG unknown, point cloud EPSG 32610)" in logged
    # a world file overriding the image's affine tags overrides their CRS too; next to bare GeoKeys it keeps them
    (tmp_path / "ny.tfw").write_text("1\n0\n0\n-1\n500000\n4100100\n")
    assert read_orthophoto(path).crs_epsg is None
    keys_only = _geotiff(tmp_path / "keys.tif", {34735: (1, 1, 0, 1, 3072, 0, 1, 2263)})
    shutil.copy(tmp_path / "ny.tfw", tmp_path / "keys.tfw")
    assert read_orthophoto(keys_only).crs_epsg == 2263


def test_images_over_the_pixel_limit_are_refused_saying_what_to_do(tmp_path, monkeypatch):
    path = _geotiff(tmp_path / "huge.tif", GEO)  # 30 x 20
    monkeypatch.setattr(orthophoto_module, "MAX_ORTHOPHOTO_PIXELS", 500)
    match = (r"huge\.tif: image size 30 x 20 = 600 pixels exceeds the orthophoto limit of 500 pixels; crop the "
             r"orthophoto to the point cloud's extent first, e\.g\. gdal_translate -projwin")
    with pytest.raises(DataImportError, match=match):
        read_orthophoto(path)
    with pytest.raises(DataImportError, match=match):  # from the header alone
        check_orthophoto(path)
    monkeypatch.setattr(orthophoto_module, "MAX_ORTHOPHOTO_PIXELS", 250)  # PIL's own guard would say "bomb" here
    with pytest.raises(DataImportError, match=r"huge\.tif: image size 30 x 20 = 600 pixels exceeds .* of 250 pixels"):
        read_orthophoto(path)
    monkeypatch.setattr(orthophoto_module, "MAX_ORTHOPHOTO_PIXELS", 600)
    assert read_orthophoto(path).width == 30


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
