import copy
import dataclasses

import numpy as np
import open3d as o3d
import pytest

from earthcrafter.features.aggregate import sample_surface
from earthcrafter.geometry.cameras import Camera, intrinsics_from_fov, look_at
from earthcrafter.geometry.crops import CropConfig, faces_in_box_xy
from earthcrafter.geometry.raycast import render_frames
from earthcrafter.geometry.voxelize import choose_z0, voxelize_mesh_occupancy, voxelize_points, voxelize_scene
from earthcrafter.io.scene import Mesh, Scene
from earthcrafter.semantics import CLASS_ID, NUM_CLASSES
from ec_vox_helpers import BUILDING, PoolExtractor, toy_config

ROOF, FACADE = CLASS_ID["building_roof"], CLASS_ID["building_facade"]


def _keyset(coords):
    return set(map(tuple, np.asarray(coords).tolist()))


def test_voxelize_points_matches_a_python_reference():
    rng = np.random.default_rng(0)
    pts = rng.uniform([0, 0, -3], [8, 8, 12], (3000, 3))
    origin, s, L = np.array([0.0, 0.0, -1.0]), 1.0, 8
    a = voxelize_points(pts, origin, s, L, min_points=3)
    counts = {}
    below = above = 0
    for p in pts:
        i, j, k = (int(np.floor(c)) for c in (p - origin) / s)
        if k < 0:
            below += 1
        elif k >= L:
            above += 1
        else:
            counts[(i, j, k)] = counts.get((i, j, k), 0) + 1
    dense = {key: c for key, c in counts.items() if c >= 3}
    assert _keyset(a.coords) == set(dense)
    assert (a.clipped_below, a.clipped_above) == (below, above)
    assert a.dropped_sparse == sum(c for c in counts.values() if c < 3)
    np.testing.assert_array_equal(a.counts, [dense[tuple(c)] for c in a.coords.tolist()])
    # each kept point sits in the voxel it was assigned to
    np.testing.assert_array_equal(np.floor((pts[a.kept] - origin) / s).astype(int), a.coords[a.inverse])


def test_z_window_rule():
    z = np.concatenate([np.zeros(990), np.full(10, -50.0), np.linspace(0, 30, 1000)])
    assert choose_z0(z, 0.5, 0.01, 2) == pytest.approx(np.quantile(z, 0.01) - 1.0)
    assert choose_z0(np.array([3.0]), 1.0, 0.01, 0) == 3.0
    with pytest.raises(ValueError):
        choose_z0(np.array([]), 1.0)


def _open3d_occupancy(mesh, tile):
    """Independent reference: open3d's triangle-box voxelization of the same grid."""
    om = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(mesh.vertices), o3d.utility.Vector3iVector(mesh.faces))
    lo = tile.origin
    grid = o3d.geometry.VoxelGrid.create_from_triangle_mesh_within_bounds(om, tile.voxel_size, lo, lo + tile.L * tile.voxel_size)
    idx = np.array([v.grid_index for v in grid.get_voxels()])
    return idx[((idx >= 0) & (idx < tile.L)).all(1)]


def test_tile_occupancy_agrees_with_direct_mesh_voxelization(vox_scene, vox_result):
    assert len(vox_result.tiles) == 4 and not vox_result.skipped
    for tile in vox_result.tiles:
        ours = _keyset(tile.coords)
        dense = _keyset(voxelize_mesh_occupancy(vox_scene.mesh, tile.origin, tile.voxel_size, tile.L, samples_per_voxel=128, seed=7))
        exact = _keyset(_open3d_occupancy(vox_scene.mesh, tile))
        for ref in (dense, exact):
            assert len(ours & ref) / len(ours | ref) > 0.9, tile.tile_id
        # voxels outside open3d's set can only come from surfaces lying exactly on the tile's edge planes
        assert len(ours - exact) <= 0.01 * len(ours)


def test_tile_semantics_match_ground_truth_face_classes(vox_scene, vox_result):
    for tile in vox_result.tiles:
        faces = faces_in_box_xy(vox_scene.mesh, tile.origin[:2], tile.origin[:2] + 60)
        dense = sample_surface(vox_scene.mesh, 96 / tile.voxel_size**2, seed=11, faces=faces)
        a = voxelize_points(dense.xyz, tile.origin, tile.voxel_size, tile.L)
        inside = ((dense.xyz[a.kept, :2] >= tile.origin[:2]) & (dense.xyz[a.kept, :2] < tile.origin[:2] + 60)).all(1)
        votes = np.zeros((len(a.coords), NUM_CLASSES))
        np.add.at(votes, (a.inverse[inside], dense.semantic[a.kept][inside]), 1)
        gt = dict(zip(map(tuple, a.coords.tolist()), votes.argmax(1)))
        seen = tile.confidence > 0
        pred = tile.semantic[seen]
        truth = np.array([gt.get(tuple(c), -1) for c in tile.coords[seen].tolist()])
        assert (pred == truth).mean() > 0.9, tile.tile_id
        assert {ROOF, FACADE} <= set(pred.tolist())


def test_every_voxel_has_features_unseen_ones_are_flagged(vox_result):
    x0, x1, y0, y1, _ = BUILDING
    for tile, info in zip(vox_result.tiles, vox_result.report["tiles"]):
        c = tile.meta["counts"]
        assert c["num_voxels"] == len(tile) and c["unseen_voxels"] == info["unseen_voxels"]
        assert c["clipped_above"] == c["clipped_below"] == 0
        unseen = tile.confidence == 0
        assert 0 < unseen.sum() == c["unseen_voxels"] < 0.1 * len(tile)
        assert (tile.feats[unseen] == 0).all()
        assert (np.abs(tile.feats[~unseen]).sum(1) > 0).all()
        # unseen voxels are the ground inside the closed building
        w = tile.centers_world()[unseen]
        inside = (w[:, 0] > x0 - tile.voxel_size) & (w[:, 0] < x1 + tile.voxel_size) & (w[:, 1] > y0 - tile.voxel_size) & (w[:, 1] < y1 + tile.voxel_size)
        assert inside.mean() > 0.95 and (w[:, 2] < 3).all()


def test_voxel_normals_follow_the_surface(vox_result):
    for tile in vox_result.tiles:
        n = tile.feats[:, tile.layout["f_n"]].astype(np.float32)
        seen = tile.confidence > 0
        roof = seen & (tile.semantic == ROOF)
        facade = seen & (tile.semantic == FACADE)
        assert np.median(n[roof, 2]) > 0.98
        assert np.median(np.abs(n[facade, 2])) < 0.2
        np.testing.assert_allclose(np.linalg.norm(n[seen], axis=1), 1, atol=2e-3)


def test_views_project_voxels_onto_their_own_colours(vox_result):
    for tile, views in zip(vox_result.tiles, vox_result.views):
        assert 1 <= len(views) <= 8 and views.rgb.shape[1:] == (96, 96, 3)
        seen = tile.confidence > 0
        centres = tile.centers_local()[seen]
        colour = tile.feats[seen][:, tile.layout["f_rgb"]][:, :3].astype(np.float32)
        errs, in_mask = [], []
        for v in range(len(views)):
            E, K = views.world_to_camera[v], views.K[v]
            cam = centres @ E[:3, :3].T + E[:3, 3]
            u, w = cam[:, 0] / cam[:, 2] * K[0, 0] + K[0, 2], cam[:, 1] / cam[:, 2] * K[1, 1] + K[1, 2]
            ok = (u >= 0) & (u < 96) & (w >= 0) & (w < 96)
            col, row = u[ok].astype(int), w[ok].astype(int)
            visible = np.abs(cam[ok, 2] - views.depth[v][row, col]) < tile.voxel_size
            in_mask.append(views.mask[v][row[visible], col[visible]])
            errs.append(np.abs(views.rgb[v][row[visible], col[visible]] / 255.0 - colour[ok][visible]).mean(1))
        assert np.mean(np.concatenate(in_mask)) > 0.9
        assert np.median(np.concatenate(errs)) < 0.06


def test_view_masks_cover_exactly_the_tile_box(vox_scene, vox_result):
    tile, views = vox_result.tiles[0], vox_result.views[0]
    frame = next(f for f in vox_scene.frames if f.name == views.names[0])
    pts = frame.camera.unproject_depth(frame.depth) - tile.origin
    with np.errstate(invalid="ignore"):
        box = ((pts >= 0) & (pts < [60, 60, tile.L * tile.voxel_size])).all(-1)
    assert abs(views.mask[0].mean() - box.mean()) < 0.03
    assert 0.05 < views.mask[0].mean() < 0.95


def test_tall_content_is_clipped_and_counted(vox_scene):
    cfg = toy_config(L=16, crop=CropConfig(central_size_m=20, tile_size_m=10, tile_stride_m=10))
    res = voxelize_scene(vox_scene, PoolExtractor(), cfg)
    assert len(res.tiles) == 4
    for tile in res.tiles:
        c = tile.meta["counts"]
        assert c["clipped_above"] > 0 and 0 < c["clipped_fraction"] < 1
        assert tile.coords.max() < 16 and tile.coords.min() >= 0
        assert tile.origin[2] == pytest.approx(-2 * 10 / 16, abs=0.05)  # flat ground at 0 minus 2 voxels


def test_tiles_per_pass_and_rendered_geometry_give_the_same_tiles(vox_scene, vox_result):
    per_tile = voxelize_scene(vox_scene, PoolExtractor(), toy_config(tiles_per_pass=1))
    no_geom = copy.copy(vox_scene)
    no_geom.frames = [copy.copy(f) for f in vox_scene.frames]
    for f in no_geom.frames:
        f.depth = f.normal = None
    rendered = voxelize_scene(no_geom, PoolExtractor(), toy_config())
    assert len(rendered.report["frames_geometry_rendered"]) == 9
    for other in (per_tile, rendered):
        for a, b, va, vb in zip(vox_result.tiles, other.tiles, vox_result.views, other.views):
            np.testing.assert_array_equal(a.coords, b.coords)
            np.testing.assert_allclose(a.feats.astype(np.float32), b.feats.astype(np.float32), atol=2e-3)
            assert va.names == vb.names


def test_bad_frames_are_skipped_and_counted(vox_scene):
    scene = copy.copy(vox_scene)
    scene.frames = [copy.copy(f) for f in vox_scene.frames]
    scene.frames[2].depth = scene.frames[2].depth.copy()
    scene.frames[2].depth[10, 10] = np.nan
    scene.frames[4].camera = None
    res = voxelize_scene(scene, PoolExtractor(), toy_config())
    assert len(res.tiles) == 4 and res.report["frames_skipped"] == 2
    reasons = {(r["scope"], r["item"], r["reason"]) for r in res.skipped}
    assert reasons == {("frame", "002", "NaN depth"), ("frame", "004", "no camera")}
    assert all("002" not in v.names and "004" not in v.names for v in res.views)


def _corner_scene(frames=True) -> Scene:
    # a 30 m square of ground in one corner; two loose vertices stretch the scene to 120 m
    v = np.array([[80, 80, 0], [110, 80, 0], [110, 110, 0], [80, 110, 0], [0, 0, 0], [120, 120, 0]], float)
    mesh = Mesh(v, np.array([[0, 1, 2], [0, 2, 3]]), np.full((6, 3), 120, np.uint8), np.array([11, 11], np.uint8))
    cam = Camera(intrinsics_from_fov(64, 64, 60), look_at([95, 94, 60], [95, 95, 0]), 64, 64)
    return Scene("corner", {}, mesh, None, render_frames(mesh, [cam]) if frames else [])


def test_scene_and_tile_skips_have_reasons():
    res = voxelize_scene(_corner_scene(), PoolExtractor(), toy_config())
    assert [t.tile_id for t in res.tiles] == ["corner_r1c1"]
    assert sorted(r["item"] for r in res.skipped) == ["corner_r0c0", "corner_r0c1", "corner_r1c0"]
    assert {r["reason"] for r in res.skipped} == {"zero voxels"}

    def only_reason(scene, cfg=toy_config()):
        r = voxelize_scene(scene, PoolExtractor(), cfg)
        assert r.tiles == [] and len(r.skipped) >= 1 and r.report["num_tiles"] == 0
        return [s["reason"] for s in r.skipped if s["scope"] == "scene"][0]

    assert "no usable frames" in only_reason(_corner_scene(frames=False))
    no_mesh = _corner_scene()
    no_mesh.mesh = None
    assert "no mesh" in only_reason(no_mesh)
    big = toy_config(crop=CropConfig(central_size_m=100, tile_size_m=200, tile_stride_m=150))
    assert "empty crop" in only_reason(_corner_scene(), big)


def test_report_is_plain_json(vox_result):
    import json

    rep = json.loads(json.dumps(vox_result.report))
    assert rep["num_tiles"] == 4 and len(rep["tiles"]) == 4 and rep["frames_skipped"] == 0
    assert set(rep["timings"]) == {"sample_and_voxelize_s", "aggregate_s", "tiles_and_views_s"}
    assert rep["aggregation"][0]["frames_used"] == 9
    assert all(t["num_views"] == 8 and sum(t["class_hist"].values()) == t["num_voxels"] for t in rep["tiles"])


def test_imported_scenes_are_tiled_with_the_biome_real(vox_scene):
    """Real data (no biome in its metadata) is one biome, "real", as in the acquisition summary."""
    scene = dataclasses.replace(vox_scene, scene_id="survey", metadata={"source": "lidar"})
    out = voxelize_scene(scene, PoolExtractor(), toy_config(L=16))
    assert out.tiles and {tile.meta["biome"] for tile in out.tiles} == {"real"}
