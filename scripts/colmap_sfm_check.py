"""The COLMAP path on a real COLMAP reconstruction: SfM of a scene's frames -> colmap-to-frames -> import.

pycolmap (COLMAP's Python bindings, ``pip install pycolmap``) reconstructs the RGB frames of a scene
folder from the pixels alone: SIFT features, exhaustive matching, incremental SfM with one
SIMPLE_RADIAL camera (what COLMAP assumes for photos of unknown calibration). Then what a user does:

1. align the model to the scene's camera centres (``colmap model_aligner`` with GPS positions does
   this; here the known centres play the GPS), so its units are metres;
2. undistort it (``colmap image_undistorter``: PINHOLE cameras, undistorted images);
3. depth maps: ray-cast from the scene's mesh with the *reconstructed* undistorted cameras, and
   written by COLMAP's own depth-map writer (COLMAP's patch-match stereo needs CUDA);
4. the undistorted model written by COLMAP in TEXT and in BINARY, each converted by
   ``earthcrafter.io.colmap.colmap_to_frames`` and imported by ``import_frames``.

The report compares the imported cameras with the scene's own (rotation and centre errors, focal
length), checks that the TEXT and BINARY conversions agree, that the depth maps read back as COLMAP
reads them, and that the imported depth lifts onto the mesh. Pose errors measure COLMAP's SfM on
these images as much as the converter; the depth lift does not depend on the poses being right (the
depth was cast with the same cameras), so a wrong pose or depth convention in the reader shows there.

    python scripts/colmap_sfm_check.py data/01_raw/scenes/syn_s0_0005 --work /tmp/colmap_check

Writes ``report.json`` in the work folder and prints it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from earthcrafter.geometry.cameras import Camera
from earthcrafter.geometry.raycast import MeshRaycaster
from earthcrafter.io.atomic import replace_problem
from earthcrafter.io.colmap import colmap_to_frames, read_depth_map
from earthcrafter.io.frames_import import import_frames
from earthcrafter.io.scene import read_cameras, read_mesh_ply


def reconstruct(images: Path, work: Path, seed: int = 0):
    """pycolmap SfM of every image in ``images``: the largest model, single-threaded and seeded."""
    import pycolmap

    pycolmap.set_random_seed(seed)
    database = work / "database.db"
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.num_threads = 1
    pycolmap.extract_features(database, images, camera_mode=pycolmap.CameraMode.SINGLE,
                              extraction_options=extraction)
    matching = pycolmap.FeatureMatchingOptions()
    matching.num_threads = 1
    pycolmap.match_exhaustive(database, matching_options=matching)
    mapping = pycolmap.IncrementalPipelineOptions()
    mapping.num_threads = 1
    models = pycolmap.incremental_mapping(database, images, work / "sparse", options=mapping)
    if not models:
        raise RuntimeError(f"COLMAP registered no model from the images in {images}")
    return max(models.values(), key=lambda model: model.num_reg_images())


def colmap_camera(reconstruction, image) -> Camera:
    """A pycolmap image's PINHOLE camera as earthcrafter's Camera (both OpenCV world-to-camera)."""
    camera = reconstruction.cameras[image.camera_id]
    E = np.eye(4)
    E[:3] = image.cam_from_world().matrix()
    return Camera(camera.calibration_matrix(), E, camera.width, camera.height)


def write_depth_maps(reconstruction, caster: MeshRaycaster, depth_dir: Path) -> None:
    """<image>.geometric.bin per image: camera z of the mesh (0 = no surface), by COLMAP's writer."""
    import pycolmap

    depth_dir.mkdir(parents=True, exist_ok=True)
    for image in reconstruction.images.values():
        depth = caster.render(colmap_camera(reconstruction, image), image.name).depth
        depth = np.where(np.isfinite(depth), depth, 0).astype(np.float32)
        seen = depth[depth > 0]
        bounds = (float(seen.min()), float(seen.max())) if seen.size else (0.0, 0.0)
        pycolmap.DepthMap.from_array(depth, *bounds).write(depth_dir / f"{image.name}.geometric.bin")


def colmap_read_depth(path: Path) -> np.ndarray:
    """A depth map as COLMAP's own reader reads it."""
    import pycolmap

    depth_map = pycolmap.DepthMap()
    depth_map.read(path)
    return depth_map.to_array()


def rotation_angle_deg(R: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1.0, 1.0))))


def check(scene_dir: str | Path, work: str | Path, seed: int = 0, colmap_log: bool = False) -> dict:
    """Run the whole chain on ``scene_dir`` (cameras.json, frames/<name>_rgb.png, mesh.ply) in ``work``."""
    import pycolmap

    if not colmap_log:  # COLMAP logs every image of every step at INFO
        pycolmap.logging.minloglevel = pycolmap.logging.WARNING

    scene_dir, work = Path(scene_dir), Path(work)
    problem = replace_problem(work, "database.db", "an earlier check's work folder")  # never anything else
    if problem:
        raise ValueError(f"{work}: {problem}")
    if work.exists():
        shutil.rmtree(work)
    (work / "images").mkdir(parents=True)
    truth = dict(read_cameras(scene_dir))
    for name in truth:
        shutil.copy(scene_dir / "frames" / f"{name}_rgb.png", work / "images" / f"{name}.png")
    mesh = read_mesh_ply(scene_dir / "mesh.ply")
    caster = MeshRaycaster(mesh)

    start = time.perf_counter()
    sfm = reconstruct(work / "images", work, seed)
    sfm_s = time.perf_counter() - start
    names = [image.name for image in sfm.images.values()]
    if len(names) < 3:
        raise RuntimeError(f"COLMAP registered {len(names)} of the {len(truth)} frames of {scene_dir}: "
                           "too few to align (3 or more)")
    centres = np.array([truth[Path(n).stem].center for n in names])
    # RANSAC inlier distance: 2 % of the camera plan's size (GPS-grade for aerial views)
    spread = float(np.median(np.linalg.norm(centres - centres.mean(0), axis=1)))
    to_metres = pycolmap.align_reconstruction_to_locations(sfm, names, centres, 3,
                                                           pycolmap.RANSACOptions(max_error=0.02 * spread))
    if to_metres is None:
        raise RuntimeError("COLMAP could not align the model to the scene's camera centres")
    sfm.transform(to_metres)
    (work / "aligned").mkdir()
    sfm.write_binary(work / "aligned")
    pycolmap.undistort_images(work / "dense", work / "aligned", work / "images")
    undistorted = pycolmap.Reconstruction(work / "dense" / "sparse")
    depth_dir = work / "dense" / "stereo" / "depth_maps"
    write_depth_maps(undistorted, caster, depth_dir)
    for fmt in ("text", "binary"):
        (work / f"model_{fmt}").mkdir()
        getattr(undistorted, f"write_{fmt}")(work / f"model_{fmt}")
        colmap_to_frames(work / f"model_{fmt}", work / "dense" / "images", work / f"frames_{fmt}",
                         depth_dir=depth_dir, units="m", origin=[0.0, 0.0, 0.0])

    cameras = {fmt: json.loads((work / f"frames_{fmt}" / "cameras.json").read_text()) for fmt in ("text", "binary")}
    imported = import_frames(work / "frames_binary")
    origin = np.array(imported.metadata["origin"]["metres"])
    rotation, centre, focal, lifted = [], [], [], []
    for frame in imported.frames:
        ref = truth[frame.name]
        rotation.append(rotation_angle_deg(frame.camera.world_to_camera[:3, :3] @ ref.world_to_camera[:3, :3].T))
        centre.append(np.linalg.norm(frame.camera.center + origin - ref.center))
        focal.append(frame.camera.K[0, 0] / ref.K[0, 0] - 1)
        points = frame.camera.unproject_depth(frame.depth).reshape(-1, 3)
        lifted.append(points[np.isfinite(points).all(axis=1)] + origin)
    depth_exact = all(np.array_equal(read_depth_map(path), colmap_read_depth(path))
                      for path in sorted(depth_dir.glob("*.bin")))
    distance = caster.distance(np.concatenate(lifted))
    ranges = [np.linalg.norm(ref.center - mesh.vertices.mean(0)) for ref in truth.values()]
    report = {
        "scene": str(scene_dir),
        "pycolmap": pycolmap.__version__,
        "frames": len(truth),
        "registered": len(names),
        "imported": len(imported.frames),
        "sfm_seconds": round(sfm_s, 2),
        "sfm_reprojection_error_px": round(float(sfm.compute_mean_reprojection_error()), 3),
        "rotation_error_deg": {"median": float(np.median(rotation)), "max": float(np.max(rotation))},
        "centre_error_m": {"median": float(np.median(centre)), "max": float(np.max(centre))},
        "median_camera_range_m": float(np.median(ranges)),
        "focal_error": {"median": float(np.median(focal)), "max_abs": float(np.max(np.abs(focal)))},
        "text_equals_binary": cameras["text"] == cameras["binary"],
        "depth_maps_read_as_colmap_reads_them": depth_exact,
        "lifted_depth_to_mesh_m": {"median": float(np.median(distance)),
                                   "p99": float(np.quantile(distance, 0.99)), "points": int(distance.size)},
    }
    (work / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scene_dir", help="a scene folder with cameras.json, frames/ and mesh.ply")
    parser.add_argument("--work", default="colmap_check", help="work folder (an earlier check's is replaced)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--colmap-log", action="store_true", help="show COLMAP's own progress log")
    args = parser.parse_args()
    print(json.dumps(check(args.scene_dir, args.work, args.seed, args.colmap_log), indent=1))


if __name__ == "__main__":
    main()
