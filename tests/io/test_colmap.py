"""COLMAP models -> posed-frames folders: a ray-cast scene written as COLMAP would write it (TEXT and
BINARY models, dense depth maps) by small writers here that follow COLMAP's format description, converted
and imported, must give back the cameras and surfaces it was made from."""

from __future__ import annotations

import json
import logging
import struct

import numpy as np
import pytest
from PIL import Image

from earthcrafter.commands import main
from earthcrafter.geometry.cameras import Camera, look_at
from earthcrafter.geometry.raycast import MeshRaycaster, Shading
from earthcrafter.io.colmap import (
    colmap_to_frames,
    qvec_to_rotation,
    read_colmap_array,
    read_depth_map,
    world_to_camera,
)
from earthcrafter.io.frames_import import import_frames
from earthcrafter.io.import_common import DataImportError
from earthcrafter.io.scene import Mesh

W, H = 40, 30  # not square: a transposed depth map or swapped width/height cannot pass
SCALE = 2.0  # metres per COLMAP unit: the model is "aligned" at half size ...
ORIGIN = np.array([1000.0, -50.0, 20.0])  # ... and offset (COLMAP units)
MODEL_IDS = {"SIMPLE_PINHOLE": 0, "PINHOLE": 1, "SIMPLE_RADIAL": 2, "RADIAL": 3, "OPENCV": 4}
# COLMAP cameras: id -> (model, params); camera 2 is shared by two images
CAMERAS = {1: ("PINHOLE", [30.0, 33.0, 19.3, 15.8]), 2: ("SIMPLE_PINHOLE", [28.0, 20.0, 15.0])}
# images: id -> (name, camera id, eye, target); names with folders and a space, ids not 1..n
VIEWS = {
    3: ("row1/img_0001.png", 1, (25.0, 25.0, 40.0), (25.0, 25.1, 0.0)),
    7: ("row1/img_0002.png", 2, (25.0, -5.0, 25.0), (25.0, 25.0, 4.0)),
    8: ("row2/img 0003.png", 2, (55.0, 25.0, 20.0), (25.0, 25.0, 4.0)),
    12: ("img_0004.png", 1, (-10.0, 25.0, 6.0), (50.0, 25.0, 6.0)),  # looks at the horizon: sky has no depth
}
FRAME_NAMES = {3: "row1_img_0001", 7: "row1_img_0002", 8: "row2_img_0003", 12: "img_0004"}

# --------------------------------------------------------------------------- the scene


def scene_mesh() -> Mesh:
    """A 60 x 60 m ground square at z = 0 and a 10 x 10 x 8 m box standing on it (top and sides)."""
    ground = [[0, 0, 0], [60, 0, 0], [60, 60, 0], [0, 60, 0]]
    # box corner index: 4 * (z > 0) + 2 * (y > 20) + (x > 20)
    box = [[x, y, z] for z in (0, 8) for y in (20, 30) for x in (20, 30)]
    quads = [[4, 5, 7, 6], [0, 1, 5, 4], [2, 3, 7, 6], [0, 2, 6, 4], [1, 3, 7, 5]]  # top, y=20, y=30, x=20, x=30
    faces = [[0, 1, 2], [0, 2, 3]] + [[4 + q[0], 4 + q[i], 4 + q[i + 1]] for q in quads for i in (1, 2)]
    v = np.array(ground + box, dtype=np.float64)
    colours = np.random.default_rng(1).integers(30, 250, (len(v), 3)).astype(np.uint8)
    return Mesh(v, np.array(faces), colours, np.zeros(len(faces), np.uint8))


def scene_surface_distance(points: np.ndarray) -> np.ndarray:
    """Distance of each point to the scene's surfaces, from the rectangles that make them (no ray caster)."""
    rects = [((0, 0, 0), (60, 60, 0)), ((20, 20, 8), (30, 30, 8)),
             ((20, 20, 0), (30, 20, 8)), ((20, 30, 0), (30, 30, 8)),
             ((20, 20, 0), (20, 30, 8)), ((30, 20, 0), (30, 30, 8))]  # fmt: skip
    dists = [np.linalg.norm(points - np.clip(points, lo, hi), axis=1) for lo, hi in rects]
    return np.min(dists, axis=0)


def intrinsics(model: str, params: list[float]) -> np.ndarray:
    fx, fy, cx, cy = params if model == "PINHOLE" else (params[0], params[0], params[1], params[2])
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])


def original_cameras() -> dict[int, Camera]:
    """The metric cameras the COLMAP model is made from (earthcrafter's convention)."""
    out = {}
    for image_id, (_, camera_id, eye, target) in VIEWS.items():
        model, params = CAMERAS[camera_id]
        out[image_id] = Camera(intrinsics(model, params), look_at(np.array(eye), np.array(target)), W, H)
    return out


def colmap_pose(camera: Camera) -> np.ndarray:
    """World-to-camera of the model's frame, where colmap_world = metric_world / SCALE + ORIGIN.

    Camera space shrinks with the world: x_cam / SCALE = R (x_colmap - ORIGIN) + t / SCALE.
    """
    R, t = camera.world_to_camera[:3, :3], camera.world_to_camera[:3, 3]
    E = np.eye(4)
    E[:3, :3], E[:3, 3] = R, t / SCALE - R @ ORIGIN
    return E


def quaternion(R: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) of a rotation matrix (Shepperd: divide by the largest component)."""
    tr = np.trace(R)
    if tr > 0:
        s = 2 * np.sqrt(1 + tr)
        q = [s / 4, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s]
    elif R[0, 0] > R[1, 1] and R[0, 0] > R[2, 2]:
        s = 2 * np.sqrt(1 + R[0, 0] - R[1, 1] - R[2, 2])
        q = [(R[2, 1] - R[1, 2]) / s, s / 4, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s]
    elif R[1, 1] > R[2, 2]:
        s = 2 * np.sqrt(1 + R[1, 1] - R[0, 0] - R[2, 2])
        q = [(R[0, 2] - R[2, 0]) / s, (R[0, 1] + R[1, 0]) / s, s / 4, (R[1, 2] + R[2, 1]) / s]
    else:
        s = 2 * np.sqrt(1 + R[2, 2] - R[0, 0] - R[1, 1])
        q = [(R[1, 0] - R[0, 1]) / s, (R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, s / 4]
    q = np.array(q)
    return q if q[0] >= 0 else -q


# --------------------------------------------------------------------------- COLMAP writers (format spec)


def image_entries(cameras: dict[int, Camera]) -> list[tuple]:
    """(image id, qvec, tvec, camera id, name, points2D) per image; some images observe fake points."""
    entries = []
    for image_id, (name, camera_id, _, _) in VIEWS.items():
        E = colmap_pose(cameras[image_id])
        points = [(1.5 * k, 2.25 * k, -1 if k % 2 else 100 + k) for k in range(image_id % 4)]
        entries.append((image_id, quaternion(E[:3, :3]), E[:3, 3], camera_id, name, points))
    return entries


def write_text_model(folder, cameras, models=None):
    """cameras.txt / images.txt as COLMAP writes them: '#' comments, two lines per image."""
    folder.mkdir(parents=True, exist_ok=True)
    models = models or {}
    lines = ["# Camera list with one line of data per camera:", "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]"]
    for camera_id, (model, params) in CAMERAS.items():
        model, params = models.get(camera_id, (model, params))
        lines.append(" ".join([str(camera_id), model, str(W), str(H), *map(repr, params)]))
    (folder / "cameras.txt").write_text("\n".join(lines) + "\n")
    lines = ["# Image list with two lines of data per image:",
             "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME", "#   POINTS2D[] as (X, Y, POINT3D_ID)"]
    for image_id, q, t, camera_id, name, points in image_entries(cameras):
        lines.append(" ".join([str(image_id), *map(repr, map(float, [*q, *t])), str(camera_id), name]))
        lines.append(" ".join(f"{x!r} {y!r} {pid}" for x, y, pid in points))
    (folder / "images.txt").write_text("\n".join(lines) + "\n")


def write_binary_model(folder, cameras, models=None):
    """cameras.bin / images.bin: little-endian; uint64 counts; int32 ids; uint64 sizes; float64 values."""
    folder.mkdir(parents=True, exist_ok=True)
    models = models or {}
    data = struct.pack("<Q", len(CAMERAS))
    for camera_id, (model, params) in CAMERAS.items():
        model, params = models.get(camera_id, (model, params))
        data += struct.pack("<iiQQ", camera_id, MODEL_IDS[model], W, H) + struct.pack(f"<{len(params)}d", *params)
    (folder / "cameras.bin").write_bytes(data)
    entries = image_entries(cameras)
    data = struct.pack("<Q", len(entries))
    for image_id, q, t, camera_id, name, points in entries:
        data += struct.pack("<i", image_id) + struct.pack("<4d", *q) + struct.pack("<3d", *t)
        data += struct.pack("<i", camera_id) + name.encode("utf-8") + b"\x00" + struct.pack("<Q", len(points))
        data += b"".join(struct.pack("<ddq", x, y, pid) for x, y, pid in points)
    (folder / "images.bin").write_bytes(data)


def write_colmap_array(path, array: np.ndarray) -> None:
    """COLMAP's dense map file: text 'width&height&channels&', then float32 little-endian with the
    element (row, col, channel) at index channel * width * height + row * width + col (mvs::Mat)."""
    array = array[..., None] if array.ndim == 2 else array
    height, width, channels = array.shape
    flat = np.zeros(width * height * channels, "<f4")
    rows, cols, chans = np.meshgrid(np.arange(height), np.arange(width), np.arange(channels), indexing="ij")
    flat[chans * width * height + rows * width + cols] = array[rows, cols, chans]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(f"{width}&{height}&{channels}&".encode("ascii") + flat.tobytes())


def write_workspace(root, fmt="binary", models=None, depth=True):
    """A COLMAP dense workspace of the scene: sparse model, images, depth maps; returns the renders."""
    cameras, caster = original_cameras(), MeshRaycaster(scene_mesh())
    (write_binary_model if fmt == "binary" else write_text_model)(root / "sparse", cameras, models)
    renders = {}
    for image_id, (name, *_) in VIEWS.items():
        frame = caster.render(cameras[image_id], shading=Shading.measured())
        (root / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(frame.rgb).save(root / "images" / name)
        if depth:  # COLMAP units, 0 = no depth
            colmap_depth = np.where(np.isfinite(frame.depth), frame.depth / SCALE, 0).astype(np.float32)
            write_colmap_array(root / "stereo" / "depth_maps" / f"{name}.geometric.bin", colmap_depth)
        renders[image_id] = frame
    return renders


def convert(root, out, **kwargs):
    kwargs = {"depth_dir": root / "stereo" / "depth_maps", "units": SCALE, "origin": ORIGIN.tolist(),
              "crs": "EPSG:32610", **kwargs}  # fmt: skip
    return colmap_to_frames(root / "sparse", root / "images", out, **kwargs)


# --------------------------------------------------------------------------- tests


def test_qvec_of_known_rotations():
    c = np.sqrt(0.5)
    np.testing.assert_allclose(qvec_to_rotation([c, 0, 0, c]), [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-15)
    np.testing.assert_allclose(qvec_to_rotation([0, 1, 0, 0]), np.diag([1.0, -1, -1]), atol=1e-15)
    np.testing.assert_allclose(qvec_to_rotation([2 * c, 0, 2 * c, 0]), [[0, 0, 1], [0, 1, 0], [-1, 0, 0]], atol=1e-15)
    # 120 degrees about (1, 1, 1): x -> y -> z -> x
    np.testing.assert_allclose(qvec_to_rotation([0.5, 0.5, 0.5, 0.5]), [[0, 0, 1], [1, 0, 0], [0, 1, 0]], atol=1e-15)
    E = world_to_camera([c, 0, 0, c], [1.0, 2.0, 3.0])
    np.testing.assert_allclose(E @ [1.0, 0, 0, 1], [1.0, 3.0, 3.0, 1.0], atol=1e-15)
    # the test's own quaternion writer agrees with the converter on the scene's cameras
    for cam in original_cameras().values():
        R = cam.world_to_camera[:3, :3]
        np.testing.assert_allclose(qvec_to_rotation(quaternion(R)), R, atol=1e-12)
    with pytest.raises(ValueError, match="quaternion"):
        qvec_to_rotation([0, 0, 0, 0])


def test_ray_caster_distance_matches_the_scene_rectangles():
    """MeshRaycaster.distance (open3d) against the distance to the rectangles the scene is made of."""
    points = np.random.default_rng(3).uniform([-10, -10, -5], [70, 70, 20], (2000, 3))
    np.testing.assert_allclose(MeshRaycaster(scene_mesh()).distance(points), scene_surface_distance(points),
                               atol=1e-4)
    assert MeshRaycaster(scene_mesh()).distance(points.reshape(40, 50, 3)).shape == (40, 50)


def test_depth_map_reader_follows_colmaps_layout(tmp_path):
    values = np.arange(W * H, dtype=np.float32).reshape(H, W) + 0.5
    write_colmap_array(tmp_path / "d.bin", values)
    np.testing.assert_array_equal(read_depth_map(tmp_path / "d.bin"), values)
    # the header is text: a 40 x 30 map starts "40&30&1&"
    assert (tmp_path / "d.bin").read_bytes()[:8] == b"40&30&1&"
    normals = np.random.default_rng(0).random((H, W, 3)).astype(np.float32)
    write_colmap_array(tmp_path / "n.bin", normals)
    np.testing.assert_array_equal(read_colmap_array(tmp_path / "n.bin"), normals)
    with pytest.raises(DataImportError, match="n.bin: has 3 channels"):
        read_depth_map(tmp_path / "n.bin")
    (tmp_path / "bad.bin").write_bytes(b"40&30&1&" + b"\x00" * 12)
    with pytest.raises(DataImportError, match=r"bad\.bin.*4800 bytes"):
        read_depth_map(tmp_path / "bad.bin")


@pytest.mark.parametrize("fmt", ["text", "binary"])
def test_this_files_writers_write_what_colmap_reads(tmp_path, fmt):
    """The writers above follow COLMAP's format as COLMAP itself reads it (pycolmap, when installed):
    the same cameras, poses and names, and the same depth values, pixel for pixel."""
    pycolmap = pytest.importorskip("pycolmap")
    write_workspace(tmp_path, fmt)
    # COLMAP reads a model only with its points3D (which the converter ignores): an empty one
    if fmt == "text":
        (tmp_path / "sparse" / "points3D.txt").write_text("# 3D point list with one line of data per point:\n")
    else:
        (tmp_path / "sparse" / "points3D.bin").write_bytes(struct.pack("<Q", 0))
    model = pycolmap.Reconstruction()
    getattr(model, f"read_{fmt}")(tmp_path / "sparse")
    want = original_cameras()
    # COLMAP's text reader ends a name at its first space ("row2/img 0003.png" -> "row2/img"); the
    # converter reads the rest of the line, the name of the file COLMAP's writer was given
    names = {i: v[0] if fmt == "binary" else v[0].split(" ")[0] for i, v in VIEWS.items()}
    assert {image.image_id: image.name for image in model.images.values()} == names
    for image in model.images.values():
        camera = model.cameras[image.camera_id]
        assert (camera.model.name, camera.width, camera.height) == (CAMERAS[image.camera_id][0], W, H)
        np.testing.assert_allclose(camera.calibration_matrix(), want[image.image_id].K, atol=1e-12)
        np.testing.assert_allclose(image.cam_from_world().matrix(), colmap_pose(want[image.image_id])[:3], atol=1e-9)
    for name, *_ in VIEWS.values():
        path = tmp_path / "stereo" / "depth_maps" / f"{name}.geometric.bin"
        depth = pycolmap.DepthMap()
        depth.read(path)
        np.testing.assert_array_equal(depth.to_array(), read_depth_map(path))


@pytest.mark.parametrize("fmt", ["text", "binary"])
def test_model_imports_as_the_cameras_and_surfaces_it_was_made_from(tmp_path, fmt):
    renders = write_workspace(tmp_path / "dense", fmt)
    summary = convert(tmp_path / "dense", tmp_path / "frames")
    assert summary["model_format"] == fmt and summary["frames"] == 4 and summary["cameras"] == 2
    assert summary["with_depth"] == 4 and summary["skipped"] == {}
    assert (tmp_path / "frames" / "images" / "row1" / "img_0001.png").is_symlink()

    scene = import_frames(tmp_path / "frames")
    want = original_cameras()
    by_name = {FRAME_NAMES[i]: i for i in VIEWS}
    assert sorted(fr.name for fr in scene.frames) == sorted(by_name)
    for fr in scene.frames:
        image_id = by_name[fr.name]
        np.testing.assert_allclose(fr.camera.K, want[image_id].K, rtol=0, atol=1e-9)
        np.testing.assert_allclose(fr.camera.world_to_camera, want[image_id].world_to_camera, rtol=0, atol=1e-9)
        assert (fr.camera.width, fr.camera.height) == (W, H)
        np.testing.assert_array_equal(fr.rgb, renders[image_id].rgb)
        # depth: no depth stays no depth; the rest lifts onto the scene's surfaces
        truth = renders[image_id].depth
        np.testing.assert_array_equal(np.isfinite(fr.depth), np.isfinite(truth))
        np.testing.assert_allclose(fr.depth[np.isfinite(truth)], truth[np.isfinite(truth)], rtol=1e-6)
        points = fr.camera.unproject_depth(fr.depth)[np.isfinite(fr.depth)]
        assert len(points) > 300
        assert scene_surface_distance(points).max() < 2e-3
    sky = ~np.isfinite(next(fr.depth for fr in scene.frames if fr.name == "img_0004"))
    assert 0.2 < sky.mean() < 0.8  # the horizon view's no-depth pixels came through
    box_top = [np.abs(fr.camera.unproject_depth(fr.depth)[..., 2] - 8) < 1e-3 for fr in scene.frames]
    assert sum(int(b.sum()) for b in box_top) > 100  # the box is seen, not only the ground
    assert scene.metadata["crs"] == "EPSG:32610" and scene.metadata["size_source"] == "depth"
    np.testing.assert_allclose(scene.metadata["origin"]["source_units"], ORIGIN)


def test_text_and_binary_models_give_the_same_cameras_json(tmp_path):
    for fmt in ("text", "binary"):
        write_workspace(tmp_path / fmt, fmt, depth=False)
        summary = convert(tmp_path / fmt, tmp_path / f"out_{fmt}", depth_dir=None)
        assert summary["model_format"] == fmt
    text, binary = ((tmp_path / f"out_{fmt}" / "cameras.json").read_text() for fmt in ("text", "binary"))
    assert text == binary
    spec = json.loads(text)
    assert spec["convention"] == "opencv" and spec["pixel_centers"] == "half" and spec["units"] == SCALE
    assert [r["name"] for r in spec["frames"]] == [FRAME_NAMES[i] for i in sorted(VIEWS)]


@pytest.mark.parametrize("fmt, model, params", [("text", "SIMPLE_RADIAL", [28.0, 20.0, 15.0, 0.01]),
                                                ("binary", "OPENCV", [28.0, 28.0, 20.0, 15.0, 0.01, 0, 0, 0]),
                                                ("binary", "RADIAL", [28.0, 20.0, 15.0, 0.01, 0.002])])  # fmt: skip
def test_distorted_cameras_are_refused_naming_the_model_and_the_fix(tmp_path, fmt, model, params):
    write_workspace(tmp_path / "dense", fmt, models={2: (model, params)}, depth=False)
    with pytest.raises(DataImportError, match=rf"cameras\.(txt|bin).*camera 2 uses model {model}.*image_undistorter"):
        convert(tmp_path / "dense", tmp_path / "frames", depth_dir=None)
    assert not (tmp_path / "frames").exists()


def test_missing_images_are_skipped_counted_and_named(tmp_path, caplog):
    write_workspace(tmp_path / "dense")
    (tmp_path / "dense" / "images" / "row2" / "img 0003.png").unlink()
    with caplog.at_level(logging.WARNING, logger="earthcrafter.io.colmap"):
        summary = convert(tmp_path / "dense", tmp_path / "frames")
    assert summary["frames"] == 3 and summary["skipped"] == {"missing_image": ["row2/img 0003.png"]}
    assert "row2/img 0003.png" in caplog.text and "1 of 4 images" in caplog.text
    assert len(import_frames(tmp_path / "frames").frames) == 3

    for path in (tmp_path / "dense" / "images").rglob("*.png"):
        path.unlink()
    with pytest.raises(DataImportError, match=r"images: none of the model's 4 image files"):
        convert(tmp_path / "dense", tmp_path / "frames2")
    assert not (tmp_path / "frames2").exists()


def test_wrong_inputs_fail_naming_the_file(tmp_path):
    write_workspace(tmp_path / "dense", "binary")
    data = (tmp_path / "dense" / "sparse" / "images.bin").read_bytes()
    (tmp_path / "dense" / "sparse" / "images.bin").write_bytes(data[:-30])
    with pytest.raises(DataImportError, match=r"images\.bin: file ends early"):
        convert(tmp_path / "dense", tmp_path / "frames")
    write_workspace(tmp_path / "dense", "binary")
    with pytest.raises(DataImportError, match=r"depth_maps: no depth map of any frame"):
        convert(tmp_path / "dense", tmp_path / "frames", depth_kind="photometric")
    with pytest.raises(ValueError, match="units"):
        convert(tmp_path / "dense", tmp_path / "frames", units="furlongs")
    write_colmap_array(tmp_path / "dense" / "stereo" / "depth_maps" / "img_0004.png.geometric.bin",
                       np.ones((H // 2, W // 2), np.float32))  # patch_match_stereo with max_image_size
    with pytest.raises(DataImportError, match=r"img_0004\.png\.geometric\.bin: depth map is 20x15"):
        convert(tmp_path / "dense", tmp_path / "frames")
    with pytest.raises(DataImportError, match="holds the images folder"):
        colmap_to_frames(tmp_path / "dense" / "sparse", tmp_path / "dense" / "images", tmp_path / "dense")


def test_copies_replace_an_earlier_output(tmp_path):
    write_workspace(tmp_path / "dense", depth=False)
    convert(tmp_path / "dense", tmp_path / "frames", depth_dir=None)
    (tmp_path / "dense" / "images" / "img_0004.png").unlink()
    summary = convert(tmp_path / "dense", tmp_path / "frames", depth_dir=None, link=False)
    assert summary["frames"] == 3
    image = tmp_path / "frames" / "images" / "row1" / "img_0001.png"
    assert image.is_file() and not image.is_symlink()
    assert not (tmp_path / "frames" / "images" / "img_0004.png").exists()


def test_semantic_maps_named_like_the_images_come_along(tmp_path):
    write_workspace(tmp_path / "dense", depth=False)
    labels = {3: np.random.default_rng(3).integers(0, 25, (H, W), dtype=np.uint8),
              8: np.random.default_rng(8).integers(0, 25, (H, W), dtype=np.uint8)}  # fmt: skip
    for image_id, label in labels.items():
        path = tmp_path / "labels" / VIEWS[image_id][0]  # same relative name, .png
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(label).save(path)
    summary = convert(tmp_path / "dense", tmp_path / "frames", depth_dir=None, semantic_dir=tmp_path / "labels")
    assert summary["with_semantic"] == 2
    scene = import_frames(tmp_path / "frames")
    for fr in scene.frames:
        image_id = next(i for i, n in FRAME_NAMES.items() if n == fr.name)
        if image_id in labels:
            np.testing.assert_array_equal(fr.semantic, labels[image_id])
        else:
            assert fr.semantic is None
    assert scene.metadata["frames_without_semantic"] == 2


def test_cli_subcommand(tmp_path, capsys):
    write_workspace(tmp_path / "dense", "text")
    dense = tmp_path / "dense"
    argv = ["colmap-to-frames", str(dense / "sparse"), str(dense / "images"), str(tmp_path / "frames"),
            "--depth-dir", str(dense / "stereo" / "depth_maps"), "--units", str(SCALE),
            "--origin", *map(str, ORIGIN), "--crs", "EPSG:32610", "--copy"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[: out.rindex("}") + 1])
    assert summary["frames"] == 4 and summary["with_depth"] == 4 and summary["units"] == SCALE
    scene = import_frames(tmp_path / "frames")
    want = original_cameras()
    for fr in scene.frames:
        image_id = next(i for i, n in FRAME_NAMES.items() if n == fr.name)
        np.testing.assert_allclose(fr.camera.world_to_camera, want[image_id].world_to_camera, rtol=0, atol=1e-9)
    # a distorted model: exit code 2 and the reason on stderr
    write_text_model(dense / "sparse", original_cameras(), models={1: ("OPENCV", [30, 33, 19, 15, 0.1, 0, 0, 0])})
    assert main(argv[:4]) == 2
    assert "OPENCV" in capsys.readouterr().err


def test_frame_names_stay_unique_when_a_renamed_duplicate_meets_an_existing_name():
    """a.jpg and a.png become a_<id>; a_1.jpg already holds a_1, so image 1 takes the next free name."""
    from earthcrafter.io.colmap import ColmapImage, _frame_names

    images = [ColmapImage(i, (1.0, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0), 1, name)
              for i, name in ((1, "a.jpg"), (2, "a.png"), (3, "a_1.jpg"), (4, "sub/b.jpg"))]  # fmt: skip
    names = _frame_names(images)
    assert len(set(names.values())) == 4
    assert names[3] == "a_1" and names[2] == "a_2" and names[1] == "a_1_1" and names[4] == "sub_b"
