"""mesh_scene: method choice from what a scene holds, config validation, reports."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from pydantic import ValidationError

from earthcrafter.evaluation.mesh_metrics import mesh_quality
from earthcrafter.geometry.surface import MeshingConfig, mesh_scene, pick_method
from earthcrafter.io.scene import Scene

SMALL = {"tsdf": {"voxel_size": 0.5}, "dsm": {"cell_size": 0.5}}


def test_frames_with_depth_use_tsdf(town, town_frames):
    scene = Scene("s1", frames=town_frames, points=None, mesh=town)
    mesh, rep = mesh_scene(scene, MeshingConfig(**SMALL))
    assert rep["method"] == "tsdf" and rep["reconstruction"]["voxel_size"] == 0.5
    assert rep["clean"]["faces_out"] == len(mesh.faces)
    assert mesh_quality(mesh, town, n_samples=30_000, threshold=0.5)["fscore"] > 0.95
    json.dumps(rep)


def test_points_use_dsm_or_poisson(town, town_points):
    scene = Scene("s2", points=town_points)
    mesh, rep = mesh_scene(scene, MeshingConfig(**SMALL))
    assert rep["method"] == "dsm" and rep["reconstruction"]["cells_occupied"] > 0
    assert mesh_quality(mesh, town, n_samples=30_000, threshold=0.5)["fscore"] > 0.95
    assert pick_method(scene, MeshingConfig(method="poisson")) == "poisson"


def test_mesh_only_is_cleaned(town):
    mesh, rep = mesh_scene(Scene("s3", mesh=town), MeshingConfig(clean={"target_faces": 3000}))
    assert rep["method"] == "mesh" and len(mesh.faces) <= 3000
    mesh, rep = mesh_scene(Scene("s3", mesh=town), MeshingConfig(clean={"enabled": False}))
    assert mesh is town and "clean" not in rep


def test_ground_truth_source_passes_the_mesh_through(town, town_points):
    scene = Scene("s4", mesh=town, points=town_points)
    mesh, rep = mesh_scene(scene, MeshingConfig(source="ground_truth", clean={"enabled": False}))
    assert rep["method"] == "ground_truth" and mesh is town
    mesh, rep = mesh_scene(scene, MeshingConfig(source="ground_truth"))
    assert rep["clean"]["faces_in"] == len(town.faces)
    with pytest.raises(ValueError, match="scene 's5': source='ground_truth' but the scene has no mesh"):
        mesh_scene(Scene("s5", points=town_points), MeshingConfig(source="ground_truth"))


def test_scenes_without_usable_data_are_refused(town_frames, town_points):
    no_depth = [dataclasses.replace(f, depth=None) for f in town_frames[:2]]
    with pytest.raises(ValueError, match="scene 'e1' has nothing to mesh: 2 frames without depth"):
        mesh_scene(Scene("e1", frames=no_depth), MeshingConfig())
    with pytest.raises(ValueError, match="method='tsdf' but the scene has no frames"):
        mesh_scene(Scene("e2", points=town_points), MeshingConfig(method="tsdf"))
    with pytest.raises(ValueError, match="method='dsm' but the scene has no points"):
        mesh_scene(Scene("e3", frames=town_frames), MeshingConfig(method="dsm"))
    mixed = list(town_frames[:3]) + no_depth[:1]
    with pytest.raises(ValueError, match="has no depth map"):
        mesh_scene(Scene("e4", frames=mixed), MeshingConfig(**SMALL))


def test_nan_points_are_refused_through_the_scene(town_points):
    pts = dataclasses.replace(town_points, xyz=town_points.xyz.copy())
    pts.xyz[11, 2] = np.nan
    with pytest.raises(ValueError, match="NaN/inf coordinates \\(first at index 11\\)"):
        mesh_scene(Scene("e5", points=pts), MeshingConfig())


def test_config_is_strict_and_names_the_bad_key():
    with pytest.raises(ValidationError, match="tsdf.voxel_sise"):
        MeshingConfig(tsdf={"voxel_sise": 0.5})
    with pytest.raises(ValidationError, match="source"):
        MeshingConfig(source="lidar")
    with pytest.raises(ValidationError, match="clean.target_faces"):
        MeshingConfig(clean={"target_faces": 0})
    cfg = MeshingConfig.model_validate({"method": "dsm", "dsm": {"cell_size": 1.0, "jump_mode": "drop"}})
    assert cfg.dsm.jump_mode == "drop" and cfg.tsdf.voxel_size is None
    with pytest.raises(TypeError, match="MeshingConfig"):
        mesh_scene(Scene("x"), {"method": "dsm"})


def test_meshing_stage_refuses_zero_input_scenes():
    """An empty output would replace every mesh already made: no input is an error instead."""
    from earthcrafter.pipelines.meshing.nodes import mesh_scenes

    with pytest.raises(ValueError, match="no input scenes"):
        mesh_scenes({}, {})
