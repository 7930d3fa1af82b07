"""Foundation contracts: semantics table, camera conventions, scene round trip, atomic writes."""

import json

import numpy as np
import pytest

from earthcrafter import config
from earthcrafter.geometry.cameras import Camera, intrinsics_from_fov, look_at
from earthcrafter.io.atomic import atomic_path
from earthcrafter.io.scene import Frame, Mesh, Points, Scene, read_mesh_ply, read_scene, write_scene
from earthcrafter.semantics import ASPRS_TO_CLASS, CLASSES, NUM_CLASSES, PALETTE, colorize


def test_semantic_table_is_the_25_classes_of_the_design():
    assert NUM_CLASSES == 25
    assert [c[0] for c in CLASSES] == list(range(25))
    assert len({c[1] for c in CLASSES}) == 25
    assert len({tuple(c[2]) for c in CLASSES}) == 25, "colours must tell classes apart"
    assert PALETTE.shape == (25, 3)
    assert all(0 <= v < 25 for v in ASPRS_TO_CLASS.values())
    with pytest.raises(ValueError, match=r"\[0, 24\]"):
        colorize(np.array([25]))


def _camera(w=32, h=24):
    return Camera(intrinsics_from_fov(w, h, 60), look_at([10.0, -20.0, 30.0], [0.0, 0.0, 0.0]), w, h)


def test_project_unproject_roundtrip():
    cam = _camera()
    rng = np.random.default_rng(0)
    depth = rng.uniform(5, 50, (cam.height, cam.width)).astype(np.float64)
    pts = cam.unproject_depth(depth)
    uv, z = cam.project(pts.reshape(-1, 3))
    v, u = np.mgrid[0 : cam.height, 0 : cam.width] + 0.5
    np.testing.assert_allclose(uv[:, 0], u.ravel(), atol=1e-6)
    np.testing.assert_allclose(uv[:, 1], v.ravel(), atol=1e-6)
    np.testing.assert_allclose(z, depth.ravel(), atol=1e-6)


def test_look_at_is_opencv():
    cam = _camera()
    # target projects to the principal point; world up projects upward (negative image y)
    uv, z = cam.project(np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
    np.testing.assert_allclose(uv[0], [cam.width / 2, cam.height / 2], atol=1e-9)
    assert z[0] > 0 and uv[1, 1] < uv[0, 1]
    np.testing.assert_allclose(cam.center, [10, -20, 30], atol=1e-9)
    R = cam.world_to_camera[:3, :3]
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(R) == pytest.approx(1.0)


def test_scene_roundtrip(tmp_path):
    rng = np.random.default_rng(1)
    mesh = Mesh(rng.random((5, 3)), [[0, 1, 2], [2, 3, 4]], rng.integers(0, 255, (5, 3)), [1, 9])
    cam = _camera()
    frame = Frame(
        "000",
        cam,
        rng.integers(0, 255, (24, 32, 3), dtype=np.uint8),
        np.where(rng.random((24, 32)) < 0.1, np.inf, rng.random((24, 32))).astype(np.float32),
        rng.standard_normal((24, 32, 3)).astype(np.float32),
        rng.integers(0, 25, (24, 32), dtype=np.uint8),
    )
    pts = Points(rng.random((7, 3)) * 100, rng.integers(0, 255, (7, 3)), rng.integers(0, 25, 7))
    write_scene(tmp_path, Scene("a", {"biome": "desert", "n": np.int64(3)}, mesh, pts, [frame]))
    back = read_scene(tmp_path / "a")
    assert back.metadata["biome"] == "desert" and back.metadata["n"] == 3
    np.testing.assert_allclose(back.mesh.vertices, mesh.vertices, rtol=1e-6)  # float32 on disk
    np.testing.assert_array_equal(back.mesh.faces, mesh.faces)
    np.testing.assert_array_equal(back.mesh.face_semantic, mesh.face_semantic)
    np.testing.assert_array_equal(back.mesh.vertex_colors, mesh.vertex_colors)
    np.testing.assert_array_equal(back.points.xyz, pts.xyz)
    f = back.frames[0]
    np.testing.assert_array_equal(f.rgb, frame.rgb)
    np.testing.assert_array_equal(f.depth, frame.depth)
    np.testing.assert_array_equal(f.semantic, frame.semantic)
    np.testing.assert_allclose(f.normal, frame.normal, atol=2e-3)  # float16 on disk
    np.testing.assert_allclose(f.camera.world_to_camera, cam.world_to_camera)
    # the mesh is a standard PLY with a per-face class
    assert read_mesh_ply(tmp_path / "a" / "mesh.ply").face_semantic.tolist() == [1, 9]


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "scene"
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "ok.txt").write_text("v1")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "ok.txt").write_text("v2-half")
            raise RuntimeError("crash mid-write")
    assert (target / "ok.txt").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene"], "no temporaries left behind"


def test_bad_frame_shapes_are_named():
    cam = _camera()
    with pytest.raises(ValueError, match="frame x: depth shape"):
        Frame("x", cam, np.zeros((24, 32, 3), np.uint8), np.zeros((10, 10), np.float32))
    with pytest.raises(ValueError, match="face_semantic holds class 30"):
        Mesh(np.zeros((3, 3)), [[0, 1, 2]], None, [30])


def test_config_errors_name_the_key():
    with pytest.raises(config.ConfigError, match="unknown parameter section"):
        config.validate_all({"acquisiton": {}})
    with pytest.raises(config.ConfigError, match=r"parameters\.acquisition\.synthetic\.num_sites"):
        config.validate("acquisition", {"synthetic": {"num_sites": -1}})
    with pytest.raises(config.ConfigError, match=r"parameters\.acquisition\.synthetic\.bogus"):
        config.validate("acquisition", {"synthetic": {"bogus": 1}})


def test_flatten_for_mlflow():
    flat = config.flatten({"a": {"b": 1, "c": [1, 2]}, "d": [{"e": 3}]})
    assert flat == {"a.b": 1, "a.c": [1, 2], "d.0.e": 3}
    json.dumps(flat)


@pytest.mark.parametrize("env", ["base", "paper"])
def test_every_parameter_section_of_each_environment_validates(env):
    """What `kedro run --env=<env>` loads (conf/base, then the environment's files over it) passes
    the parameter schemas: the paper configuration is a configuration that starts."""
    from pathlib import Path

    from kedro.config import OmegaConfigLoader

    conf = Path(__file__).parents[1] / "conf"
    params = OmegaConfigLoader(str(conf), base_env="base", default_run_env=env)["parameters"]
    validated = config.validate_all(params)
    assert {"train_structvae", "train_texvae", "train_structfm", "train_texfm", "generation"} <= validated.keys()
    if env == "paper":
        assert validated["train_texfm"].model.arch == "unet"  # the paper's TexFM network
        assert validated["train_structfm"].model.fine_arch == "unet"  # and its fine StructFM stage
