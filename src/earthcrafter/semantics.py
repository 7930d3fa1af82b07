"""The 25 semantic classes of earthcrafter (one table: id, name, colour) and the
ASPRS LAS classification mapping onto it."""

from __future__ import annotations

import numpy as np

# (id, name, RGB colour). Colours follow common land-cover palettes so renders read at a glance.
CLASSES: tuple[tuple[int, str, tuple[int, int, int]], ...] = (
    (0, "unlabeled", (0, 0, 0)),
    (1, "building_roof", (200, 70, 60)),
    (2, "building_facade", (240, 150, 120)),
    (3, "road", (90, 90, 90)),
    (4, "parking_paved", (150, 150, 160)),
    (5, "sidewalk_path", (210, 200, 180)),
    (6, "railway", (110, 70, 40)),
    (7, "bridge", (170, 110, 200)),
    (8, "vehicle", (20, 200, 230)),
    (9, "tree", (20, 110, 30)),
    (10, "shrub", (90, 150, 50)),
    (11, "grass_lawn", (140, 210, 90)),
    (12, "cropland", (220, 210, 90)),
    (13, "bare_soil", (150, 110, 70)),
    (14, "sand_desert", (240, 220, 160)),
    (15, "rock_cliff", (120, 110, 100)),
    (16, "snow_ice", (250, 250, 255)),
    (17, "river_lake", (40, 100, 220)),
    (18, "sea", (10, 50, 140)),
    (19, "wetland", (80, 160, 150)),
    (20, "sports_field", (60, 180, 110)),
    (21, "swimming_pool", (60, 220, 250)),
    (22, "construction_site", (230, 160, 40)),
    (23, "tower_utility", (250, 80, 180)),
    (24, "other_manmade", (180, 180, 60)),
)

NUM_CLASSES = len(CLASSES)
CLASS_NAMES: tuple[str, ...] = tuple(name for _, name, _ in CLASSES)
CLASS_ID: dict[str, int] = {name: i for i, name, _ in CLASSES}
PALETTE = np.array([rgb for _, _, rgb in CLASSES], dtype=np.uint8)

# ASPRS LAS 1.4 standard classification codes -> earthcrafter class id.
# Codes absent here are "unknown" for the importer (it counts and reports them).
ASPRS_TO_CLASS: dict[int, int] = {
    0: CLASS_ID["unlabeled"],  # created, never classified
    1: CLASS_ID["unlabeled"],  # unclassified
    2: CLASS_ID["bare_soil"],  # ground
    3: CLASS_ID["grass_lawn"],  # low vegetation
    4: CLASS_ID["shrub"],  # medium vegetation
    5: CLASS_ID["tree"],  # high vegetation
    6: CLASS_ID["building_roof"],  # building (aerial LiDAR sees roofs)
    7: CLASS_ID["unlabeled"],  # low point (noise)
    8: CLASS_ID["unlabeled"],  # model key-point (LAS 1.2 reserved)
    9: CLASS_ID["river_lake"],  # water
    10: CLASS_ID["railway"],  # rail
    11: CLASS_ID["road"],  # road surface
    12: CLASS_ID["unlabeled"],  # overlap (LAS 1.2)
    13: CLASS_ID["tower_utility"],  # wire guard
    14: CLASS_ID["tower_utility"],  # wire conductor
    15: CLASS_ID["tower_utility"],  # transmission tower
    16: CLASS_ID["tower_utility"],  # wire-structure connector
    17: CLASS_ID["bridge"],  # bridge deck
    18: CLASS_ID["unlabeled"],  # high noise
    19: CLASS_ID["other_manmade"],  # overhead structure
    20: CLASS_ID["unlabeled"],  # ignored ground
    21: CLASS_ID["snow_ice"],  # snow
    22: CLASS_ID["unlabeled"],  # temporal exclusion
}

# ASPRS codes that mark noise: importers drop these points (and count them).
ASPRS_NOISE = frozenset({7, 18})


def colorize(labels: np.ndarray) -> np.ndarray:
    """Map an integer label array of any shape to uint8 RGB (``labels.shape + (3,)``)."""
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise ValueError(
            f"semantic labels must lie in [0, {NUM_CLASSES - 1}], got range "
            f"[{labels.min()}, {labels.max()}]"
        )
    return PALETTE[labels]


def classes_of_colours(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(class ids [...] int64, found [...] bool) of RGB colours [..., 3] painted with :data:`PALETTE`
    (the inverse of :func:`colorize`); a colour not in the palette has id 0 and found False."""
    rgb = np.asarray(rgb).astype(np.int64)
    code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    pal = PALETTE.astype(np.int64)
    pal = (pal[:, 0] << 16) | (pal[:, 1] << 8) | pal[:, 2]
    order = np.argsort(pal)
    pos = np.clip(np.searchsorted(pal[order], code), 0, len(pal) - 1)
    found = pal[order][pos] == code
    return np.where(found, order[pos], 0), found
