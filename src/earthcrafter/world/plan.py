"""SitePlan: the mutable state a biome recipe fills in before the mesh is assembled."""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from earthcrafter.semantics import CLASS_ID
from earthcrafter.world.config import WorldConfig
from earthcrafter.world.grid import SiteGrid
from earthcrafter.world.noise import NoiseField
from earthcrafter.world.shapes import MeshParts

C = CLASS_ID  # short alias used across the world package


def stream_seed(seed: int, index: int, name: str) -> int:
    """Stable 63-bit seed for one named random stream of one site.

    Each subsystem draws from its own stream, so changing how many numbers one of them
    uses never shifts the others.
    """
    digest = hashlib.blake2b(f"{seed}:{index}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@dataclass
class BuildingRecord:
    """One closed building prism, kept for metadata and checks."""

    footprint: np.ndarray  # [K, 2] CCW, world xy
    z_base: float
    z_top: float  # eave (flat roofs: roof) height
    roof: str  # flat | gable | hip
    kind: str  # house | midrise | tower | warehouse | barn | ...

    @property
    def area(self) -> float:
        x, y = self.footprint[:, 0], self.footprint[:, 1]
        return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


@dataclass
class SitePlan:
    config: WorldConfig
    index: int
    biome: str
    grid: SiteGrid
    H: np.ndarray  # [n+1, n+1] terrain heights (metres)
    ground: np.ndarray  # [n, n] uint8 class per cell
    water_level: np.ndarray  # [n, n] float, NaN where no water
    tone: np.ndarray  # [n, n, 3] float32 base colour override (NaN = class default)
    stripe: np.ndarray  # [n, n, 3] float32 (angle rad, period m, amplitude); period 0 = none
    occupied: np.ndarray  # [n, n] bool: cells taken by buildings and other solid objects
    forest: np.ndarray  # [n, n] float32 tree probability per scatter slot
    parts: MeshParts = field(default_factory=MeshParts)
    buildings: list[BuildingRecord] = field(default_factory=list)
    roads: list = field(default_factory=list)  # list[roads.Road], only pieces inside the site
    counts: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    base_elevation: float = 0.0
    marks: list = field(default_factory=list)  # (stage, perf_counter, process_time) when a stage ended

    @classmethod
    def empty(cls, config: WorldConfig, index: int, biome: str) -> "SitePlan":
        n = config.cells
        grid = SiteGrid(n, config.cell_m)
        return cls(
            config=config,
            index=index,
            biome=biome,
            grid=grid,
            H=np.zeros((n + 1, n + 1)),
            ground=np.full((n, n), C["grass_lawn"], np.uint8),
            water_level=np.full((n, n), np.nan),
            tone=np.full((n, n, 3), np.nan, np.float32),
            stripe=np.zeros((n, n, 3), np.float32),
            occupied=np.zeros((n, n), bool),
            forest=np.zeros((n, n), np.float32),
        )

    def mark(self, stage: str) -> None:
        """Record that ``stage`` just finished (for timing breakdowns; no effect on the output)."""
        self.marks.append((stage, time.perf_counter(), time.process_time()))

    # ------------------------------------------------------------------ randomness

    def rng(self, name: str) -> np.random.Generator:
        return np.random.default_rng(stream_seed(self.config.seed, self.index, name))

    def noise(self, name: str) -> NoiseField:
        return NoiseField(stream_seed(self.config.seed, self.index, "noise:" + name))

    # ------------------------------------------------------------------ queries

    @property
    def water(self) -> np.ndarray:
        """Cells covered by water, ``[n, n]`` bool."""
        return np.isfinite(self.water_level)

    def land(self) -> np.ndarray:
        return ~self.water

    def paint(self, mask: np.ndarray, cls: int | str, tone=None, stripe=None) -> None:
        """Set the ground class (and optional colour override / stripes) of ``mask`` cells."""
        cid = C[cls] if isinstance(cls, str) else int(cls)
        idx = np.nonzero(mask)
        self.ground[idx] = cid
        self.tone[idx] = np.nan if tone is None else np.asarray(tone, np.float32)
        self.stripe[idx] = 0.0 if stripe is None else np.asarray(stripe, np.float32)

    def z(self, x, y) -> np.ndarray:
        """Terrain surface height at points (exact on the terrain triangles)."""
        return self.grid.height_at(self.H, x, y)

    def footprint_z(self, poly: np.ndarray) -> tuple[float, float]:
        """(min, max) terrain height under a polygon, sampled at its corners and centre."""
        pts = np.concatenate([poly, poly.mean(0, keepdims=True)])
        z = self.z(pts[:, 0], pts[:, 1])
        return float(z.min()), float(z.max())
