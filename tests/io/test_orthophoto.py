"""Orthophotos: world-file affine, bilinear sampling, crops, colouring LiDAR from them."""

from __future__ import annotations

import laspy
import numpy as np
import pytest
from import_helpers import grid_points, write_las
from PIL import Image
from scipy.ndimage import map_coordinates

from earthcrafter.io.import_common import INTERNATIONAL_FOOT_M, DataImportError
from earthcrafter.io.imported_scene import read_scene_orthophoto, write_imported_scene
from earthcrafter.io.las import import_las
from earthcrafter.io.orthophoto import Orthophoto, find_world_file, read_orthophoto, read_world_file
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
