"""The synthetic world: procedural Aerial-Earth3D-style sites (terrain, water, land cover,
roads, buildings, vegetation, objects) with posed multi-view frames.

    from earthcrafter.world import WorldConfig, generate_site
    scene = generate_site(WorldConfig(seed=3), index=0)   # a 600 m site, 48 frames
"""

from earthcrafter.world.config import BIOMES, URBAN_BIOMES, ShadingConfig, WorldConfig
from earthcrafter.world.site import GENERATOR_VERSION, generate_site, plan_site, scene_id, site_biome, site_mesh

__all__ = [
    "BIOMES",
    "URBAN_BIOMES",
    "GENERATOR_VERSION",
    "ShadingConfig",
    "WorldConfig",
    "generate_site",
    "plan_site",
    "scene_id",
    "site_biome",
    "site_mesh",
]
