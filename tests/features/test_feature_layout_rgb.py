import numpy as np
import pytest

from earthcrafter.features.base import cross_rgb, frame_features, normals_from_depth
from earthcrafter.features.layout import (
    CROSS_OFFSETS,
    FEATURE_LAYOUT,
    NUM_FEATURES,
    feature_layout,
    layout_channels,
    layout_from_json,
    layout_to_json,
)
from ec_toy_scene import PoolExtractor


def test_paper_layout_is_66_contiguous_channels():
    assert NUM_FEATURES == 66
    assert list(FEATURE_LAYOUT) == ["f0", "f1", "f2", "f_rgb", "f_n"]
    assert [(s.start, s.stop) for s in FEATURE_LAYOUT.values()] == [(0, 16), (16, 32), (32, 48), (48, 63), (63, 66)]


def test_custom_layout_and_json_round_trip():
    lay = feature_layout({"dino": 768})
    assert lay["f_rgb"] == slice(768, 783) and layout_channels(lay) == 786
    assert layout_from_json(layout_to_json(lay)) == lay
    with pytest.raises(ValueError, match="reserved"):
        feature_layout({"f_n": 3})
    with pytest.raises(ValueError, match="start, stop"):
        layout_from_json('{"f0": [4, 2]}')


def test_cross_rgb_matches_explicit_neighbours_with_replicated_border():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    out = cross_rgb(img)
    assert out.shape == (7, 9, 15) and out.dtype == np.float32
    for r in range(7):
        for c in range(9):
            for k, (dr, dc) in enumerate(CROSS_OFFSETS):
                rr, cc = min(max(r + dr, 0), 6), min(max(c + dc, 0), 8)
                np.testing.assert_array_equal(out[r, c, 3 * k : 3 * k + 3], img[rr, cc] / np.float32(255))
    with pytest.raises(ValueError, match="uint8"):
        cross_rgb(img.astype(np.float32))


def test_normals_from_depth_match_rendered_normals_on_flat_ground(toy_scene):
    fr = toy_scene.frames[1]  # oblique view
    est = normals_from_depth(fr.depth, fr.camera)
    # interior pixels of the flat pad around the building are horizontal ground
    pts = fr.camera.unproject_depth(fr.depth)
    flat = (np.abs(pts[..., 2]) < 1e-3) & (np.abs(pts[..., 0] - 60) < 14) & (pts[..., 1] < 50) & (pts[..., 1] > 46.5)
    assert flat.sum() > 50
    cos = np.einsum("hwc,hwc->hw", est, fr.normal)[flat]
    assert np.median(cos) > 0.999


def test_frame_features_assembles_the_layout(toy_scene):
    fr = toy_scene.frames[0]
    ex = PoolExtractor()
    out = frame_features(fr, ex, dtype=np.float32)
    assert out.shape == (128, 128, 66)
    np.testing.assert_allclose(out[..., FEATURE_LAYOUT["f_rgb"]], cross_rgb(fr.rgb))
    np.testing.assert_allclose(out[..., FEATURE_LAYOUT["f_n"]], fr.normal)
    np.testing.assert_allclose(out[..., :48], ex(fr.rgb))


def test_frame_features_needs_normals_or_depth(toy_scene):
    import copy

    fr = copy.copy(toy_scene.frames[0])
    fr.normal = None
    via_depth = frame_features(fr, PoolExtractor(), dtype=np.float32)
    assert np.isfinite(via_depth).all()
    fr.depth = None
    with pytest.raises(ValueError, match="neither a normal nor a depth"):
        frame_features(fr, PoolExtractor())
