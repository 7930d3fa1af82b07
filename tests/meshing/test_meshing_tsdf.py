"""TSDF fusion of ray-cast RGB-D frames of a known mesh."""

from __future__ import annotations

import dataclasses

import numpy as np
import open3d as o3d
import pytest

from earthcrafter.evaluation.mesh_metrics import mesh_quality
from earthcrafter.geometry import tsdf
from earthcrafter.geometry.mesh_clean import face_normals, nearest_faces
from earthcrafter.geometry.raycast import render_frames
from earthcrafter.geometry.tsdf import TSDFConfig, auto_voxel_size, reconstruct_from_frames, vote_face_semantics

from meshing_synth import FACADE, aerial_cameras


@pytest.fixture(scope="module")
def fused(town_frames):
    return reconstruct_from_frames(town_frames, TSDFConfig(voxel_size=0.5), return_report=True)


def test_fused_mesh_matches_ground_truth_geometry(fused, town):
    mesh, report = fused
    assert report["voxel_size"] == 0.5 and report["sdf_trunc"] == 2.0 and report["frames"] == 9
    q = mesh_quality(mesh, town, n_samples=100_000, threshold=0.5)
    # Sampling floor at 100k samples on ~4200 m^2 is ~0.10 m; marching cubes at 0.5 m adds ~0.1 m.
    assert q["chamfer_l1"] < 0.25, q
    assert q["precision"] > 0.99 and q["recall"] > 0.97, q
    assert q["fscore"] > 0.98, q


def test_fused_normals_agree_with_ground_truth(fused, town):
    mesh, _ = fused
    fid = nearest_faces(town, mesh.vertices[mesh.faces].mean(1))
    n_pred = face_normals(mesh.vertices, mesh.faces)
    n_true = face_normals(town.vertices, town.faces)[fid]
    area = np.linalg.norm(n_pred, axis=1)
    agree = np.einsum("ij,ij->i", n_pred, n_true) > 0
    assert area[agree].sum() / area.sum() > 0.995  # marching cubes winds faces towards free space


def test_fused_semantics_match_nearest_ground_truth_face(fused, town):
    mesh, report = fused
    truth = town.face_semantic[nearest_faces(town, mesh.vertices[mesh.faces].mean(1))]
    assert (mesh.face_semantic == truth).mean() > 0.98
    facade = truth == FACADE
    assert (mesh.face_semantic[facade] == FACADE).mean() > 0.9
    assert report["semantic_vote"] == "rays"
    assert report["faces_voted"] + report["faces_filled_nearest"] == len(mesh.faces)


def test_ray_and_centroid_votes_agree(fused, town, town_frames):
    """Two independent ways to find the pixels that saw each face."""
    mesh, report = fused
    truth = town.face_semantic[nearest_faces(town, mesh.vertices[mesh.faces].mean(1))]
    tol = report["sdf_trunc"]
    rays, rep_r = vote_face_semantics(mesh, town_frames, tol, "rays")
    cent, rep_c = vote_face_semantics(mesh, town_frames, tol, "centroids")
    assert np.array_equal(rays, mesh.face_semantic)
    assert (rays == truth).mean() > 0.98 and (cent == truth).mean() > 0.95
    assert (rays == cent).mean() > 0.95
    assert rep_c["faces_voted"] > 0.99 * len(mesh.faces)  # every visible face gets its own votes


def test_frames_without_semantics_vote_nothing(town_frames):
    frames = [dataclasses.replace(f, semantic=None) if i % 2 else f for i, f in enumerate(town_frames)]
    mesh, rep = reconstruct_from_frames(frames, TSDFConfig(voxel_size=0.5), return_report=True)
    assert rep["frames_without_semantic"] == len(frames) // 2 and rep["faces_voted"] > 0.7 * len(mesh.faces)
    bare = [dataclasses.replace(f, semantic=None) for f in town_frames[:3]]
    mesh, rep = reconstruct_from_frames(bare, TSDFConfig(voxel_size=0.5), return_report=True)
    assert rep["faces_voted"] == 0 and rep["faces_filled_nearest"] == 0 and (mesh.face_semantic == 0).all()
    bad = dataclasses.replace(town_frames[0], semantic=np.full_like(town_frames[0].semantic, 40))
    with pytest.raises(ValueError, match=f"frame '{bad.name}': semantic map holds class 40"):
        reconstruct_from_frames([bad], TSDFConfig(voxel_size=0.5))


def test_fused_colours_match_albedo(fused, town):
    mesh, _ = fused
    fid = nearest_faces(town, mesh.vertices)
    truth = town.vertex_colors[town.faces[fid]].astype(float).mean(1)
    err = np.abs(mesh.vertex_colors.astype(float) - truth).mean(1)
    assert np.median(err) < 3 and np.mean(err) < 8  # rendered without shading, so rgb == albedo


def test_fusion_is_deterministic(fused, town_frames):
    again = reconstruct_from_frames(town_frames, TSDFConfig(voxel_size=0.5))
    mesh, _ = fused
    for key in ("vertices", "faces", "vertex_colors", "face_semantic"):
        assert np.array_equal(getattr(mesh, key), getattr(again, key)), key


def test_auto_voxel_rule():
    cfg = TSDFConfig()
    assert auto_voxel_size((600.0, 600.0), cfg) == pytest.approx(0.5)  # resolution cap
    assert auto_voxel_size((60.0, 60.0), cfg) == pytest.approx(0.05)  # floor
    # A tight memory budget forces larger voxels: bytes ~ 1.5 A (2 t + b) 20 / v^2 <= budget.
    tight = TSDFConfig(memory_budget_gb=0.1)
    v = auto_voxel_size((600.0, 600.0), tight)
    assert 1.5 * 600 * 600 * (2 * 4 + 8) * 20 / v**2 == pytest.approx(0.1 * 2**30, rel=1e-6)


def test_auto_voxel_size_is_used(town_frames):
    cfg = TSDFConfig(max_grid_resolution=60, min_voxel_size=0.01)
    mesh, report = reconstruct_from_frames(town_frames[:3], cfg, return_report=True)
    assert report["voxel_size"] == pytest.approx(60.0 / 60, rel=0.05)  # terrain spans 60 m
    assert len(mesh.faces) > 0


def test_depth_range_limits_fusion(town_frames):
    nadir = town_frames[:1]  # 75 m up: every pixel is farther than 60 m
    mesh = reconstruct_from_frames(nadir, TSDFConfig(voxel_size=0.5))
    assert len(mesh.faces) > 0
    with pytest.raises(ValueError, match="no frame has a valid depth pixel"):
        reconstruct_from_frames(nadir, TSDFConfig(voxel_size=0.5, depth_max=60.0))
    near = reconstruct_from_frames(nadir, TSDFConfig(voxel_size=0.5, depth_max=70.0))
    z_cam = 75.0 - near.vertices[:, 2]  # the nadir camera looks straight down
    assert z_cam.max() < 70.0 + 2.0 + 0.5  # depth_max plus the truncation band and a voxel
    assert len(near.faces) < 0.8 * len(mesh.faces)


def test_more_observations_required_shrinks_the_mesh(town_frames):
    one = reconstruct_from_frames(town_frames, TSDFConfig(voxel_size=0.5))
    three = reconstruct_from_frames(town_frames, TSDFConfig(voxel_size=0.5, min_observations=3))
    assert 0 < len(three.faces) < len(one.faces)
    with pytest.raises(ValueError, match="empty mesh"):
        reconstruct_from_frames(town_frames[:2], TSDFConfig(voxel_size=0.5, min_observations=3))


def test_frames_without_depth_are_refused(town_frames):
    frames = list(town_frames[:3])
    frames[1] = dataclasses.replace(frames[1], depth=None)
    with pytest.raises(ValueError, match=f"frame '{frames[1].name}' has no depth map"):
        reconstruct_from_frames(frames, TSDFConfig(voxel_size=0.5))


def test_nan_depth_is_refused(town_frames):
    bad = dataclasses.replace(town_frames[0], depth=town_frames[0].depth.copy())
    bad.depth[3, 4] = np.nan
    with pytest.raises(ValueError, match="1 NaN pixels"):
        reconstruct_from_frames([bad], TSDFConfig(voxel_size=0.5))
    with pytest.raises(ValueError, match="no frames"):
        reconstruct_from_frames([], TSDFConfig())


def test_config_is_strict():
    with pytest.raises(ValueError, match="voxel_sise"):
        TSDFConfig(voxel_sise=0.5)
    with pytest.raises(ValueError, match="depth_max"):
        TSDFConfig(depth_min=10.0, depth_max=5.0)


def surface_distance(mesh, points: np.ndarray) -> np.ndarray:
    """Exact distance from points to a mesh (open3d), independent of the code under test."""
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(mesh.vertices.astype(np.float32)), o3d.core.Tensor(mesh.faces.astype(np.uint32)))
    return scene.compute_distance(o3d.core.Tensor(points.astype(np.float32))).numpy()


@pytest.fixture(scope="module")
def sharp_frames(town):
    return render_frames(town, aerial_cameras(n_ring=6, size=(320, 240)))


@pytest.fixture(scope="module")
def fine_mesh(sharp_frames):
    return reconstruct_from_frames(sharp_frames, TSDFConfig(voxel_size=0.3))


def test_finer_voxels_are_more_accurate(town, sharp_frames, fine_mesh):
    coarse = reconstruct_from_frames(sharp_frames, TSDFConfig(voxel_size=1.0))
    err = [surface_distance(town, m.vertices).mean() for m in (coarse, fine_mesh)]
    assert err[1] < 0.6 * err[0], err
    assert err[1] < 0.04, err


def test_pixel_centre_convention(town, sharp_frames, fine_mesh, monkeypatch):
    """Vertices land on the true surface; shifting the principal point by half a pixel
    (the other common pixel-centre convention) moves them measurably off it."""
    cfg = TSDFConfig(voxel_size=0.3)
    good = np.median(surface_distance(town, fine_mesh.vertices))

    def shifted(camera):
        K = camera.K.copy()
        K[:2, 2] -= 0.5
        return K

    monkeypatch.setattr(tsdf, "_o3d_intrinsics", shifted)
    bad = np.median(surface_distance(town, reconstruct_from_frames(sharp_frames, cfg).vertices))
    assert good < 0.03 and bad > 2 * good, (good, bad)
