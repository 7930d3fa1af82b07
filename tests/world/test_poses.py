"""Camera planner on arbitrary meshes (no site extent given): clearance, visibility, coverage."""

import numpy as np
import pytest

from earthcrafter.geometry.poses import halton, plan_cameras
from earthcrafter.geometry.raycast import MeshRaycaster
from earthcrafter.io.scene import Mesh
from earthcrafter.world.shapes import box, instance

ORIGIN = np.array([5000.0, -2000.0, 300.0])  # far from zero, like an imported scan


def _scan_like_mesh() -> tuple[Mesh, dict]:
    """A 300 x 200 m bumpy ground, a 120 m tower and a 25 m-high slab on four pillars."""
    n = 60
    x, y = np.meshgrid(np.linspace(0, 300, n + 1), np.linspace(0, 200, n + 1))
    z = 6 * np.sin(x / 40) * np.cos(y / 30)
    V = np.stack([x, y, z], -1).reshape(-1, 3)
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    a = (i * (n + 1) + j).ravel()
    F = np.concatenate([np.stack([a, a + 1, a + n + 2], 1), np.stack([a, a + n + 2, a + n + 1], 1)])
    parts_v, parts_f = [V], [F]
    tower = {"xy": (200.0, 100.0), "half": 10.0, "top": 120.0}
    slab = {"lo": (40.0, 40.0), "hi": (120.0, 120.0), "z": (25.0, 27.0)}
    bv, bf = box((20.0, 20.0, 130.0))
    tv, tf = instance(bv, bf, np.array([[200.0, 100.0, -10.0]]))
    parts_v.append(tv)
    parts_f.append(tf + sum(len(p) for p in parts_v[:-1]))
    sv, sf = box((80.0, 80.0, 2.0))
    sv, sf = instance(sv, sf, np.array([[80.0, 80.0, 25.0]]))
    parts_v.append(sv)
    parts_f.append(sf + sum(len(p) for p in parts_v[:-1]))
    for px, py in ((42, 42), (118, 42), (42, 118), (118, 118)):
        pv, pf = instance(*box((2.0, 2.0, 30.0)), np.array([[px, py, -5.0]]))
        parts_v.append(pv)
        parts_f.append(pf + sum(len(p) for p in parts_v[:-1]))
    V = np.concatenate(parts_v) + ORIGIN
    F = np.concatenate(parts_f)
    return Mesh(V, F, None, np.ones(len(F), np.uint8)), {"tower": tower, "slab": slab}


@pytest.fixture(scope="module")
def scan():
    return _scan_like_mesh()


def test_halton_is_the_radical_inverse():
    np.testing.assert_allclose(halton(np.arange(1, 8), 2), [0.5, 0.25, 0.75, 0.125, 0.625, 0.375, 0.875])
    np.testing.assert_allclose(halton(np.arange(1, 5), 3), [1 / 3, 2 / 3, 1 / 9, 4 / 9])


def test_cameras_on_a_foreign_mesh(scan):
    mesh, parts = scan
    caster = MeshRaycaster(mesh)
    stats = {}
    altitudes = (60.0, 110.0, 180.0)
    cams = plan_cameras(caster, count=18, width=48, height=48, fov_deg=60, altitudes_m=altitudes,
                        pitch_deg_range=(35, 65), nadir_fraction=0.2, seed=3, stats=stats)
    assert len(cams) == 18 and stats["accepted"] == 18
    slab, tower = parts["slab"], parts["tower"]
    lo = mesh.vertices.min(0)
    hi = mesh.vertices.max(0)
    pitches = []
    for cam in cams:
        eye = cam.center - ORIGIN
        # Never inside the tower, never under the slab, always above the ground (+ clearance).
        assert not (abs(eye[0] - tower["xy"][0]) < tower["half"] and abs(eye[1] - tower["xy"][1]) < tower["half"] and eye[2] < tower["top"])
        under_slab = slab["lo"][0] <= eye[0] <= slab["hi"][0] and slab["lo"][1] <= eye[1] <= slab["hi"][1]
        assert not (under_slab and eye[2] < slab["z"][1])
        assert eye[2] > 6.0 + 2.0
        # The central ray reaches a surface inside the mesh's xy bounds.
        o, d = cam.pixel_rays()
        hit = caster.cast(o[24:25, 24:25], d[24:25, 24:25])["t"][0, 0]
        assert np.isfinite(hit)
        p = o[24, 24] + hit * d[24, 24]
        assert (p[:2] >= lo[:2] - 1).all() and (p[:2] <= hi[:2] + 1).all()
        # Mostly valid content in the full frame.
        frame = caster.render(cam, "f")
        assert np.isfinite(frame.depth).mean() >= 0.6
        pitches.append(np.degrees(np.arcsin(-cam.forward[2])))
        # Altitude above the look-at point is one of the requested ones (+-10 %).
        rise = cam.center[2] - p[2]
        assert any(0.85 * a <= rise <= 1.15 * a for a in altitudes), rise
    pitches = np.array(pitches)
    assert ((pitches >= 79.5) & (pitches <= 88.5)).sum() >= 3
    assert (pitches[pitches < 79.5] >= 34.9).all() and (pitches[pitches < 79.5] <= 65.1).all()


def test_deterministic_per_seed(scan):
    mesh, _ = scan
    kw = dict(count=6, width=32, height=32, fov_deg=50, altitudes_m=(80.0, 150.0))
    a = plan_cameras(mesh, seed=1, **kw)
    b = plan_cameras(mesh, seed=1, **kw)
    c = plan_cameras(mesh, seed=2, **kw)
    assert all(np.array_equal(x.world_to_camera, y.world_to_camera) for x, y in zip(a, b))
    assert not all(np.allclose(x.world_to_camera, y.world_to_camera) for x, y in zip(a, c))


def test_default_altitudes_and_extent_follow_the_mesh(scan):
    mesh, _ = scan
    cams = plan_cameras(mesh, count=4, width=32, height=32, fov_deg=60, seed=0)
    span = 300.0  # the longer side of the mesh bounds
    for cam in cams:
        assert cam.center[2] - ORIGIN[2] < 0.67 * span * 1.1 + 130  # never absurdly high
        assert cam.center[2] - ORIGIN[2] > 0.25 * span * 0.9 - 10


def test_bad_requests_fail_clearly(scan):
    mesh, _ = scan
    with pytest.raises(ValueError, match="count"):
        plan_cameras(mesh, count=-1, width=8, height=8, fov_deg=60)
    with pytest.raises(ValueError, match="pitch_deg_range"):
        plan_cameras(mesh, count=1, width=8, height=8, fov_deg=60, pitch_deg_range=(70, 20))
    with pytest.raises(ValueError, match="extent"):
        plan_cameras(mesh, count=1, width=8, height=8, fov_deg=60, site_extent=(0, 0, 0, 10))
    with pytest.raises(ValueError, match="empty mesh"):
        plan_cameras(Mesh(np.zeros((0, 3)), np.zeros((0, 3), int)), count=1, width=8, height=8, fov_deg=60)
    # An extent far away from the mesh: nothing valid to look at.
    with pytest.raises(ValueError, match="no valid camera"):
        plan_cameras(mesh, count=2, width=8, height=8, fov_deg=60, site_extent=(0, 0, 100, 100), max_attempts=5)
    assert plan_cameras(mesh, count=0, width=8, height=8, fov_deg=60) == []


def test_low_cameras_are_rejected_near_structures(scan):
    """Low, flat views around the tower and the slab: candidates that would sit inside the
    tower, under the slab or too close above a surface are rejected, the rest kept."""
    mesh, parts = scan
    stats = {}
    cams = plan_cameras(mesh, count=16, width=32, height=32, fov_deg=70, altitudes_m=(12.0, 22.0), pitch_deg_range=(20, 35),
                        nadir_fraction=0.0, seed=5, clearance_m=4.0, min_coverage=0.5, stats=stats)
    assert stats.get("rejected_clearance", 0) + stats.get("rejected_under_geometry", 0) > 0, stats
    caster = MeshRaycaster(mesh)
    for cam in cams:
        eye = cam.center
        up = caster.cast(eye[None], np.array([[0.0, 0.0, 1.0]]))["t"][0]
        assert not np.isfinite(up)  # nothing overhead
        below = caster.height_at(eye[None, :2], z_top=eye[2] + 500)[0]
        assert np.isnan(below) or eye[2] - below >= 4.0 - 1e-6  # NaN: outside the scan, looking in
