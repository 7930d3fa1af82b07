"""WorldConfig validation: bad input fails naming the field and value."""

import pydantic
import pytest

from earthcrafter.world import BIOMES, WorldConfig, site_biome


def test_unknown_key_is_named():
    with pytest.raises(pydantic.ValidationError, match="bogus_knob"):
        WorldConfig(bogus_knob=3)
    with pytest.raises(pydantic.ValidationError, match="sun_height"):
        WorldConfig(shading={"sun_height": 3})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"size_m": 100, "cell_m": 3}, "whole multiple"),
        ({"size_m": 20, "cell_m": 2}, "at least 16"),
        ({"pitch_deg_range": (60, 30)}, "pitch_deg_range"),
        ({"camera_altitudes_m": (100, -5)}, "camera_altitudes_m"),
        ({"biomes": ("moon",)}, "moon"),
        ({"biome_weights": {"farmland": 0.0}}, "positive sum"),
        ({"biome_weights": {"volcano": 1.0}}, "volcano"),
        ({"shading": {"sun_elevation_deg": (10, 100)}}, "sun_elevation_deg"),
        ({"frames_per_site": -1}, "frames_per_site"),
    ],
)
def test_bad_values_fail_clearly(kwargs, match):
    with pytest.raises(pydantic.ValidationError, match=match):
        WorldConfig(**kwargs)


def test_biome_choice():
    cfg = WorldConfig(biomes=("desert", "coast"))
    assert [site_biome(cfg, i) for i in range(4)] == ["desert", "coast", "desert", "coast"]
    cfg = WorldConfig(seed=5)
    drawn = [site_biome(cfg, i) for i in range(400)]
    assert drawn == [site_biome(cfg, i) for i in range(400)]
    assert set(drawn) == set(BIOMES)  # every biome has weight by default
    only = WorldConfig(biome_weights={"mountains": 1.0, "farmland": 0.0})
    assert {site_biome(only, i) for i in range(50)} == {"mountains"}
    with pytest.raises(ValueError, match="index"):
        site_biome(cfg, -1)


def test_default_altitudes_scale_with_size():
    assert WorldConfig().altitudes == (150.0, 252.0, 402.0)
    assert WorldConfig(size_m=200).altitudes == pytest.approx((50.0, 84.0, 134.0))
    assert WorldConfig(camera_altitudes_m=(80,)).altitudes == (80.0,)
