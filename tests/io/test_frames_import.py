"""Posed-frame import: the JSON format, camera conventions, depth and semantic maps, bad input."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from PIL import Image

from earthcrafter.geometry.cameras import Camera, intrinsics_from_fov, look_at
from earthcrafter.io.frames_import import check_frames, import_frames
from earthcrafter.io.import_common import INTERNATIONAL_FOOT_M, DataImportError
from earthcrafter.io.scene import read_scene, write_scene

W, H = 32, 24
VIEWS = {"north": ((10.0, -20.0, 30.0), (10.0, 5.0, 0.0)), "east": ((40.0, 8.0, 25.0), (12.0, 6.0, 0.0))}


def ground_depth(camera: Camera) -> np.ndarray:
    """Camera-z depth of the plane z = 0, by ray-plane intersection."""
    origins, dirs = camera.pixel_rays()
    t = -origins[..., 2] / dirs[..., 2]
    return (t * (dirs @ camera.forward)).astype(np.float32)


def cameras() -> dict[str, Camera]:
    K = intrinsics_from_fov(W, H, 60.0)
    return {name: Camera(K, look_at(np.array(eye), np.array(target)), W, H) for name, (eye, target) in VIEWS.items()}


def opengl_camera_to_world(eye, target) -> np.ndarray:
    """OpenGL camera (x right, y up, looking down -z) built from scratch, camera-to-world."""
    eye, target = np.asarray(eye, float), np.asarray(target, float)
    forward = (target - eye) / np.linalg.norm(target - eye)
    right = np.cross(forward, [0, 0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, up, -forward, eye
    return c2w


def write_folder(folder, records, top=None, depth=True, semantic=True, seed=0, keep_frame=True):
    """Write images for each record (name, camera-from-metres) and cameras.json.

    ``keep_frame``: give origin [0, 0, 0], so the imported cameras are the ones written (without an
    origin the local frame starts at the data's bounding-box minimum, tested on its own)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "rgb").mkdir(exist_ok=True)
    truth = {}
    for rec in records:
        name = rec["name"]
        rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(folder / "rgb" / f"{name}.png")
        rec["rgb"] = f"rgb/{name}.png"
        truth[name] = {"rgb": rgb}
        if depth:
            d = rec.pop("_depth")
            np.save(folder / f"{name}_depth.npy", d)
            rec["depth"] = f"{name}_depth.npy"
        else:
            rec.pop("_depth", None)
        if semantic:
            sem = rng.integers(0, 25, (H, W), dtype=np.uint8)
            Image.fromarray(sem).save(folder / f"{name}_sem.png")
            rec["semantic"] = f"{name}_sem.png"
            truth[name]["semantic"] = sem
    top = {"origin": [0.0, 0.0, 0.0], **(top or {})} if keep_frame else (top or {})
    (folder / "cameras.json").write_text(json.dumps({**top, "frames": records}))
    return truth


def opencv_records():
    return [{"name": n, "K": c.K.tolist(), "world_to_camera": c.world_to_camera.tolist(), "width": W, "height": H,
             "_depth": ground_depth(c)} for n, c in cameras().items()]


def test_opencv_world_to_camera_folder(tmp_path):
    truth = write_folder(tmp_path / "My Flight", opencv_records())
    scene = import_frames(tmp_path / "My Flight")
    assert scene.scene_id == "my_flight" and scene.metadata["source"] == "frames"
    want = cameras()
    for fr in scene.frames:
        np.testing.assert_allclose(fr.camera.world_to_camera, want[fr.name].world_to_camera, atol=1e-12)
        np.testing.assert_array_equal(fr.rgb, truth[fr.name]["rgb"])
        np.testing.assert_array_equal(fr.semantic, truth[fr.name]["semantic"])
        # depth unprojects onto the ground plane it was made from
        pts = fr.camera.unproject_depth(fr.depth)
        np.testing.assert_allclose(pts[..., 2], 0, atol=1e-4)
    counts = np.bincount(np.concatenate([t["semantic"].ravel() for t in truth.values()]), minlength=25)
    assert list(scene.metadata["class_histogram"].values()) == counts.tolist()
    assert scene.metadata["size_source"] == "depth" and scene.metadata["extent_m"][0] > 10
    # and through the scene writer
    back = read_scene(write_scene(tmp_path / "scenes", scene))
    for a, b in zip(back.frames, scene.frames):
        np.testing.assert_allclose(a.camera.world_to_camera, b.camera.world_to_camera)
        np.testing.assert_array_equal(a.rgb, b.rgb)


def test_opengl_camera_to_world_gives_the_same_cameras(tmp_path):
    records = [{"name": n, "K": cameras()[n].K.tolist(), "camera_to_world": opengl_camera_to_world(*VIEWS[n]).tolist(),
                "width": W, "height": H} for n in VIEWS]
    write_folder(tmp_path / "gl", records, top={"convention": "opengl"}, depth=False, semantic=False)
    scene = import_frames(tmp_path / "gl")
    want = cameras()
    for fr in scene.frames:
        np.testing.assert_allclose(fr.camera.world_to_camera, want[fr.name].world_to_camera, atol=1e-12)
        # the view target projects to the image centre
        uv, z = fr.camera.project(np.array([VIEWS[fr.name][1]]))
        np.testing.assert_allclose(uv[0], [W / 2, H / 2], atol=1e-9)
        assert z[0] > 0
    assert scene.metadata["frames_without_semantic"] == 2 and scene.metadata["size_source"] == "camera_centres"


def test_feet_y_up_and_origin_map_to_the_same_local_cameras(tmp_path):
    """The same scene stored in a y-up world, in feet, offset by an origin, imports identically."""
    f, origin = INTERNATIONAL_FOOT_M, np.array([1000.0, 50.0, -2000.0])
    R = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])  # y-up source -> z-up local
    records = []
    for name, cam in cameras().items():
        E = cam.world_to_camera
        src = np.eye(4)  # local = R f (p - origin)  =>  cam_src = (E_R R p - E_R R origin) + E_t / f
        src[:3, :3] = E[:3, :3] @ R
        src[:3, 3] = E[:3, 3] / f - E[:3, :3] @ R @ origin
        records.append({"name": name, "K": cam.K.tolist(), "world_to_camera": src.tolist(), "width": W, "height": H,
                        "_depth": ground_depth(cam) / f})
    write_folder(tmp_path / "ft", records, top={"units": "ft", "up_axis": "y", "origin": origin.tolist()}, semantic=False)
    scene = import_frames(tmp_path / "ft")
    want = cameras()
    for fr in scene.frames:
        np.testing.assert_allclose(fr.camera.world_to_camera, want[fr.name].world_to_camera, atol=1e-9)
        np.testing.assert_allclose(fr.depth, ground_depth(want[fr.name]), rtol=1e-6)
    # a source point and its local image project to the same pixel
    p_src = np.array([1010.0, 0.0, -2005.0])
    E_src, K = np.asarray(records[0]["world_to_camera"]), np.asarray(records[0]["K"])
    uvw = K @ (E_src[:3, :3] @ p_src + E_src[:3, 3])
    uv_local, _ = scene.frames[0].camera.project((R @ ((p_src - origin) * f))[None])
    np.testing.assert_allclose(uv_local[0], uvw[:2] / uvw[2], atol=1e-6)
    np.testing.assert_allclose(scene.metadata["origin"]["metres"], R @ (origin * f))


def test_ray_depth_and_integer_pixel_centres(tmp_path):
    cam = cameras()["north"]
    z = ground_depth(cam)
    _, dirs = cam.pixel_rays()
    ray = z / (dirs @ cam.forward)
    K_int = cam.K.copy()
    K_int[:2, 2] -= 0.5  # the same intrinsics with OpenCV-calibration pixel centres at integers
    rec = {"name": "north", "K": K_int.tolist(), "world_to_camera": cam.world_to_camera.tolist(), "width": W,
           "height": H, "_depth": ray.astype(np.float32), "depth_type": "ray", "pixel_centers": "integer"}
    write_folder(tmp_path / "r", [rec], semantic=False)
    fr = import_frames(tmp_path / "r").frames[0]
    np.testing.assert_allclose(fr.camera.K, cam.K)
    np.testing.assert_allclose(fr.depth, z, rtol=1e-5)


def test_integer_depth_png_with_scale(tmp_path):
    cam = cameras()["north"]
    mm = np.round(ground_depth(cam) * 1000).astype(np.uint16)
    mm[0, 0] = 0  # no hit
    rec = {"name": "north", "K": cam.K.tolist(), "world_to_camera": cam.world_to_camera.tolist(), "width": W,
           "height": H, "depth_scale": 0.001}
    write_folder(tmp_path / "p", [dict(rec, _depth=None)], depth=False, semantic=False)
    Image.fromarray(mm).save(tmp_path / "p" / "d.png")
    spec = json.loads((tmp_path / "p" / "cameras.json").read_text())
    spec["frames"][0]["depth"] = "d.png"
    (tmp_path / "p" / "cameras.json").write_text(json.dumps(spec))
    fr = import_frames(tmp_path / "p").frames[0]
    assert np.isinf(fr.depth[0, 0])
    np.testing.assert_allclose(fr.depth[1:], mm[1:] / 1000.0, rtol=1e-6)
    del spec["frames"][0]["depth_scale"]
    (tmp_path / "p" / "cameras.json").write_text(json.dumps(spec))
    with pytest.raises(DataImportError, match=r"frame #0 \('north'\): integer depth image d\.png needs 'depth_scale'"):
        import_frames(tmp_path / "p")


def _one_frame(tmp_path, **change):
    rec = opencv_records()[:1]
    rec[0].update(change)
    rec[0] = {k: v for k, v in rec[0].items() if v is not None}
    write_folder(tmp_path / "f", rec)
    return tmp_path / "f"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"K": None}, r"frame #0 \('north'\): missing field 'K'"),
        ({"camera_to_world": np.eye(4).tolist()},
         r"frame #0 \('north'\): give exactly one of 'world_to_camera' and 'camera_to_world'"),
        ({"world_to_camera": (2 * np.eye(4)).tolist()}, r"frame #0 \('north'\): 'world_to_camera' is not a rigid"),
        ({"world_to_camera": [[1, 0], [0, 1]]}, r"frame #0 \('north'\): 'world_to_camera' must be a finite 4x4"),
        ({"K": [[-5, 0, 1], [0, 5, 1], [0, 0, 1]]}, r"frame #0 \('north'\): 'K' must be pixel intrinsics"),
        ({"K": [[50, 15, 16], [0, 50, 12], [0, 0, 1]]}, r"frame #0 \('north'\): 'K' has skew s = K\[0\]\[1\] = 15\.0"),
        ({"width": W + 1}, r"north\.png: image is 32x24 \(WxH\), camera says 33x24"),
        ({"convention": "directx"}, r"frame #0 \('north'\): convention='directx'"),
        ({"name": "../escape"}, r"frame #0 \('../escape'\): frame name must match"),
        ({"dpeth": "x.npy"}, r"frame #0 \('north'\): unknown frame field\(s\) 'dpeth' \(did you mean 'depth'\?\)"),
        ({"depth_scale": "mm"}, r"frame #0 \('north'\): depth_scale='mm': expected a positive number"),
        ({"depth_scale": 0}, r"frame #0 \('north'\): depth_scale=0: expected a positive number"),
        ({"depth_scale": float("inf")}, r"frame #0 \('north'\): depth_scale=inf: expected a positive number"),
    ],
)
def test_bad_frame_records(tmp_path, change, message):
    """Each bad field is named with the frame (number and name) and the value, by the check as by the import."""
    folder = _one_frame(tmp_path, **change)
    with pytest.raises(DataImportError, match=message):
        import_frames(folder)
    if "width" not in change:  # the image size needs the image: the import's
        with pytest.raises(DataImportError, match=message):
            check_frames(folder)


def test_a_null_depth_scale_is_named_not_a_type_error(tmp_path):
    folder = _one_frame(tmp_path)
    spec = json.loads((folder / "cameras.json").read_text())
    spec["frames"][0]["depth_scale"] = None
    (folder / "cameras.json").write_text(json.dumps(spec))
    for run in (import_frames, check_frames):
        with pytest.raises(DataImportError, match=r"frame #0 \('north'\): depth_scale=None: expected a positive"):
            run(folder)


def test_misspelt_fields_are_refused_with_the_closest_name(tmp_path):
    """A typo would be ignored: "unit": "ft" imported as metres. Top-level fields are checked like frame fields."""
    for top, message in (({"unit": "ft"}, r"unknown top-level field\(s\) 'unit' \(did you mean 'units'\?\)"),
                         ({"depth_scale": 0.001},
                          r"unknown top-level field\(s\) 'depth_scale' \(a frame field: set it in each frame\)"),
                         ({"camera": 1}, r"unknown top-level field\(s\) 'camera'; the fields are \[")):
        write_folder(tmp_path / "f", opencv_records()[:1], top=top)
        for run in (import_frames, check_frames):
            with pytest.raises(DataImportError, match=r"cameras\.json: " + message):
                run(tmp_path / "f")


def test_depth_scale_is_refused_on_float_depth(tmp_path):
    """Float depth is read in the file's units; a depth_scale beside it (floats in millimetres?) is an error."""
    folder = _one_frame(tmp_path, depth_scale=0.001)
    with pytest.raises(DataImportError, match=r"frame #0 \('north'\): depth_scale=0\.001 is for integer depth images, "
                                              r"but north_depth\.npy holds float32 values"):
        import_frames(folder)


def test_bad_folders(tmp_path):
    with pytest.raises(DataImportError, match=r"nowhere: frames folder not found"):
        import_frames(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataImportError, match=r"cameras\.json: cameras file not found"):
        import_frames(tmp_path / "empty")
    (tmp_path / "empty" / "cameras.json").write_text("{not json")
    with pytest.raises(DataImportError, match=r"cameras\.json: invalid JSON"):
        import_frames(tmp_path / "empty")
    (tmp_path / "empty" / "cameras.json").write_text('{"frames": []}')
    with pytest.raises(DataImportError, match=r"cameras\.json: expected an object with a non-empty list 'frames'"):
        import_frames(tmp_path / "empty")


def test_missing_image_duplicate_names_unknown_classes(tmp_path):
    folder = _one_frame(tmp_path)
    (folder / "rgb" / "north.png").unlink()
    with pytest.raises(DataImportError, match=r"north\.png: image file not found"):
        import_frames(folder)

    recs = opencv_records()
    recs[1]["name"] = "north"
    write_folder(tmp_path / "dup", recs)
    with pytest.raises(DataImportError, match=r"cameras\.json: frame names repeat: \['north'\]"):
        import_frames(tmp_path / "dup")

    folder = _one_frame(tmp_path / "u")
    sem = np.zeros((H, W), np.uint8)
    sem[:2] = 200
    Image.fromarray(sem).save(folder / "north_sem.png")
    scene = import_frames(folder)
    assert scene.metadata["unknown_class_pixels"] == 2 * W and (scene.frames[0].semantic == 0).all()
    with pytest.raises(DataImportError, match=r"north_sem\.png: 64 pixels hold class values outside 0..24: \[200\]"):
        import_frames(folder, unknown_class="error")


# --------------------------------------------------------------------------- what the data shows

LOGGER = "earthcrafter.io.frames_import"


def _warnings(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


def gl_records():
    return [{"name": n, "K": cameras()[n].K.tolist(), "camera_to_world": opengl_camera_to_world(*VIEWS[n]).tolist(),
             "width": W, "height": H, "_depth": ground_depth(cameras()[n])} for n in VIEWS]


def test_a_forgotten_opengl_convention_is_warned_about(tmp_path, caplog):
    """OpenGL camera-to-world poses read as OpenCV turn each view 180 degrees: the ground they see lands
    above the cameras. Imported as given, with a warning naming the folder and the convention to try."""
    write_folder(tmp_path / "gl", gl_records(), top={"convention": "opengl"})
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        import_frames(tmp_path / "gl")
    assert _warnings(caplog) == ""
    write_folder(tmp_path / "forgot", gl_records())
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        scene = import_frames(tmp_path / "forgot")
    assert f"{tmp_path / 'forgot'}: the poses look wrong for the depth maps: in 2 of 2 frames over 75% of the " \
           "depth points lie above the camera" in _warnings(caplog)
    assert "defaults to convention 'opencv': try \"convention\": 'opengl'" in _warnings(caplog)
    points = scene.frames[0].camera.unproject_depth(scene.frames[0].depth)
    assert (points[..., 2] > scene.frames[0].camera.center[2]).all()  # kept as given


def test_neighbouring_frames_that_disagree_are_warned_about(tmp_path, caplog):
    """A pose 5 m too high puts its frame's ground 5 m up: where the frames overlap, the depths disagree."""
    recs = opencv_records()
    c2w = np.linalg.inv(np.asarray(recs[0]["world_to_camera"]))
    c2w[2, 3] += 5.0
    recs[0]["world_to_camera"] = np.linalg.inv(c2w).tolist()
    write_folder(tmp_path / "f", recs)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        import_frames(tmp_path / "f")
    assert "where neighbouring frames overlap, only 0% of one's depth points lie within 10%" in _warnings(caplog)
    assert "above the camera" not in _warnings(caplog)


def test_depth_that_meshing_cannot_use_is_counted_and_warned_about(tmp_path, caplog):
    """dropped lists every reason, zeros included; frames without valid depth and scenes the meshing stage
    cannot fuse (TSDF needs depth in every frame) are warned about, by the check where it can tell."""
    write_folder(tmp_path / "good", opencv_records())
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        good = import_frames(tmp_path / "good")
    assert good.metadata["dropped"] == {"depth_pixels_without_hit": 0, "frames_without_depth": 0,
                                        "frames_with_empty_depth": 0}
    assert _warnings(caplog) == ""

    recs = opencv_records()
    recs[0]["_depth"] = np.full((H, W), np.nan, np.float32)
    recs[1]["_depth"][:2] = 0.0
    write_folder(tmp_path / "empty", recs)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        scene = import_frames(tmp_path / "empty")
    assert scene.metadata["dropped"] == {"depth_pixels_without_hit": H * W + 2 * W, "frames_without_depth": 0,
                                         "frames_with_empty_depth": 1}
    assert "1 of 2 depth maps hold no valid depth (0 or non-finite everywhere): north" in _warnings(caplog)

    write_folder(tmp_path / "mixed", opencv_records())
    spec = json.loads((tmp_path / "mixed" / "cameras.json").read_text())
    del spec["frames"][1]["depth"]
    (tmp_path / "mixed" / "cameras.json").write_text(json.dumps(spec))
    for run in (check_frames, import_frames):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            run(tmp_path / "mixed")
        assert "1 of 2 frames have no depth map (east): TSDF fusion needs depth in every frame" in _warnings(caplog)
    assert import_frames(tmp_path / "mixed").metadata["dropped"]["frames_without_depth"] == 1

    write_folder(tmp_path / "none", opencv_records(), depth=False)
    for run in (check_frames, import_frames):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            run(tmp_path / "none")
        assert "no frame has a depth map: the meshing stage cannot mesh this scene" in _warnings(caplog)


def test_palette_label_pngs_give_their_indices_and_colour_labels_are_refused(tmp_path):
    folder = _one_frame(tmp_path)
    labels = np.random.default_rng(3).integers(0, 25, (H, W), dtype=np.uint8)
    image = Image.fromarray(labels, mode="P")
    image.putpalette(np.random.default_rng(4).integers(0, 256, 768).tolist())
    image.save(folder / "north_sem.png")
    np.testing.assert_array_equal(import_frames(folder).frames[0].semantic, labels)
    Image.fromarray(np.repeat(labels[..., None], 3, axis=2)).save(folder / "north_sem.png")  # grey ids as RGB
    np.testing.assert_array_equal(import_frames(folder).frames[0].semantic, labels)
    colours = np.random.default_rng(5).integers(0, 256, (H, W, 3), dtype=np.uint8)
    Image.fromarray(colours).save(folder / "north_sem.png")
    with pytest.raises(DataImportError, match=r"north_sem\.png: semantic map must hold class ids in one channel "
                                              r"\(a grey or palette PNG\), got shape \(24, 32, 3\): map a colour"):
        import_frames(folder)


UTM = np.array([500000.0, 4100000.0, 100.0])


def utm_records():
    """The test cameras with world coordinates offset by a UTM-like vector (no origin in the file)."""
    recs = opencv_records()
    for rec in recs:
        E = np.asarray(rec["world_to_camera"])
        E[:3, 3] -= E[:3, :3] @ UTM
        rec["world_to_camera"] = E.tolist()
    return recs


def test_without_origin_the_local_frame_starts_at_the_bounding_box_minimum(tmp_path, caplog):
    """As for LiDAR and meshes (docs: the origin is the bounding-box minimum in whole source units), so
    UTM poses import near zero, where float32 renders and fusion keep millimetres."""
    write_folder(tmp_path / "utm", utm_records(), keep_frame=False)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        scene = import_frames(tmp_path / "utm")
    assert _warnings(caplog) == ""
    origin = np.asarray(scene.metadata["origin"]["source_units"])
    np.testing.assert_array_equal(origin, np.floor(origin))
    points = np.concatenate([fr.camera.unproject_depth(fr.depth).reshape(-1, 3) for fr in scene.frames])
    centres = np.stack([fr.camera.center for fr in scene.frames])
    low = np.minimum(points.min(0), centres.min(0))
    assert (low >= -1e-6).all() and (low < 1.0 + 1e-6).all()  # within one unit of zero
    for fr in scene.frames:  # the same cameras, moved by the origin
        want = cameras()[fr.name]
        np.testing.assert_allclose(fr.camera.center + origin, want.center + UTM, atol=1e-6)
        np.testing.assert_allclose(fr.camera.world_to_camera[:3, :3], want.world_to_camera[:3, :3], atol=1e-12)
        np.testing.assert_allclose(fr.depth, ground_depth(want), rtol=1e-6)
    np.testing.assert_allclose(scene.metadata["origin"]["metres"], origin)


def test_a_given_origin_far_from_the_cameras_is_warned_about(tmp_path, caplog):
    write_folder(tmp_path / "utm", utm_records(), top={"origin": [0.0, 0.0, 0.0]}, keep_frame=False)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        scene = import_frames(tmp_path / "utm")
    assert "every camera centre lies 4100.0 km or more from the local origin, where float32 renders and TSDF " \
           "fusion round to 250 mm steps; set 'origin' near the data, e.g. [499965.0, 4099963.0, 99.0]" \
           in _warnings(caplog)
    assert scene.metadata["origin"]["source_units"] == [0.0, 0.0, 0.0]  # kept as given


def test_saturated_16_bit_depth_is_counted_and_warned_about(tmp_path, caplog):
    """65535 is the ceiling of a 16-bit PNG (65.535 m in millimetres): farther surfaces are clipped there."""
    cam = cameras()["north"]
    mm = np.round(ground_depth(cam) * 1000).astype(np.uint16)
    mm[:3] = 65535
    rec = {"name": "north", "K": cam.K.tolist(), "world_to_camera": cam.world_to_camera.tolist(), "width": W,
           "height": H, "depth_scale": 0.001}
    write_folder(tmp_path / "p", [rec], depth=False, semantic=False)
    Image.fromarray(mm).save(tmp_path / "p" / "d.png")
    spec = json.loads((tmp_path / "p" / "cameras.json").read_text())
    spec["frames"][0]["depth"] = "d.png"
    (tmp_path / "p" / "cameras.json").write_text(json.dumps(spec))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        scene = import_frames(tmp_path / "p")
    assert scene.metadata["saturated_depth_pixels"] == 3 * W
    assert f"{3 * W} depth pixels in 1 frames (north) hold their integer image's largest value" in _warnings(caplog)
