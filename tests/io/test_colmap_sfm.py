"""The COLMAP path on files COLMAP itself wrote: pycolmap reconstructs a textured scene from its
rendered frames (SIFT, matching, incremental SfM, undistortion), writes the model in TEXT and BINARY
and depth maps with its own writer; ``colmap_to_frames`` + ``import_frames`` must give back cameras
close to the ones the frames were rendered with, and depth that lifts onto the mesh
(scripts/colmap_sfm_check.py runs the chain; docs/data_import.md reports it on a synthetic site)."""

from __future__ import annotations

import numpy as np
import pytest

from earthcrafter.geometry.cameras import Camera, look_at
from earthcrafter.geometry.raycast import MeshRaycaster, Shading
from earthcrafter.io.colmap import colmap_to_frames
from earthcrafter.io.import_common import DataImportError
from earthcrafter.io.scene import Mesh, Scene, write_scene

pycolmap = pytest.importorskip("pycolmap")

W, H, FOCAL = 320, 240, 280.0  # not square: a transposed image or depth map cannot pass
VIEWS = 16
CELL_M = 0.4  # texture cell: blocky random colours give SIFT corners everywhere


def textured_scene_mesh() -> Mesh:
    """A 60 x 60 m ground square with two boxes (8 m and 14 m tall) on it."""
    vertices = [[0, 0, 0], [60, 0, 0], [60, 60, 0], [0, 60, 0]]
    faces = [[0, 1, 2], [0, 2, 3]]
    quads = [[4, 5, 7, 6], [0, 1, 5, 4], [2, 3, 7, 6], [0, 2, 6, 4], [1, 3, 7, 5]]  # top and four sides
    for (x0, y0), (x1, y1), top in [((18, 20), (30, 32), 8.0), ((36, 30), (44, 42), 14.0)]:
        base = len(vertices)
        vertices += [[x, y, z] for z in (0, top) for y in (y0, y1) for x in (x0, x1)]
        faces += [[base + q[0], base + q[i], base + q[i + 1]] for q in quads for i in (1, 2)]
    return Mesh(np.array(vertices, np.float64), np.array(faces), np.full((len(vertices), 3), 128, np.uint8))


def random_texture(points: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """A colour per CELL_M square, from (x, y) on flat ground and roofs, (x + y, z) on walls."""
    table = np.random.default_rng(7).integers(20, 236, (256, 256, 3))
    flat = np.abs(normals[:, 2]) > 0.5
    a = np.where(flat, points[:, 0], points[:, 0] + points[:, 1])
    b = np.where(flat, points[:, 1], points[:, 2] + 50.0)
    i, j = np.floor(a / CELL_M).astype(int) % 256, np.floor(b / CELL_M).astype(int) % 256
    return table[i, j].astype(np.float32)


def ring_cameras() -> list[Camera]:
    K = np.array([[FOCAL, 0, W / 2], [0, FOCAL, H / 2], [0, 0, 1.0]])  # COLMAP assumes the centre
    cameras = []
    for k in range(VIEWS):
        angle = 2 * np.pi * k / VIEWS
        eye = np.array([30 + 32 * np.cos(angle), 30 + 32 * np.sin(angle), 26.0 + 4 * (k % 2)])
        target = np.array([30 + 3 * np.cos(3 * angle), 30 + 3 * np.sin(2 * angle), 2.0])
        cameras.append(Camera(K, look_at(eye, target), W, H))
    return cameras


@pytest.fixture(scope="module")
def checked(tmp_path_factory, load_script):
    mesh = textured_scene_mesh()
    caster = MeshRaycaster(mesh)
    frames = [caster.render(cam, f"v{k:02d}", Shading.measured(), random_texture)
              for k, cam in enumerate(ring_cameras())]
    root = tmp_path_factory.mktemp("colmap_sfm")
    scene_dir = write_scene(root / "scenes", Scene("ring", {"source": "test"}, mesh=mesh, frames=frames))
    work = root / "work"
    return load_script("colmap_sfm_check").check(scene_dir, work), work


def test_colmap_reconstruction_imports_with_the_rendered_cameras(checked):
    report, _ = checked
    assert report["registered"] >= 12 and report["imported"] == report["registered"]
    assert report["rotation_error_deg"]["median"] < 0.3 and report["rotation_error_deg"]["max"] < 1.0
    range_m = report["median_camera_range_m"]
    assert report["centre_error_m"]["median"] < 0.005 * range_m and report["centre_error_m"]["max"] < 0.01 * range_m
    assert report["focal_error"]["max_abs"] < 0.01
    assert report["text_equals_binary"]


def test_colmap_depth_maps_read_and_lift_onto_the_surface(checked):
    """The depth was cast with the reconstructed cameras themselves, so it lifts onto the mesh whatever
    SfM's pose error; a wrong pixel-centre, axis or depth-layout convention would lift it off."""
    report, _ = checked
    assert report["depth_maps_read_as_colmap_reads_them"]
    lifted = report["lifted_depth_to_mesh_m"]
    assert lifted["points"] > 0.5 * report["imported"] * W * H  # all in view, barely any sky
    assert lifted["median"] < 1e-3 and lifted["p99"] < 1e-2


def test_distorted_model_from_colmap_is_refused(checked, tmp_path):
    """SfM's own model has a SIMPLE_RADIAL camera: the converter asks for image_undistorter first."""
    _, work = checked
    with pytest.raises(DataImportError, match="image_undistorter"):
        colmap_to_frames(work / "sparse" / "0", work / "images", tmp_path / "frames")
    assert not (tmp_path / "frames").exists()


def test_check_replaces_only_its_own_work_folder(checked, tmp_path, load_script):
    _, work = checked
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "keep.txt").write_text("x")
    with pytest.raises(ValueError, match="not an earlier check's work folder"):
        load_script("colmap_sfm_check").check(work.parent / "scenes" / "ring", mine)
    assert (mine / "keep.txt").read_text() == "x"
