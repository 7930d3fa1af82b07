"""Session fixtures: the synthetic town, its frames and LiDAR-like points."""

from __future__ import annotations

import pytest

from earthcrafter.geometry.raycast import Shading, render_frames
from earthcrafter.io.scene import Frame, Mesh, Points

from meshing_synth import aerial_cameras, make_town, sample_points


@pytest.fixture(scope="session")
def town() -> Mesh:
    return make_town()


@pytest.fixture(scope="session")
def town_frames(town) -> list[Frame]:
    flat = Shading(ambient=1.0, shadows=False)  # rgb == albedo, so colours can be checked
    return render_frames(town, aerial_cameras(), shading=flat)


@pytest.fixture(scope="session")
def town_points(town) -> Points:
    return sample_points(town, 60_000, seed=1)
