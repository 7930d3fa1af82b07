"""generate_site: one synthetic Aerial-Earth3D-style scene, a pure function of (config, index)."""

from __future__ import annotations

import time
from contextlib import contextmanager

import numpy as np
from tqdm.auto import tqdm

from earthcrafter.geometry.poses import plan_cameras
from earthcrafter.geometry.raycast import MeshRaycaster, Shading
from earthcrafter.io.scene import Frame, Mesh, Scene
from earthcrafter.world.biomes import RECIPES
from earthcrafter.world.config import BIOMES, WorldConfig
from earthcrafter.world.mesh import class_histogram, site_mesh
from earthcrafter.world.plan import SitePlan, stream_seed

GENERATOR_VERSION = "earthcrafter.world/1.0"


def site_biome(config: WorldConfig, index: int) -> str:
    """Biome of site ``index``: the fixed cycle if configured, else a seeded weighted draw."""
    if index < 0:
        raise ValueError(f"site index must be >= 0, got {index}")
    if config.biomes:
        return config.biomes[index % len(config.biomes)]
    names = [b for b in BIOMES if config.biome_weights.get(b, 0.0) > 0]
    w = np.array([config.biome_weights[b] for b in names], dtype=np.float64)
    rng = np.random.default_rng(stream_seed(config.seed, index, "biome"))
    return names[int(rng.choice(len(names), p=w / w.sum()))]


def scene_id(config: WorldConfig, index: int) -> str:
    return f"syn_s{config.seed}_{index:04d}"


def plan_site(config: WorldConfig, index: int) -> SitePlan:
    """Lay out site ``index``: terrain, water, land cover, networks, buildings, objects."""
    plan = SitePlan.empty(config, index, site_biome(config, index))
    RECIPES[plan.biome](plan)
    return plan


def site_shading(config: WorldConfig, index: int) -> Shading:
    rng = np.random.default_rng(stream_seed(config.seed, index, "sun"))
    s = config.shading
    return Shading(
        sun_azimuth_deg=float(rng.uniform(*s.sun_azimuth_deg)),
        sun_elevation_deg=float(rng.uniform(*s.sun_elevation_deg)),
        ambient=s.ambient,
        shadows=s.shadows,
    )


@contextmanager
def _timed(timings: dict | None, key: str):
    """Add the wall seconds of the block to ``timings[key]`` and its CPU seconds (all
    threads of the process) to ``timings[key + "_cpu"]``."""
    t0, c0 = time.perf_counter(), time.process_time()
    yield
    if timings is not None:
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - t0
        timings[key + "_cpu"] = timings.get(key + "_cpu", 0.0) + time.process_time() - c0


def _split_layout_time(plan: SitePlan, t0: float, c0: float, timings: dict) -> None:
    """Split the layout time at the recipe's "terrain" mark: terrain (relief, water, land
    cover) and objects (networks, buildings, vegetation, everything after)."""
    t1, c1 = time.perf_counter(), time.process_time()
    tm, cm = next(((t, c) for name, t, c in plan.marks if name == "terrain"), (t0, c0))
    for key, value in (("terrain", tm - t0), ("objects", t1 - tm), ("terrain_cpu", cm - c0), ("objects_cpu", c1 - cm)):
        timings[key] = timings.get(key, 0.0) + value


def render_site_frames(config: WorldConfig, index: int, mesh: Mesh, caster: MeshRaycaster | None = None,
                       timings: dict | None = None) -> list[Frame]:
    """Plan ``config.frames_per_site`` cameras over the site and ray cast their frames."""
    if config.frames_per_site == 0:
        return []
    caster = caster or MeshRaycaster(mesh)
    with _timed(timings, "cameras"):
        try:
            cams = plan_cameras(
                caster,
                count=config.frames_per_site,
                width=config.image_width,
                height=config.image_height,
                fov_deg=config.fov_deg,
                altitudes_m=config.altitudes,
                pitch_deg_range=config.pitch_deg_range,
                nadir_fraction=config.nadir_fraction,
                seed=stream_seed(config.seed, index, "cameras"),
                site_extent=(0.0, 0.0, config.size_m, config.size_m),
            )
        except ValueError as e:
            raise ValueError(f"site {index} of seed {config.seed}: {e}") from e
    shading = site_shading(config, index)
    frames = []
    with _timed(timings, "frames"):
        for k, cam in enumerate(tqdm(cams, desc=f"site {index} frames", unit="frame", leave=False, disable=None)):
            frames.append(caster.render(cam, f"{k:03d}", shading))
    return frames


def generate_site(config: WorldConfig, index: int, timings: dict | None = None) -> Scene:
    """Generate synthetic site ``index`` of ``config``: mesh, rendered frames and metadata.

    Metadata: source, biome, size_m, cell_m, seed, site_index, generator, extent, base
    elevation, class_histogram (mesh surface area per class name, m^2), object counts,
    skipped placements with their reasons, the sun and the config. Pass ``timings`` (a dict)
    to receive wall seconds per stage (terrain, objects, mesh, bvh, cameras, frames) and
    CPU seconds under the same keys suffixed ``_cpu``.
    """
    t0, c0 = time.perf_counter(), time.process_time()
    plan = plan_site(config, index)
    if timings is not None:
        _split_layout_time(plan, t0, c0, timings)
    with _timed(timings, "mesh"):
        mesh = site_mesh(plan)
    frames: list[Frame] = []
    if config.frames_per_site:
        with _timed(timings, "bvh"):
            caster = MeshRaycaster(mesh)
        frames = render_site_frames(config, index, mesh, caster, timings)
    sun = site_shading(config, index)
    meta = {
        "source": "synthetic",
        "generator": GENERATOR_VERSION,
        "biome": plan.biome,
        "size_m": float(config.size_m),
        "cell_m": float(config.cell_m),
        "seed": int(config.seed),
        "site_index": int(index),
        "extent": [0.0, 0.0, float(config.size_m), float(config.size_m)],
        "crs": "local",
        "origin": [0.0, 0.0, 0.0],
        "base_elevation_m": round(float(plan.base_elevation), 3),
        "class_histogram": class_histogram(mesh),
        "num_faces": int(len(mesh.faces)),
        "num_frames_requested": int(config.frames_per_site),
        "objects": {k: (round(v, 3) if isinstance(v, float) else int(v)) for k, v in sorted(plan.counts.items())},
        "skipped": {k: int(v) for k, v in sorted(plan.skipped.items())},
        "building_footprint_m2": round(float(sum(b.area for b in plan.buildings)), 3),
        "sun": {"azimuth_deg": sun.sun_azimuth_deg, "elevation_deg": sun.sun_elevation_deg},
        "config": config.model_dump(mode="json"),
    }
    return Scene(scene_id(config, index), meta, mesh, None, frames)
