"""The Kedro project end to end on a tiny world: every implemented stage, MLflow, validation.

The project (conf/, pyproject.toml) is copied into a temporary folder so runs write their data
and MLflow store there, never into the working tree.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from earthcrafter.config import ConfigError
from earthcrafter.io.scene import list_scenes, read_scene

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "acquisition": {
        "synthetic": {
            "num_sites": 2,
            "world": {
                "seed": 3,
                "size_m": 200.0,
                "cell_m": 2.0,
                "biomes": ["suburb", "mountains"],
                "frames_per_site": 6,
                "image_width": 64,
                "image_height": 64,
            },
        },
        "imports": [
            {
                "kind": "las",
                "path": "data/00_external/autzen/autzen_trim.las",
                "scene_id": "autzen",
                "options": {"max_points": 20000},
            }
        ],
    },
}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    dst = tmp_path_factory.mktemp("project")
    for name in ("pyproject.toml", ".telemetry"):
        shutil.copy(ROOT / name, dst / name)
    (dst / "src").mkdir()  # the package itself is installed; Kedro only wants the folder to exist
    shutil.copytree(ROOT / "conf", dst / "conf", ignore=shutil.ignore_patterns("local"))
    (dst / "conf" / "local").mkdir()
    shutil.copytree(ROOT / "data" / "00_external", dst / "data" / "00_external")
    test_env = dst / "conf" / "tiny"
    test_env.mkdir()
    for section, value in TINY.items():
        (test_env / f"parameters_{section}.yml").write_text(yaml.safe_dump({section: value}))
    return dst


def _run(project: Path, monkeypatch, pipeline: str, env: str = "tiny"):
    monkeypatch.chdir(project)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env=env) as session:
        return session.run(pipeline_names=[pipeline])


def _runs(project: Path) -> pd.DataFrame:
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    return mlflow.search_runs(search_all_experiments=True)


def test_acquisition_writes_scenes_and_one_mlflow_run(project, monkeypatch):
    _run(project, monkeypatch, "acquisition")
    scenes = project / "data" / "01_raw" / "scenes"
    assert list_scenes(scenes) == ["autzen", "syn_s3_0000", "syn_s3_0001"]
    syn = read_scene(scenes / "syn_s3_0000")
    assert syn.metadata["biome"] == "suburb" and len(syn.frames) == 6 and len(syn.mesh.faces) > 1000
    real = read_scene(scenes / "autzen", load_frames=False)
    assert real.points is not None and len(real.points.xyz) == 20000
    summary = pd.read_parquet(project / "data" / "01_raw" / "scenes_summary.parquet")
    assert set(summary["scene_id"]) == {"autzen", "syn_s3_0000", "syn_s3_0001"}

    runs = _runs(project)
    run = runs[runs["tags.pipeline"] == "acquisition"].iloc[0]
    assert run["status"] == "FINISHED"
    assert run["tags.kedro_env"] == "tiny"
    assert run["tags.git_commit"]
    assert run["params.acquisition.synthetic.num_sites"] == "2"
    assert run["params.acquisition.synthetic.world.size_m"] == "200.0"
    assert run["metrics.acquisition/scenes"] == 3


def test_bad_parameter_fails_before_running(project, monkeypatch):
    bad = project / "conf" / "bad"
    bad.mkdir(exist_ok=True)
    (bad / "parameters_acquisition.yml").write_text(
        yaml.safe_dump({"acquisition": {"synthetic": {"num_sites": 1, "wrold": {}}}})
    )
    with pytest.raises(ConfigError, match=r"parameters\.acquisition\.synthetic\.wrold"):
        _run(project, monkeypatch, "acquisition", env="bad")
