"""Frames rendered for imported scenes: measured colours are not shaded again, and the
orthophoto drapes the surfaces that face up."""

from __future__ import annotations

import json

import numpy as np
import pytest

from earthcrafter.datasets import SceneFolderDataset
from earthcrafter.geometry.cameras import Camera, intrinsics_from_fov, look_at
from earthcrafter.geometry.raycast import MeshRaycaster, Shading, orthophoto_drape
from earthcrafter.io.imported_scene import ImportedScene, read_imported_scene, write_imported_scene
from earthcrafter.io.orthophoto import Orthophoto
from earthcrafter.io.scene import Mesh, Points, Scene, read_metadata


def plane_and_wall(colour=(90, 140, 60)) -> Mesh:
    """A 40 x 40 m ground square at z = 0 and a 10 m high wall along x = 30 (faces -x)."""
    v = np.array([[0, 0, 0], [40, 0, 0], [40, 40, 0], [0, 40, 0],
                  [30, 5, 0], [30, 35, 0], [30, 35, 10], [30, 5, 10]], dtype=np.float64)  # fmt: skip
    f = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    return Mesh(v, f, np.tile(np.array(colour, np.uint8), (8, 1)), np.zeros(4, np.uint8))


def checker_ortho(pixel: float = 0.25, valid: np.ndarray | None = None) -> Orthophoto:
    """A random RGB image over the square, ``pixel`` metres per pixel, north up."""
    n = int(40 / pixel)
    image = np.random.default_rng(0).integers(0, 256, (n, n, 3), dtype=np.uint8)
    affine = np.array([[pixel, 0.0, pixel / 2], [0.0, -pixel, 40 - pixel / 2]])
    return Orthophoto(image, affine, "checker", valid=valid)


def nadir_camera(x=15.0, y=20.0, height=30.0, size=96) -> Camera:
    eye = np.array([x, y, height])
    return Camera(intrinsics_from_fov(size, size, 50.0), look_at(eye, eye - [0, 0, 1], up=(0, 1, 0)), size, size)


def ground_hits(cam: Camera) -> tuple[np.ndarray, np.ndarray]:
    """The z = 0 plane's hit points of ``cam``'s rays, by hand (no ray caster)."""
    origins, dirs = cam.pixel_rays()
    t = -origins[..., 2] / dirs[..., 2]
    return origins + dirs * t[..., None], t


def test_measured_shading_shows_the_vertex_colour_unchanged():
    mesh = plane_and_wall()
    frame = MeshRaycaster(mesh).render(nadir_camera(), shading=Shading.measured())
    hits, _ = ground_hits(nadir_camera())
    ground = (hits[..., 0] < 29.5) & (hits[..., 0] > 0.5) & (hits[..., 1] > 0.5) & (hits[..., 1] < 39.5)
    assert ground.sum() > 1000
    assert (frame.rgb[ground] == [90, 140, 60]).all()
    sun = MeshRaycaster(mesh).render(nadir_camera())  # the sun model darkens flat ground (elevation 50 deg)
    assert sun.rgb[ground].mean() < 0.9 * frame.rgb[ground].mean()


def test_drape_matches_the_orthophoto_sampled_at_the_hit_points():
    """Every ground pixel of a nadir render equals the orthophoto at the pixel's ray-plane hit,
    computed independently of the ray caster."""
    mesh, ortho, cam = plane_and_wall(), checker_ortho(), nadir_camera()
    frame = MeshRaycaster(mesh).render(cam, shading=Shading.measured(), drape=orthophoto_drape(ortho))
    hits, _ = ground_hits(cam)
    ground = (hits[..., 0] < 29.5) & (hits[..., 0] > 0.5) & (hits[..., 1] > 0.5) & (hits[..., 1] < 39.5)
    expected = ortho.sample(hits[ground][:, :2])
    np.testing.assert_allclose(frame.rgb[ground].astype(np.float64), expected, atol=1.0)
    assert frame.rgb[ground].std() > 40  # the image's detail, not one colour


def test_walls_and_nodata_keep_the_mesh_colour():
    mesh = plane_and_wall()
    valid = np.ones((160, 160), bool)
    valid[:, :40] = False  # x < 10 m holds no image
    ortho = checker_ortho(valid=valid)
    drape = orthophoto_drape(ortho, min_normal_z=0.5)
    # an oblique camera looking east at the wall's face
    eye = np.array([10.0, 20.0, 6.0])
    cam = Camera(intrinsics_from_fov(64, 64, 40.0), look_at(eye, np.array([30.0, 20.0, 5.0])), 64, 64)
    frame = MeshRaycaster(mesh).render(cam, shading=Shading.measured(), drape=drape)
    wall = np.abs(frame.normal[..., 0]) > 0.99
    assert wall.sum() > 500 and (frame.rgb[wall] == [90, 140, 60]).all()
    # nadir over the nodata strip: its ground keeps the vertex colour, the rest takes the image
    frame = MeshRaycaster(mesh).render(nadir_camera(x=10.0), shading=Shading.measured(), drape=drape)
    hits, _ = ground_hits(nadir_camera(x=10.0))
    inside = (hits[..., 1] > 1) & (hits[..., 1] < 39) & (hits[..., 0] > 0.5)
    assert (frame.rgb[inside & (hits[..., 0] < 9.5)] == [90, 140, 60]).all()
    imaged = inside & (hits[..., 0] > 10.5) & (hits[..., 0] < 29.5)
    assert (frame.rgb[imaged] != [90, 140, 60]).any(axis=-1).mean() > 0.9


def lidar_scene(with_ortho: bool) -> Scene:
    """Points on the ground square, coloured, as an import would give them."""
    g = np.stack(np.meshgrid(np.arange(0.25, 40, 0.5), np.arange(0.25, 40, 0.5)), -1).reshape(-1, 2)
    xyz = np.concatenate([g, np.zeros((len(g), 1))], axis=1)
    pts = Points(xyz, np.tile(np.array([90, 140, 60], np.uint8), (len(g), 1)), np.full(len(g), 2, np.uint8))
    meta = {"source": "las"}
    if with_ortho:
        return ImportedScene("survey", meta, None, pts, [], orthophoto=checker_ortho())
    return Scene("survey", meta, None, pts, [])


def meshing_params(**render):
    return {"dsm": {"cell_size": 1.0}, "quality": {"enabled": False},
            "render_frames": {"count": 3, "width": 48, "height": 48, **render}}  # fmt: skip


def test_meshing_stage_drapes_and_keeps_the_orthophoto(tmp_path):
    from earthcrafter.pipelines.meshing.nodes import mesh_scenes

    raw = SceneFolderDataset(str(tmp_path / "raw"))
    raw.save({"survey": lidar_scene(True)})
    loaded = raw.load()["survey"]()
    assert isinstance(loaded, ImportedScene) and loaded.orthophoto.width == 160

    meshed = SceneFolderDataset(str(tmp_path / "meshes"))
    meshed.save(mesh_scenes(raw.load(), meshing_params()))
    scene = read_imported_scene(tmp_path / "meshes" / "survey")
    report = scene.metadata["meshing"]
    assert report["rendered_frames"] == 3 and report["frame_shading"] == "measured" and report["orthophoto_drape"]
    # the orthophoto travelled with the scene, and its metadata names a file that is there
    np.testing.assert_array_equal(scene.orthophoto.image, loaded.orthophoto.image)
    # the frames show the image's detail, not the points' single colour
    seen = np.concatenate([f.rgb[np.isfinite(f.depth)] for f in scene.frames])
    assert (seen != [90, 140, 60]).any(axis=1).mean() > 0.8

    # switched off: the points' colour, unshaded
    meshed.save(mesh_scenes(raw.load(), meshing_params(orthophoto_drape=False)))
    scene = read_imported_scene(tmp_path / "meshes" / "survey")
    assert not scene.metadata["meshing"]["orthophoto_drape"]
    seen = np.concatenate([f.rgb[np.isfinite(f.depth)] for f in scene.frames])
    assert np.abs(seen.astype(int) - [90, 140, 60]).max() <= 1


@pytest.mark.parametrize("shading, darker", [("sun", True), ("auto", False)])
def test_meshing_stage_shading_setting(tmp_path, shading, darker):
    from earthcrafter.pipelines.meshing.nodes import mesh_scenes

    out = mesh_scenes({"survey": lambda: lidar_scene(False)}, meshing_params(shading=shading))["survey"]()
    assert out.metadata["meshing"]["frame_shading"] == ("sun" if darker else "measured")
    seen = np.concatenate([f.rgb[np.isfinite(f.depth)] for f in out.frames]).astype(float)
    assert (seen.mean(0) < 0.9 * np.array([90, 140, 60])).all() == darker


def test_metadata_never_names_an_orthophoto_the_folder_lacks(tmp_path):
    """A later stage's scene copies the imported scene's metadata; written without the image,
    it must not claim one."""
    scene = lidar_scene(True)
    write_imported_scene(tmp_path, scene)
    meta = read_metadata(tmp_path / "survey")
    assert meta["orthophoto"]["file"] == "orthophoto.png"
    plain = Scene("survey", meta, None, scene.points, [])
    write_imported_scene(tmp_path / "later", plain)
    assert "orthophoto" not in json.loads((tmp_path / "later" / "survey" / "metadata.json").read_text())
    assert not isinstance(read_imported_scene(tmp_path / "later" / "survey"), ImportedScene)


def test_imported_scene_figure_script_draws_points_and_frames(tmp_path):
    """scripts/imported_scene_figure.py (docs/data_import.md's Autzen figure) reads a raw imported
    scene and its meshed scene and writes the figure; a scene without points is refused by name."""
    import subprocess
    import sys
    from pathlib import Path

    from PIL import Image

    from earthcrafter.io.scene import write_scene

    rng = np.random.default_rng(0)
    xyz = np.c_[rng.uniform(0, 40, (500, 2)), rng.uniform(0, 10, 500)]
    points = Points(xyz, rng.integers(0, 256, (500, 3), dtype=np.uint8), np.zeros(500, np.uint8))
    raw = write_scene(tmp_path / "raw", Scene("site", {"source": "lidar"}, points=points))
    mesh = plane_and_wall()
    frames = [MeshRaycaster(mesh).render(nadir_camera(x=x), f"{i:03d}") for i, x in enumerate((10.0, 20.0))]
    meshed = write_scene(tmp_path / "meshed", Scene("site", {}, mesh=mesh, frames=frames))
    script = Path(__file__).resolve().parents[2] / "scripts" / "imported_scene_figure.py"
    out = tmp_path / "fig.png"
    run = subprocess.run([sys.executable, str(script), str(raw), str(meshed), "--out", str(out), "--frames", "2"],
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert Image.open(out).size[0] > 600
    bad = subprocess.run([sys.executable, str(script), str(meshed), str(meshed), "--out", str(out)],
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode != 0 and "no points" in bad.stderr
