"""Heuristic aerial camera poses for any mesh.

Cameras are spread over several altitudes, mostly oblique with some near-nadir views, and
each one looks at a surface point inside the site found by ray casting. A candidate is
kept only when

- it has clearance: the eye is ``clearance_m`` above every surface within a small radius
  below it (so it is never under the terrain) and nothing is above it (so it is never inside
  a building, under a bridge or under a tree crown);
- its target is visible: the central ray reaches the target unobstructed;
- it sees valid content: at least ``min_coverage`` of a low-resolution probe of its rays hit
  a surface inside the site extent (little sky, little outside the site).

Candidates are tried along a Halton sequence of targets with rotating azimuths, pitching
steeper as attempts fail, so the planner is deterministic for a seed and finds valid views
on terrain, in cities and on imported scans alike. Site extent defaults to the mesh bounds.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

import numpy as np

from earthcrafter.geometry.cameras import Camera, intrinsics_from_fov, look_at
from earthcrafter.geometry.raycast import MeshRaycaster
from earthcrafter.io.scene import Mesh

log = logging.getLogger(__name__)

GOLDEN_ANGLE = np.pi * (3.0 - np.sqrt(5.0))
PROBE = 24  # probe rays per image side for the coverage check


def halton(index: np.ndarray, base: int) -> np.ndarray:
    """Radical inverse of integers ``index`` in ``base`` (a low-discrepancy sequence in [0, 1))."""
    index = np.asarray(index, dtype=np.int64).copy()
    out = np.zeros(index.shape)
    f = 1.0 / base
    while np.any(index > 0):
        out += f * (index % base)
        index //= base
        f /= base
    return out


def plan_cameras(
    scene: MeshRaycaster | Mesh,
    *,
    count: int,
    width: int,
    height: int,
    fov_deg: float,
    altitudes_m: Sequence[float] | None = None,
    pitch_deg_range: tuple[float, float] = (35.0, 70.0),
    seed: int = 0,
    site_extent: tuple[float, float, float, float] | None = None,
    nadir_fraction: float = 0.15,
    min_coverage: float = 0.8,
    clearance_m: float | None = None,
    max_attempts: int = 80,
    stats: dict | None = None,
) -> list[Camera]:
    """Plan ``count`` cameras looking at the mesh.

    Args:
        scene: a mesh or a ready :class:`MeshRaycaster` (reused, not rebuilt).
        altitudes_m: heights of the eye above its look-at point, cycled over the cameras;
            default ``(0.25, 0.42, 0.67) x`` the extent's longer side.
        pitch_deg_range: oblique pitch below the horizon (90 = straight down).
        site_extent: ``(xmin, ymin, xmax, ymax)``; default the mesh's xy bounds.
        nadir_fraction: share of near-nadir (80-88 degree) views, spread evenly over the list.
        min_coverage: least share of probe rays that must hit the mesh inside the extent;
            relaxed down to half of it over the last third of the attempts for a camera.
        clearance_m: least height above the surface below the eye; default
            ``max(2, 0.02 x extent)``.
        stats: if given, filled with counts of accepted cameras and rejection reasons.

    Returns the cameras (OpenCV, world-to-camera). Raises ValueError when no camera at all
    satisfies the checks; logs a warning when fewer than ``count`` do.
    """
    if count < 0:
        raise ValueError(f"plan_cameras: count must be >= 0, got {count}")
    lo_pitch, hi_pitch = pitch_deg_range
    if not (0.0 < lo_pitch <= hi_pitch <= 90.0):
        raise ValueError(f"plan_cameras: pitch_deg_range must satisfy 0 < lo <= hi <= 90, got {pitch_deg_range}")
    if not (0.0 < min_coverage <= 1.0):
        raise ValueError(f"plan_cameras: min_coverage must be in (0, 1], got {min_coverage}")
    caster = scene if isinstance(scene, MeshRaycaster) else MeshRaycaster(scene)
    V = caster.mesh.vertices
    if site_extent is None:
        site_extent = (float(V[:, 0].min()), float(V[:, 1].min()), float(V[:, 0].max()), float(V[:, 1].max()))
    x0, y0, x1, y1 = (float(v) for v in site_extent)
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"plan_cameras: site extent must have positive area, got {site_extent}")
    span = max(x1 - x0, y1 - y0)
    altitudes = tuple(altitudes_m) if altitudes_m else tuple(f * span for f in (0.25, 0.42, 0.67))
    if min(altitudes) <= 0:
        raise ValueError(f"plan_cameras: altitudes must be positive, got {altitudes}")
    clearance = max(2.0, 0.02 * span) if clearance_m is None else float(clearance_m)
    z_top = float(V[:, 2].max()) + max(altitudes) + 10.0

    rng = np.random.default_rng(seed)
    K = intrinsics_from_fov(width, height, fov_deg)
    probe = _probe_camera(K, width, height)
    reasons: Counter = Counter()
    cameras: list[Camera] = []
    halton_start = int(rng.integers(1, 10_000))
    cursor = 0
    nadir_every = 1.0 / nadir_fraction if nadir_fraction > 0 else np.inf

    for k in range(count):
        nadir = nadir_fraction > 0 and int((k + 1) / nadir_every) > int(k / nadir_every)
        altitude = altitudes[k % len(altitudes)] * rng.uniform(0.9, 1.1)
        azimuth0 = k * GOLDEN_ANGLE + rng.uniform(-0.2, 0.2)
        for attempt in range(max_attempts):
            i = halton_start + cursor
            cursor += 1
            tx = x0 + (x1 - x0) * (0.08 + 0.84 * halton(i, 2))
            ty = y0 + (y1 - y0) * (0.08 + 0.84 * halton(i, 3))
            tz = caster.height_at(np.array([[tx, ty]]), z_top=z_top)[0]
            if not np.isfinite(tz):
                reasons["no_surface"] += 1
                continue
            progress = attempt / max(max_attempts - 1, 1)
            if nadir:
                pitch = rng.uniform(80.0, 88.0)
            else:  # steepen the pitch range as attempts fail
                lo = lo_pitch + (hi_pitch - lo_pitch) * min(1.0, 1.5 * progress) * 0.7
                pitch = rng.uniform(lo, hi_pitch)
            azimuth = azimuth0 + 0.9 * attempt
            target = np.array([tx, ty, tz])
            eye = _eye(target, altitude, np.radians(pitch), azimuth)
            coverage_needed = min_coverage * (1.0 - 0.5 * max(0.0, (progress - 2 / 3) * 3))
            why = _reject(caster, eye, target, probe, (x0, y0, x1, y1), clearance, coverage_needed, z_top)
            if why:
                reasons[why] += 1
                continue
            cameras.append(Camera(K, look_at(eye, target), width, height))
            break
        else:
            reasons["gave_up"] += 1
    if stats is not None:
        stats.update({"accepted": len(cameras), **{f"rejected_{k}": v for k, v in reasons.items()}})
    if count and not cameras:
        raise ValueError(
            f"plan_cameras: no valid camera found in {count * max_attempts} attempts "
            f"(rejections: {dict(reasons)}); check the extent {site_extent}, altitudes {altitudes} "
            f"and pitch range {pitch_deg_range}"
        )
    if len(cameras) < count:
        log.warning("plan_cameras: %d of %d cameras planned; rejections %s", len(cameras), count, dict(reasons))
    else:
        log.debug("plan_cameras: %d cameras; rejections %s", len(cameras), dict(reasons))
    return cameras


def _eye(target: np.ndarray, altitude: float, pitch: float, azimuth: float) -> np.ndarray:
    """Eye ``altitude`` above ``target``, looking at it with ``pitch`` below the horizon."""
    horizontal = altitude / np.tan(pitch)
    return target + np.array([-horizontal * np.cos(azimuth), -horizontal * np.sin(azimuth), altitude])


def _probe_camera(K: np.ndarray, width: int, height: int) -> np.ndarray:
    """Intrinsics of a PROBE x PROBE image with the same field of view."""
    Kp = K.copy()
    Kp[0] *= PROBE / width
    Kp[1] *= PROBE / height
    return Kp


def _reject(caster: MeshRaycaster, eye: np.ndarray, target: np.ndarray, Kp: np.ndarray, extent: tuple,
            clearance: float, coverage: float, z_top: float) -> str | None:
    """Reason a candidate fails, or None when it passes every check."""
    x0, y0, x1, y1 = extent
    # 1. Clearance below (terrain, roofs, crowns under the eye and on a ring of radius
    #    max(clearance, 5 m) around it) and nothing above.
    r = max(clearance, 5.0)
    ring = np.array([[0, 0]] + [[np.cos(a), np.sin(a)] for a in np.linspace(0, 2 * np.pi, 8, endpoint=False)]) * r
    below = caster.height_at(eye[:2] + ring, z_top=z_top)
    below = below[np.isfinite(below)]
    if below.size and eye[2] < below.max() + clearance:
        return "clearance"
    up = caster.cast(eye[None], np.array([[0.0, 0.0, 1.0]]))["t"][0]
    if np.isfinite(up):
        return "under_geometry"
    # 2. The target is in plain view.
    d = target - eye
    dist = np.linalg.norm(d)
    t = caster.cast(eye[None], (d / dist)[None])["t"][0]
    if not np.isfinite(t) or t < dist - max(1.0, 0.01 * dist):
        return "occluded"
    # 3. Mostly valid content inside the site.
    cam = Camera(Kp, look_at(eye, target), PROBE, PROBE)
    origins, dirs = cam.pixel_rays()
    hit = caster.cast(origins, dirs)["t"]
    ok = np.isfinite(hit)
    pts = origins[ok] + dirs[ok] * hit[ok, None]
    tol = 1e-3 * max(x1 - x0, y1 - y0)
    inside = (pts[:, 0] >= x0 - tol) & (pts[:, 0] <= x1 + tol) & (pts[:, 1] >= y0 - tol) & (pts[:, 1] <= y1 + tol)
    if inside.sum() < coverage * hit.size:
        return "coverage"
    return None
