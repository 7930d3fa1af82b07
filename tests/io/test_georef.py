"""Local outputs placed back on the map: the matrix of earthcrafter.io.georef against the survey's own coordinates."""

from __future__ import annotations

import json

import laspy
import numpy as np

from earthcrafter.io.georef import local_to_source, scene_georef, write_georef
from earthcrafter.io.las import import_las


def _apply(m: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    return xyz @ m[:3, :3].T + m[:3, 3]


def test_imported_points_map_back_to_the_survey_coordinates(real_data, tmp_path):
    """Every imported point, in the scene's local metres, lands on a point of the LAS file (in its
    feet, to the file's 0.01 ft resolution); from a tile's frame (a shifted origin) the same."""
    scene = import_las(real_data / "autzen_trim.las")
    georef = scene_georef(scene.metadata)
    assert georef["crs"]["name"] == "NAD_1983_HARN_Lambert_Conformal_Conic"
    source = _apply(local_to_source(georef), scene.points.xyz.astype(np.float64))
    las = laspy.read(real_data / "autzen_trim.las")
    survey = {tuple(p) for p in np.round(np.stack([las.x, las.y, las.z], 1), 2).tolist()}
    mapped = np.round(source, 2)
    assert len(mapped) > 100_000 and all(tuple(p) in survey for p in mapped.tolist())

    corner = np.array([150.0, 30.0, -2.5])  # a tile whose grid corner sits there in the scene frame
    in_tile = scene.points.xyz.astype(np.float64) - corner
    np.testing.assert_allclose(_apply(local_to_source(georef, corner), in_tile), source, atol=1e-6)

    path = write_georef(tmp_path, georef, corner, "test outputs")
    doc = json.loads(path.read_text())
    assert np.allclose(doc["local_to_source"], local_to_source(georef, corner))
    assert doc["crs"]["wkt"].startswith("PROJCRS")


def test_a_synthetic_scene_has_no_georef(tmp_path):
    assert scene_georef({"source": "synthetic", "biome": "hills"}) is None
    assert write_georef(tmp_path, None, (0, 0, 0), "x") is None and not list(tmp_path.iterdir())


def test_a_crs_given_as_text_is_kept_as_its_name(tmp_path):
    """Meshes and frames record the CRS the user gave as a string (crs="EPSG:32610")."""
    origin = {"metres": [10.0, 20.0, 0.0], "metres_per_unit": [1.0, 1.0, 1.0], "rotation": np.eye(3).tolist(),
              "source_units": [10.0, 20.0, 0.0]}  # fmt: skip
    georef = scene_georef({"source": "mesh", "crs": "EPSG:32610", "origin": origin})
    doc = json.loads(write_georef(tmp_path, georef, (1.0, 2.0, 3.0), "mesh tile").read_text())
    assert doc["crs"] == {"name": "EPSG:32610", "epsg": 32610, "wkt": None}
    np.testing.assert_allclose(np.asarray(doc["local_to_source"]) @ [0, 0, 0, 1], [11.0, 22.0, 3.0, 1.0])
