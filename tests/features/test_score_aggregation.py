import copy

import numpy as np
import pytest

from earthcrafter.features.aggregate import (
    AggregationConfig,
    aggregate,
    face_areas_normals,
    sample_surface,
    view_weights,
)
from earthcrafter.features.base import cross_rgb, frame_features
from earthcrafter.features.layout import FEATURE_LAYOUT
from earthcrafter.features.segmenters import get_segmenter, register_segmenter, segment
from earthcrafter.semantics import colorize
from ec_toy_scene import BUILDING, GRASS, PoolExtractor

CFG = AggregationConfig(progress=False)
NADIR, NORTH, SOUTH = 0, 3, 7  # camera indices in make_cameras (north: eye at +y)


@pytest.fixture(scope="module")
def samples(toy_scene):
    return sample_surface(toy_scene.mesh, density=0.25, seed=3)


def _const_maps(frames, values, channels=2):
    return [np.full((f.camera.height, f.camera.width, channels), v, np.float32) for f, v in zip(frames, values)]


def test_sample_surface_is_area_weighted_seeded_and_on_the_faces(toy_scene):
    mesh = toy_scene.mesh
    area, normal = face_areas_normals(mesh)
    s = sample_surface(mesh, density=2.0, seed=0)
    assert abs(len(s) - 2.0 * area.sum()) < 0.01 * 2.0 * area.sum()
    # per-class counts follow the class areas
    for cls in np.unique(mesh.face_semantic):
        expected = 2.0 * area[mesh.face_semantic == cls].sum()
        assert abs((s.semantic == cls).sum() - expected) < 0.03 * expected + 10
    # each sample lies in its face's plane, inside the triangle's bounding box
    tri = mesh.vertices[mesh.faces[s.face]]
    np.testing.assert_allclose(np.einsum("ij,ij->i", s.xyz - tri[:, 0], normal[s.face]), 0, atol=1e-6)
    assert ((s.xyz >= tri.min(axis=1) - 1e-9) & (s.xyz <= tri.max(axis=1) + 1e-9)).all()
    again = sample_surface(mesh, density=2.0, seed=0)
    np.testing.assert_array_equal(s.xyz, again.xyz)
    assert not np.array_equal(sample_surface(mesh, density=2.0, seed=1).xyz[:100], s.xyz[:100])
    with pytest.raises(ValueError, match="density"):
        sample_surface(mesh, density=0)


def test_f_rgb_equals_frame_colours_at_projected_pixels(toy_scene, samples):
    frame = toy_scene.frames[NADIR]
    fmap = frame_features(frame, PoolExtractor(), dtype=np.float32)
    agg = aggregate(samples.xyz, samples.normal, [frame], [fmap], CFG, layout=FEATURE_LAYOUT)
    seen = np.flatnonzero(agg.num_obs > 0)
    assert len(seen) > 0.5 * len(samples)
    uv, _ = frame.camera.project(samples.xyz[seen])
    col, row = np.floor(uv).astype(int).T
    expected = cross_rgb(frame.rgb)[row, col]
    # exact up to float32 rounding of (w * f) / w; a neighbouring pixel would be off by >= 1/255
    np.testing.assert_allclose(agg.feats[seen][:, FEATURE_LAYOUT["f_rgb"]], expected, rtol=1e-6, atol=0)
    np.testing.assert_allclose(agg.feats[seen][:, :48], fmap[row, col, :48], rtol=1e-6, atol=1e-12)
    assert (agg.feats[agg.num_obs == 0] == 0).all()


def test_points_under_the_roof_get_nothing_and_are_reported(toy_scene, samples):
    maps = [frame_features(f, PoolExtractor(), dtype=np.float32) for f in toy_scene.frames]
    agg = aggregate(samples.xyz, samples.normal, toy_scene.frames, maps, CFG)
    x0, x1, y0, y1, _ = BUILDING
    p = samples.xyz
    under = (samples.semantic == GRASS) & (p[:, 0] > x0 + 1) & (p[:, 0] < x1 - 1) & (p[:, 1] > y0 + 1) & (p[:, 1] < y1 - 1)
    assert under.sum() > 20
    assert (agg.num_obs[under] == 0).all() and (agg.point_obs[under] == 0).all()
    assert (agg.feats[under] == 0).all() and (agg.confidence[under] == 0).all()
    assert agg.summary()["unseen_points"] >= under.sum()
    assert agg.frame_hits.shape == (9, 1) and (agg.frame_hits[:, 0] > 0).all()


def test_an_occluding_building_blocks_the_far_side_frame(toy_scene):
    frames = [toy_scene.frames[NORTH], toy_scene.frames[SOUTH]]
    north_of_building = np.array([[56.0, 72.0, 0.0], [60.0, 72.0, 0.0], [64.0, 71.5, 0.0]])
    south_of_building = north_of_building * [1, 0, 1] + [0, 48.0, 0]
    pts = np.concatenate([north_of_building, south_of_building])
    normals = np.tile([0.0, 0.0, 1.0], (6, 1))
    agg = aggregate(pts, normals, frames, _const_maps(frames, [1.0, 5.0]), CFG)
    np.testing.assert_array_equal(agg.point_obs, [1, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(agg.feats[:3], 1.0)  # only the north camera sees them
    np.testing.assert_array_equal(agg.feats[3:], 5.0)  # only the south camera sees them


def test_weighted_mean_of_two_views(toy_scene):
    frames = [toy_scene.frames[NADIR], toy_scene.frames[NORTH]]
    pt, n = np.array([[60.0, 74.0, 0.0]]), np.array([[0.0, 0.0, 1.0]])
    agg = aggregate(pt, n, frames, _const_maps(frames, [1.0, 5.0], 1), CFG)
    w = []
    for f in frames:
        uv, z = f.camera.project(pt)
        ray = pt[0] - f.camera.center
        d = np.linalg.norm(ray)
        res = z[0] - f.depth[int(uv[0, 1]), int(uv[0, 0])]
        tol = CFG.depth_rel_tol * z[0] + CFG.depth_abs_tol
        border = min(uv[0, 0], 128 - uv[0, 0], uv[0, 1], 128 - uv[0, 1])
        w.append(view_weights(np.array([abs(ray[2]) / d]), np.array([d]), np.array([border]), np.array([res]), np.array([tol]), CFG)[0])
    expected = (w[0] * 1.0 + w[1] * 5.0) / (w[0] + w[1])
    assert agg.feats[0, 0] == pytest.approx(expected, rel=1e-5)
    assert agg.weight[0] == pytest.approx(sum(w), rel=1e-5)


def test_view_weights_favour_frontal_close_central_consistent_views():
    cfg = AggregationConfig()
    one = np.ones(1)
    base = view_weights(one * 0.9, one * 100, one * 50, one * 0, one * 1, cfg)[0]
    assert view_weights(one * 0.5, one * 100, one * 50, one * 0, one, cfg)[0] < base
    assert view_weights(one * 0.9, one * 200, one * 50, one * 0, one, cfg)[0] < base
    assert view_weights(one * 0.9, one * 100, one * 1, one * 0, one, cfg)[0] < base
    assert view_weights(one * 0.9, one * 100, one * 0, one * 0, one, cfg)[0] == 0
    assert view_weights(one * 0.9, one * 100, one * 50, one * 0.5, one, cfg)[0] < base
    assert view_weights(one * 0.01, one * 100, one * 50, one * 0, one, cfg)[0] == 0  # grazing: dropped


def test_chunking_and_grouping_are_consistent(toy_scene, samples):
    frames = toy_scene.frames[:4]
    maps = [frame_features(f, PoolExtractor(), dtype=np.float32) for f in frames]
    full = aggregate(samples.xyz, samples.normal, frames, maps, CFG)
    chunked = aggregate(samples.xyz, samples.normal, frames, maps, CFG.model_copy(update={"chunk_points": 997}))
    np.testing.assert_array_equal(full.num_obs, chunked.num_obs)
    np.testing.assert_allclose(full.feats, chunked.feats, rtol=1e-6, atol=1e-7)

    cells = np.floor(samples.xyz[:, :2] / 7.0).astype(np.int64)
    _, groups = np.unique(cells, axis=0, return_inverse=True)
    groups = groups.ravel()
    pooled = aggregate(samples.xyz, samples.normal, frames, maps, CFG.model_copy(update={"chunk_points": 1500}), groups=groups)
    G = groups.max() + 1
    w = full.weight.astype(np.float64)
    num = np.zeros((G, maps[0].shape[2]))
    np.add.at(num, groups, full.feats * w[:, None])
    den = np.bincount(groups, weights=w, minlength=G)
    ok = den > 0
    np.testing.assert_allclose(pooled.feats[ok], num[ok] / den[ok, None], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(pooled.num_obs, np.bincount(groups, weights=full.num_obs, minlength=G))

    # sparse group ids (no contiguous block to update) give the same per-point results
    spread = aggregate(samples.xyz, samples.normal, frames, maps, CFG, groups=np.arange(len(samples)) * 7, num_groups=7 * len(samples))
    np.testing.assert_allclose(spread.feats[::7], full.feats, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(spread.semantic[::7], full.semantic)
    np.testing.assert_array_equal(spread.confidence[::7], full.confidence)
    assert (spread.num_obs.reshape(-1, 7)[:, 1:] == 0).all()


def test_semantic_vote_matches_face_classes(toy_scene, samples):
    maps = _const_maps(toy_scene.frames, [0.0] * 9, 1)
    agg = aggregate(samples.xyz, samples.normal, toy_scene.frames, maps, CFG)
    seen = agg.num_obs > 0
    assert (agg.semantic[seen] == samples.semantic[seen]).mean() > 0.95
    assert ((agg.confidence[seen] > 0) & (agg.confidence[seen] <= 1)).all()
    assert np.median(agg.confidence[seen]) == 1.0


def test_segmenter_hook_labels_frames_without_semantics(toy_scene, samples):
    frames = toy_scene.frames[:3]
    maps = _const_maps(frames, [0.0] * 3, 1)
    labelled = aggregate(samples.xyz, samples.normal, frames, maps, CFG)
    painted = []
    for f in frames:
        g = copy.copy(f)
        g.rgb, g.semantic = colorize(f.semantic), None
        painted.append(g)
    decoded = aggregate(samples.xyz, samples.normal, painted, maps, CFG.model_copy(update={"segmenter": "palette"}))
    np.testing.assert_array_equal(decoded.semantic, labelled.semantic)
    np.testing.assert_allclose(decoded.confidence, labelled.confidence)
    unlabelled = aggregate(samples.xyz, samples.normal, painted, maps, CFG)
    assert unlabelled.frames_without_semantics == 3 and (unlabelled.confidence == 0).all()
    np.testing.assert_array_equal(unlabelled.num_obs, labelled.num_obs)

    @register_segmenter("test_bad_shape")
    def _bad(rgb):
        return np.zeros((2, 2), np.uint8)

    with pytest.raises(ValueError, match="segmenter output"):
        segment(get_segmenter("test_bad_shape"), frames[0].rgb, "f")
    with pytest.raises(ValueError, match="unknown segmenter"):
        get_segmenter("nope")


def test_unusable_frames_are_skipped_with_reasons(toy_scene, samples):
    good = toy_scene.frames[NADIR]
    nan_depth, no_cam, no_depth = (copy.copy(good) for _ in range(3))
    nan_depth.name, no_cam.name, no_depth.name = "nan", "nocam", "nodepth"
    nan_depth.depth = good.depth.copy()
    nan_depth.depth[5, 5] = np.nan
    no_cam.camera = None
    no_depth.depth = None
    maps = _const_maps([good] * 4, [1.0, 2.0, 3.0, 4.0], 1)
    agg = aggregate(samples.xyz, samples.normal, [good, nan_depth, no_cam, no_depth], maps, CFG)
    assert agg.skipped_frames == [("nan", "NaN depth"), ("nocam", "no camera"), ("nodepth", "no depth map")]
    assert agg.summary()["frames_skipped"] == 3 and agg.summary()["frames_used"] == 1
    only = aggregate(samples.xyz, samples.normal, [good], maps[:1], CFG)
    np.testing.assert_array_equal(agg.feats, only.feats)
    np.testing.assert_array_equal(agg.num_obs, only.num_obs)


def test_bilinear_sampling_interpolates_between_pixel_centres(toy_scene, samples):
    frame = toy_scene.frames[NADIR]
    ramp = np.broadcast_to(np.arange(128, dtype=np.float32)[None, :, None], (128, 128, 1)).copy()
    agg = aggregate(samples.xyz, samples.normal, [frame], [ramp], CFG.model_copy(update={"sampling": "bilinear"}))
    seen = np.flatnonzero(agg.num_obs > 0)
    u = frame.camera.project(samples.xyz[seen])[0][:, 0]
    inner = (u > 0.5) & (u < 127.5)
    np.testing.assert_allclose(agg.feats[seen[inner], 0], u[inner] - 0.5, atol=1e-4)


def test_input_validation(toy_scene, samples):
    frame = toy_scene.frames[NADIR]
    with pytest.raises(ValueError, match="groups"):
        aggregate(samples.xyz, samples.normal, [frame], _const_maps([frame], [1]), CFG, groups=np.full(len(samples), 5), num_groups=3)
    with pytest.raises(ValueError, match="features of frame"):
        aggregate(samples.xyz, samples.normal, [frame], [np.zeros((64, 64, 2), np.float32)], CFG)
    with pytest.raises(ValueError, match="must both be"):
        aggregate(samples.xyz, samples.normal[:5], [frame], _const_maps([frame], [1]), CFG)
