import numpy as np
import pytest
from pydantic import ValidationError

from earthcrafter.geometry.crops import CropConfig, central_crop, crop_mesh, faces_in_box_xy, plan_tiles
from ec_vox_helpers import make_mesh


def test_paper_crop_gives_nine_200m_tiles_with_150m_stride():
    cmin, size = central_crop(np.zeros(2), np.array([600.0, 600.0]), CropConfig())
    np.testing.assert_allclose(cmin, [50, 50])
    assert size == 500
    tiles = plan_tiles("s", cmin, size, CropConfig())
    assert len(tiles) == 9
    assert sorted({t.xy_min[0] for t in tiles}) == [50, 200, 350]
    assert {t.tile_id for t in tiles} == {f"s_r{r}c{c}" for r in range(3) for c in range(3)}
    assert all(t.size_m == 200 for t in tiles)
    t = next(t for t in tiles if t.row == 1 and t.col == 2)
    assert t.xy_min == (350.0, 200.0) and t.xy_max == (550.0, 400.0)
    inside = t.contains_xy(np.array([[350.0, 200.0], [549.99, 399.99], [550.0, 300.0], [400.0, 400.0]]))
    np.testing.assert_array_equal(inside, [True, True, False, False])  # half-open


def test_central_fraction_oversize_and_uneven_strides():
    cfg = CropConfig(central_size_m=None, central_fraction=0.5, tile_size_m=100, tile_stride_m=100)
    cmin, size = central_crop(np.array([0.0, 0.0]), np.array([400.0, 300.0]), cfg)
    assert size == 150 and np.allclose(cmin, [125, 75])
    _, size = central_crop(np.zeros(2), np.array([300.0, 300.0]), CropConfig())
    assert size == 300  # 500 m requested, scene is 300 m
    tiles = plan_tiles("s", np.zeros(2), 450.0, CropConfig())  # (450 - 200) / 150 -> 2 per axis, centred
    assert len(tiles) == 4 and sorted({t.xy_min[0] for t in tiles}) == [50.0, 200.0]
    assert plan_tiles("s", np.zeros(2), 150.0, CropConfig()) == []


def test_crop_config_validation():
    with pytest.raises(ValidationError, match="exactly one"):
        CropConfig(central_size_m=None)
    with pytest.raises(ValidationError, match="exactly one"):
        CropConfig(central_fraction=0.5)
    with pytest.raises(ValidationError):
        CropConfig(tile_size_m=-1)
    with pytest.raises(ValidationError):
        CropConfig(bogus=1)


def test_faces_in_box_is_conservative_and_crop_mesh_keeps_geometry():
    mesh = make_mesh()
    lo, hi = np.array([33.3, 47.1]), np.array([71.9, 80.2])
    faces = faces_in_box_xy(mesh, lo, hi)
    tri = mesh.vertices[mesh.faces][:, :, :2]
    brute = [i for i in range(len(tri)) if (tri[i].max(0) >= lo).all() and (tri[i].min(0) <= hi).all()]
    np.testing.assert_array_equal(faces, brute)
    # every face with a vertex inside the box is kept
    vin = ((mesh.vertices[:, :2] >= lo) & (mesh.vertices[:, :2] <= hi)).all(1)
    assert set(np.flatnonzero(vin[mesh.faces].any(1))) <= set(faces)
    sub = crop_mesh(mesh, lo, hi)
    np.testing.assert_allclose(sub.vertices[sub.faces], mesh.vertices[mesh.faces[faces]])
    np.testing.assert_array_equal(sub.face_semantic, mesh.face_semantic[faces])


def test_rectangular_crop_tiles_an_elongated_survey():
    # A 359 m x 171 m survey (the Autzen LiDAR): two tiles along x, one centred tile along y.
    cfg = CropConfig(rectangular=True, min_cover_fraction=0.8)
    cmin, size = central_crop(np.zeros(2), np.array([359.0, 171.0]), cfg)
    np.testing.assert_allclose(size, [359.0, 171.0])
    tiles = plan_tiles("s", cmin, size, cfg)
    assert [(t.row, t.col) for t in tiles] == [(0, 0), (0, 1)]
    assert tiles[0].xy_min[1] == pytest.approx((171.0 - 200.0) / 2)  # centred on the short axis
    assert plan_tiles("s", cmin, np.array([359.0, 150.0]), cfg) == []  # covers < 80 % of a tile
