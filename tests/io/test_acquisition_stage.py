"""The acquisition stage's imports: config validation at start, file checks before any generation."""

from __future__ import annotations

import numpy as np
import pytest
from import_helpers import grid_points, write_las

from earthcrafter.config import ConfigError, validate
from earthcrafter.io.import_common import DataImportError
from earthcrafter.io.scene import scene_biome
from earthcrafter.pipelines.acquisition import nodes


def _las(tmp_path, name: str = "East Part (ft).las"):
    return str(write_las(tmp_path / name, grid_points(), rgb=np.full((400, 3), 60), crs=None))


def test_derived_scene_ids_are_normalised(tmp_path):
    cfg = validate("acquisition", {"imports": [{"kind": "las", "path": _las(tmp_path)}]})
    assert cfg.imports[0].scene_id == "east_part_ft"


def test_bad_scene_ids_and_options_fail_at_start_naming_import_and_file(tmp_path):
    path = _las(tmp_path)
    imports = [
        {"kind": "las", "path": path, "scene_id": "survey/2024"},
        {"kind": "las", "path": path, "scene_id": "b", "options": {"orthofoto": "x.jpg"}},
        {"kind": "las", "path": path, "scene_id": "c", "options": {"max_points": "lots"}},
        {"kind": "las", "path": path, "scene_id": "d", "options": {"scene_id": "e"}},
    ]
    with pytest.raises(ConfigError) as err:
        validate("acquisition", {"imports": imports})
    lines = str(err.value).splitlines()[1:]
    assert len(lines) == 4 and all("Part (ft).las" in line for line in lines)
    assert lines[0].startswith("  parameters.acquisition.imports.0.scene_id:") and "'survey/2024'" in lines[0]
    assert lines[1].startswith("  parameters.acquisition.imports.1:") and "did you mean 'orthophoto'" in lines[1]
    assert "'scene_id'" not in lines[1]  # the options listed are those options may hold
    assert lines[2].startswith("  parameters.acquisition.imports.2:") and "max_points='lots'" in lines[2]
    assert "next to kind and path" in lines[3]
    with pytest.raises(ConfigError, match="share scene ids"):
        validate("acquisition", {"imports": [{"kind": "las", "path": path}, {"kind": "las", "path": path}]})


def test_options_are_converted_to_the_importer_types(tmp_path):
    options = {"units": "feet", "max_points": "1000", "crop": [0, 0, 1, 1]}
    cfg = validate("acquisition", {"imports": [{"kind": "las", "path": _las(tmp_path), "options": options}]})
    assert cfg.imports[0].options == {"units": "feet", "max_points": 1000, "crop": (0.0, 0.0, 1.0, 1.0)}


def _params(imports, num_sites=2):
    world = {"size_m": 60.0, "cell_m": 2.0, "frames_per_site": 1, "image_width": 16, "image_height": 16}
    return {"synthetic": {"num_sites": num_sites, "world": world}, "imports": imports}


def test_imports_are_checked_before_any_site_is_generated(tmp_path, monkeypatch):
    monkeypatch.setattr(nodes, "generate_site", lambda *a: pytest.fail("generated a site before checking imports"))
    imports = [{"kind": "las", "path": _las(tmp_path), "options": {"units": "ft"}},
               {"kind": "las", "path": str(tmp_path / "gone.las"), "options": {"units": "ft"}}]
    with pytest.raises(DataImportError, match=r"acquisition\.imports\[1\] \(las .*gone\.las: LAS/LAZ file not found"):
        nodes.acquire_scenes(_params(imports))
    plan = nodes.acquire_scenes(_params(imports[:1]))
    assert list(plan)[0] == "east_part_ft" and len(plan) == 3  # imports first: a failing one fails early
    assert plan["east_part_ft"]().scene_id == "east_part_ft"


def test_nothing_to_acquire_is_an_error():
    with pytest.raises(ValueError, match="nothing to acquire"):
        nodes.acquire_scenes(_params([], num_sites=0))


def test_imported_scenes_have_the_biome_real():
    assert {scene_biome({"source": s}) for s in ("lidar", "mesh", "frames")} == {"real"}
    assert scene_biome({"source": "synthetic", "biome": "desert"}) == "desert"
    assert scene_biome({}) == "unknown"


def test_the_summary_records_each_scenes_unlabeled_share(tmp_path):
    classes = np.r_[np.full(300, 1), np.full(100, 2)]
    path = str(write_las(tmp_path / "raw.las", grid_points(), classes=classes, rgb=np.full((400, 3), 60), crs=None))
    plan = nodes.acquire_scenes(_params([{"kind": "las", "path": path, "options": {"units": "ft"}}], num_sites=1))
    summary = nodes.summarize_scenes(plan).set_index("scene_id")["unlabeled_share"]
    assert summary["raw"] == 0.75 and summary.drop("raw").lt(0.5).all()
