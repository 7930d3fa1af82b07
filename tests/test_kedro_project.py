"""The Kedro project end to end on a tiny world: every implemented stage, MLflow, validation.

The project (conf/, pyproject.toml) is copied into a temporary folder so runs write their data
and MLflow store there, never into the working tree.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import numpy as np
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
    "meshing": {
        "tsdf": {"voxel_size": 1.0},
        "dsm": {"cell_size": 1.0},
        "clean": {"target_faces": 60000},
        "render_frames": {"count": 4, "width": 64, "height": 64},
        "quality": {"n_samples": 5000, "threshold_m": 1.0},
    },
    "semantic_aggregation": {
        "tiny_ae_training": {"steps": 20, "batch_size": 4, "crop": 32, "val_crops": 4},
        "grid": {
            "L": 32,
            "samples_per_voxel": 4.0,
            "crop": {"central_size_m": 200.0, "tile_size_m": 200.0, "tile_stride_m": 150.0,
                     "rectangular": True, "min_cover_fraction": 0.7},
            "views": {"count": 2, "height": 32, "width": 32},
        },
    },
    "voxelization": {"min_voxels": 16, "split": {"val_fraction": 0.5, "seed": 0}},
    "train_structfm": {
        "preview_tiles": 1,
        "model": {"grid": 4, "width": 32, "depth": 1, "num_heads": 2},
        "sample": {"steps": 2},
        "coarse": {"steps": 2, "batch_size": 2, "progress": False},
        "fine": {"steps": 2, "batch_size": 2, "progress": False},
    },
    "train_texfm": {
        "preview_tiles": 1,
        "model": {"layout_grid": 4, "width": 32, "depth": 1, "num_heads": 2},
        "sample": {"steps": 2},
        "trainer": {"steps": 2, "batch_size": 2, "progress": False},
    },
    "generation": {"num_scenes": 1, "steps": 2, "frames": 2, "size": 32, "large_scenes": ["autzen"], "large_size": 32,
                   "large_resample": 1},
    "evaluation": {"max_reference_tiles": 2, "kid_subsets": 2, "progress": False},
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


def test_data_pipeline_from_scenes_to_tiles(project, monkeypatch):
    """meshing -> semantic_aggregation -> voxelization on the scenes of the acquisition test,
    the real LiDAR survey included."""
    for stage in ("meshing", "semantic_aggregation", "voxelization"):
        _run(project, monkeypatch, stage)
    report = pd.read_parquet(project / "data" / "08_reporting" / "meshing" / "meshing_report.parquet")
    by_scene = report.set_index("scene_id")
    assert by_scene.loc["autzen", "method"] == "dsm" and by_scene.loc["autzen", "rendered_frames"] > 0
    assert by_scene.loc["autzen", "frame_shading"] == "measured"  # survey colours are not lit a second time
    assert by_scene.loc["syn_s3_0000", "method"] == "tsdf"
    # 6 frames of 64 px (3 m per pixel) bound the quality here; tests/meshing checks F > 0.98 at scale
    assert 0.1 < by_scene.loc["syn_s3_0000", "fscore"] <= 1.0

    manifest = pd.read_parquet(project / "data" / "05_model_input" / "voxels_manifest.parquet")
    assert {"autzen", "syn_s3_0000", "syn_s3_0001"} <= set(manifest["scene_id"])
    assert manifest.groupby("scene_id")["split"].nunique().max() == 1, "a scene never spans splits"
    from earthcrafter.io.tiles import read_tile

    real = read_tile(project / manifest[manifest["scene_id"] == "autzen"]["path"].iloc[0])
    assert real.feats.shape[1] == 66 and len(real) > 100
    classes = set(np.unique(real.semantic).tolist())
    assert 13 in classes and classes - {13}, "the LiDAR tile keeps ground and non-ground classes"
    extent = (real.coords.max(0) - real.coords.min(0) + 1) * real.meta["voxel_size_m"]
    assert 100 < extent[0] <= 200 and extent[2] < 60, f"realistic extents (m): {extent}"

    runs = _runs(project)
    assert {"meshing", "semantic_aggregation", "voxelization"} <= set(runs["tags.pipeline"])
    vox = runs[runs["tags.pipeline"] == "voxelization"].iloc[0]
    assert vox["metrics.voxelization/tiles"] == len(manifest)


def test_bad_parameter_fails_before_running(project, monkeypatch):
    bad = project / "conf" / "bad"
    bad.mkdir(exist_ok=True)
    (bad / "parameters_acquisition.yml").write_text(
        yaml.safe_dump({"acquisition": {"synthetic": {"num_sites": 1, "wrold": {}}}})
    )
    with pytest.raises(ConfigError, match=r"parameters\.acquisition\.synthetic\.wrold"):
        _run(project, monkeypatch, "acquisition", env="bad")


def test_bad_import_fails_before_generating_and_keeps_the_scenes(project, monkeypatch):
    """A missing import file or a scene id that is no folder name stops the run before any site
    is generated, and the scenes folder keeps its last complete output."""
    scenes = project / "data" / "01_raw" / "scenes"
    before = {sid: (scenes / sid / "metadata.json").stat().st_mtime_ns for sid in list_scenes(scenes)}
    assert before, "runs after the acquisition test"
    env = project / "conf" / "badimport"
    env.mkdir(exist_ok=True)
    good = TINY["acquisition"]["imports"][0]
    for imports, error, match in [
        ([good, {"kind": "las", "path": "data/00_external/autzen/gone.las"}], Exception,
         r"acquisition\.imports\[1\] \(las data/00_external/autzen/gone\.las, scene gone\): .*LAS/LAZ file not found"),
        ([{**good, "scene_id": "survey/2024"}], ConfigError, r"parameters\.acquisition\.imports\.0\.scene_id"),
        ([{**good, "options": {"orthofoto": "x.jpg"}}], ConfigError,
         r"parameters\.acquisition\.imports\.0: .*autzen_trim\.las: unknown option\(s\) 'orthofoto'"),
    ]:
        (env / "parameters_acquisition.yml").write_text(
            yaml.safe_dump({"acquisition": {**TINY["acquisition"], "imports": imports}})
        )
        with pytest.raises(error, match=match):
            _run(project, monkeypatch, "acquisition", env="badimport")
        after = {sid: (scenes / sid / "metadata.json").stat().st_mtime_ns for sid in list_scenes(scenes)}
        assert after == before


def _params(conf: Path, env: str | None, monkeypatch) -> dict:
    monkeypatch.chdir(conf.parent)
    bootstrap_project(conf.parent)
    with KedroSession.create(project_path=conf.parent, env=env) as session:
        return session.load_context().config_loader["parameters"]


def test_local_overrides_base_key_by_key_and_paper_replaces_sections(tmp_path, monkeypatch):
    """conf/local (the README's own-data example) overrides one key and keeps the rest of base;
    a named env such as paper replaces each section it names whole, as it is written."""
    from kedro.config import OmegaConfigLoader

    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "src").mkdir()
    shutil.copytree(ROOT / "conf", tmp_path / "conf", ignore=shutil.ignore_patterns("local"))
    (tmp_path / "conf" / "local").mkdir()
    base = _params(tmp_path / "conf", None, monkeypatch)
    mine = [{"kind": "mesh", "path": "/data/block7.glb"}]
    (tmp_path / "conf" / "local" / "parameters_acquisition.yml").write_text(
        yaml.safe_dump({"acquisition": {"imports": mine}})
    )
    (tmp_path / "conf" / "local" / "parameters_meshing.yml").write_text(
        yaml.safe_dump({"meshing": {"dsm": {"cell_size": 0.25}}})
    )
    local = _params(tmp_path / "conf", None, monkeypatch)
    assert local["acquisition"] == {**base["acquisition"], "imports": mine}  # a list replaces the base list
    assert local["meshing"]["dsm"] == {**base["meshing"]["dsm"], "cell_size": 0.25}
    local["meshing"]["dsm"] = base["meshing"]["dsm"]
    assert {k: v for k, v in local.items() if k != "acquisition"} == {k: v for k, v in base.items() if k != "acquisition"}
    paper = _params(tmp_path / "conf", "paper", monkeypatch)
    whole_sections = OmegaConfigLoader(str(tmp_path / "conf"), env="paper", base_env="base", default_run_env="local")
    assert paper == whole_sections["parameters"]
    assert paper["acquisition"]["imports"] == [] and paper["acquisition"]["synthetic"]["num_sites"] == 50000


def test_cache_latents_stage_on_the_tiles(project, monkeypatch):
    """cache_latents through Kedro on the tiles of the data pipeline test, with randomly
    initialised VAEs of the real architectures in place of the trained ones."""
    import torch

    from earthcrafter.io.latents import read_latent_tile
    from earthcrafter.models.struct_vae import StructVAE, StructVAEConfig
    from earthcrafter.models.tex_vae import TexVAE, TexVAEConfig
    from earthcrafter.training.structvae import save_structvae

    torch.manual_seed(0)
    models = project / "data" / "06_models"
    tiny = StructVAEConfig(L=32, widths=(16, 16, 32, 32), head_dim=16, enc_depths=(1, 1, 1), dec_depths=(1, 1, 1))
    save_structvae(StructVAE(tiny), models / "structvae" / "model.pt")
    TexVAE(TexVAEConfig(width=16, num_heads=2, enc_depth=1, dec_depth=1), in_channels=66).save(models / "tex_vae" / "model.pt")
    reports = project / "data" / "08_reporting"
    for stage in ("train_structvae", "train_texvae"):  # the training summaries the stage records
        (reports / stage).mkdir(parents=True, exist_ok=True)
        (reports / stage / "metrics.json").write_text('{"run_id": "r-%s"}' % stage)

    _run(project, monkeypatch, "cache_latents")
    voxels = pd.read_parquet(project / "data" / "05_model_input" / "voxels_manifest.parquet")
    latents = pd.read_parquet(project / "data" / "05_model_input" / "latents_manifest.parquet")
    assert latents["tile_id"].tolist() == sorted(voxels["tile_id"]) and (latents["status"] == "encoded").all()
    assert not any(Path(p).is_absolute() for p in latents["tile_path"])  # the project can move
    lt = read_latent_tile(project / latents["struct_path"].iloc[0])
    assert lt.channels == 32 and lt.stride == 8 and lt.coords.max() < 4
    import json

    summary = json.loads((reports / "cache_latents" / "metrics.json").read_text())
    assert summary["structvae_run_id"] == "r-train_structvae" and summary["tiles"] == len(voxels)
    stats = json.loads((project / "data" / "05_model_input" / "latents_stats.json").read_text())
    train = latents[latents["split"] == "train"]
    assert stats["tex"]["channels"] == 8 and stats["struct"]["count"] == train["struct_voxels"].sum()
    runs = _runs(project)
    run = runs[runs["tags.pipeline"] == "cache_latents"].iloc[0]
    nested = runs[runs["tags.mlflow.parentRunId"] == run["run_id"]].iloc[0]
    assert nested["tags.stage"] == "cache_latents" and nested["metrics.tiles"] == len(voxels)


def test_train_structfm_stage_on_the_cached_latents(project, monkeypatch):
    """train_structfm through Kedro on the latents of the previous test: both stages, the
    generation preview decoded by the (random) StructVAE, nested MLflow runs per stage."""
    import json

    _run(project, monkeypatch, "train_structfm")
    metrics = json.loads((project / "data" / "08_reporting" / "train_structfm" / "metrics.json").read_text())
    assert 0 <= metrics["gen_iou"] <= 1 and 0 <= metrics["coarse/acc"] <= 1 and metrics["gen_tiles"] == 1
    assert (project / "data" / "06_models" / "struct_fm" / "fine" / "model.pt").is_file()
    runs = _runs(project)
    run = runs[runs["tags.pipeline"] == "train_structfm"].iloc[0]
    stages = runs[runs["tags.mlflow.parentRunId"] == run["run_id"]]
    assert set(stages["tags.stage"]) == {"coarse", "fine"}


def test_texfm_and_generation_complete_the_dag(project, monkeypatch):
    """train_texfm on the cached texture latents, then generation: a scene folder you can open."""
    import json

    from earthcrafter.io.latents import read_latent_tile
    from earthcrafter.io.scene import read_mesh_ply
    from earthcrafter.render import load_ply

    _run(project, monkeypatch, "train_texfm")
    texfm = json.loads((project / "data" / "08_reporting" / "train_texfm" / "metrics.json").read_text())
    assert texfm["preview_tiles"] == 1 and texfm["gen_psnr"] > 0  # the tiles carry views: rendered and scored
    _run(project, monkeypatch, "generation")
    table = pd.read_parquet(project / "data" / "07_model_output" / "generated_manifest.parquet")
    assert len(table) == 1
    scene = project / "data" / "07_model_output" / "generated" / table["scene_id"].iloc[0]
    voxels = read_latent_tile(scene / "struct_latents.parquet")
    assert voxels.channels == 32 and len(read_mesh_ply(scene / "voxels.ply").faces) > 0
    assert len(load_ply(scene / "gaussians.ply")) == table["voxels"].iloc[0] == len(read_latent_tile(scene / "tex_latents.parquet"))
    assert (scene / "preview.png").is_file() and len(list((scene / "orbit").glob("frame_*.png"))) == 2
    # an interactive view per scene, all sharing one plotly.js beside them
    view = (scene / "view.html").read_text()
    assert f"voxels ({len(read_mesh_ply(scene / 'voxels.ply').faces):,} faces)" in view and "gaussians (" in view
    assert (scene.parent / "plotly.min.js").stat().st_size > 1_000_000 and 'src="../plotly.min.js"' in view
    # the generated latents name the VAEs that decode them, as cached latents do: they decode to the scene
    import torch

    from earthcrafter.io.structure import read_structure
    from earthcrafter.latents.export import decode_structure

    stats = json.loads((project / "data" / "05_model_input" / "latents_stats.json").read_text())
    assert voxels.meta["model"] == stats["models"]["struct"]
    assert read_latent_tile(scene / "tex_latents.parquet").meta["model"] == stats["models"]["tex"]
    decoded = decode_structure(voxels, project)
    assert np.array_equal(np.unique(decoded, axis=0), np.unique(read_structure(scene / "structure.parquet")[0], axis=0))
    # each flow records the latent statistics and the VAE it learned from (generation checks them)
    blob = torch.load(project / "data" / "06_models" / "tex_fm" / "model.pt", weights_only=True)
    assert blob["inputs"]["stats"]["mean"] == stats["tex"]["mean"] and blob["inputs"]["vae"] == stats["models"]["tex"]
    # the large scene of all the autzen tiles, by windows
    large = project / "data" / "07_model_output" / "generated" / "large_autzen"
    summary = json.loads((large / "summary.json").read_text())
    tiles = pd.read_parquet(project / "data" / "05_model_input" / "latents_manifest.parquet")
    assert summary["layout_tiles"] == tiles.loc[tiles["scene_id"] == "autzen", "tile_id"].tolist()
    assert len(summary["windows"]) >= len(summary["layout_tiles"]) and summary["voxels"] > 0
    assert len(load_ply(large / "gaussians.ply")) == summary["gaussians"] and (large / "preview.png").is_file()
    metrics = json.loads((project / "data" / "08_reporting" / "generation" / "metrics.json").read_text())
    assert metrics["large_autzen_voxels"] == summary["voxels"] and (large / "view.html").is_file()
    # placed on the map like the survey's tiles: its frame's corner is theirs (z: the lowest tile's bottom)
    from earthcrafter.io.tiles import read_tile
    from earthcrafter.latents.large_scene import scene_voxels_from_tiles

    survey = [read_tile(project / p) for p in tiles.loc[tiles["scene_id"] == "autzen", "tile_path"]]
    m = np.asarray(json.loads((large / "georef.json").read_text())["local_to_source"])
    ref = scene_voxels_from_tiles(survey)[:, :3]
    centres = (ref + 0.5) * survey[0].voxel_size @ m[:3, :3].T + m[:3, 3]  # the real scene's voxels, in survey feet
    voxel_ft = survey[0].voxel_size / 0.3048
    assert centres[:, 0].min() > 636_001.76 - voxel_ft and centres[:, 0].max() < 637_179.22 + voxel_ft
    assert centres[:, 1].min() > 848_935.20 - voxel_ft and centres[:, 1].max() < 849_497.90 + voxel_ft
    assert centres[:, 2].min() > 406.26 - 2 * voxel_ft and centres[:, 2].max() < 520.51 + 2 * voxel_ft
    runs = _runs(project)
    assert {"train_texfm", "generation"} <= set(runs["tags.pipeline"])
    run = runs[runs["tags.stage"] == "generation"].iloc[0]  # the MLflow UI shows a self-contained view
    views = mlflow.artifacts.list_artifacts(run_id=run["run_id"], artifact_path="generated/views")
    assert [Path(v.path).name for v in views] == [f"{scene.name}.html"] and views[0].file_size > 1_000_000


def test_evaluation_scores_the_scene_and_writes_one_report(project, monkeypatch):
    """evaluation on the scene of the previous test: scores per scene, FD / KD against rendered
    reference tiles, an HTML page holding every stage's metrics, the same numbers in MLflow."""
    import json

    from PIL import Image

    stale = project / "data" / "07_model_output" / "generated" / "large_stale"  # another run's, not this one's
    stale.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(stale / "preview.png")
    _run(project, monkeypatch, "evaluation")
    out = project / "data" / "08_reporting" / "evaluation"
    metrics = json.loads((out / "metrics.json").read_text())
    scenes = pd.read_parquet(out / "scenes.parquet")
    assert len(scenes) == metrics["scenes"] == 1 and 0 <= metrics["iou"] <= 1 and metrics["height_mae_m"] >= 0
    assert metrics["feature_space"] == "tiny_ae" and metrics["fd_tiny_ae"] >= 0 and metrics["reference_images"] == metrics["generated_images"] == 2
    page = (out / "report.html").read_text()
    for stage in ("train_structfm", "train_texfm", "generation", "cache_latents"):
        assert stage in page
    assert "data:image/png;base64" in page and "chamfer_m" in page
    assert "kedro run --pipelines=structvae_ablations" in page
    assert "Large scene large_autzen: map and surfels from above" in page
    assert "large_stale" not in page
    for scene in ("large_autzen", pd.read_parquet(project / "data" / "07_model_output" / "generated_manifest.parquet")["scene_id"].iloc[0]):
        assert f"<a href='../../07_model_output/generated/{scene}/view.html'>{scene}</a>" in page
    runs = _runs(project)
    run = runs[runs["tags.stage"] == "evaluation"].iloc[0]
    assert run["metrics.fd_tiny_ae"] == pytest.approx(metrics["fd_tiny_ae"])
    assert run["metrics.iou"] == pytest.approx(metrics["iou"])


def test_generate_command_from_named_tiles_and_unconditionally(project, monkeypatch, capsys):
    """`earthcrafter generate` with the trained flows of the tests above: a training tile's layout,
    then no condition; an unconditional scene is scored for appearance only."""
    import json

    from earthcrafter.commands import main
    from earthcrafter.evaluation.generated import evaluate_generated

    monkeypatch.chdir(project)
    latents = pd.read_parquet(project / "data" / "05_model_input" / "latents_manifest.parquet")
    tile = latents.loc[latents["split"] == "train", "tile_id"].iloc[0]
    out = project / "samples"
    assert main(["generate", "--root", str(project), "--env", "tiny", "--tiles", tile, "--out", str(out),
                 "--device", "cpu"]) == 0  # fmt: skip
    table = pd.read_parquet(out / "manifest.parquet")
    assert table["layout_tile"].tolist() == [tile] and table["condition"].tolist() == ["layout"]
    assert (out / table["scene_id"].iloc[0] / "gaussians.ply").is_file() and tile in capsys.readouterr().out
    # a real survey's tile carries its place on the map; a scene generated from its layout lands there
    from earthcrafter.io.georef import local_to_source
    from earthcrafter.io.tiles import read_tile

    real = latents.loc[latents["scene_id"] == "autzen"].iloc[0]
    georef = read_tile(project / real["tile_path"]).meta["extra"]["georef"]
    assert main(["generate", "--root", str(project), "--env", "tiny", "--tiles", real["tile_id"], "--out",
                 str(out / "real")]) == 0  # fmt: skip
    placed = json.loads(next((out / "real").glob("gen_*/georef.json")).read_text())
    assert placed["crs"]["name"] == georef["crs"]["name"] and placed["crs"]["wkt"]
    layout_tile = read_tile(project / real["tile_path"])
    m = np.asarray(placed["local_to_source"])
    assert np.allclose(m, local_to_source(georef, layout_tile.origin))
    # the layout tile's own voxels, placed so, fall inside the survey's header bounds (in feet), to a voxel
    centres = (layout_tile.coords + 0.5) * layout_tile.voxel_size @ m[:3, :3].T + m[:3, 3]
    voxel_ft = layout_tile.voxel_size / 0.3048
    assert centres[:, 0].min() > 636_001.76 - voxel_ft and centres[:, 0].max() < 637_179.22 + voxel_ft
    assert centres[:, 1].min() > 848_935.20 - voxel_ft and centres[:, 1].max() < 849_497.90 + voxel_ft
    assert main(["generate", "--root", str(project), "--env", "tiny", "--tiles", "no_such_tile", "--out", str(out)]) == 2
    assert "no_such_tile" in capsys.readouterr().err
    assert main(["generate", "--root", str(project), "--env", "tiny", "--tiles", tile, "--device", "gpu0"]) == 2
    assert "device" in capsys.readouterr().err
    # the tiny flows are trained on semantic layouts: an RGBD view is refused with the reason
    assert main(["generate", "--root", str(project), "--env", "tiny", "--tiles", tile, "--condition", "rgbd", "--out", str(out)]) == 2
    assert "cannot take the rgbd condition" in capsys.readouterr().err
    assert main(["generate", "--root", str(project), "--env", "tiny", "--tiles", tile, "--condition", "rgb", "--out", str(out)]) == 2
    assert "generation.condition = rgb: the StructFM was never trained on views without depth" in capsys.readouterr().err

    assert main(["generate", "--root", str(project), "--env", "tiny", "--unconditional", "--num", "1", "--out", str(out / "u")]) == 0
    uncond = pd.read_parquet(out / "u" / "manifest.parquet")
    assert uncond["condition"].tolist() == ["none"] and np.isnan(uncond["layout_tile_iou"].iloc[0])
    scenes, metrics, _ = evaluate_generated(pd.concat([table, uncond]), latents, {"progress": False, "mlflow": False,
                                                                                  "kid_subsets": 2})  # fmt: skip
    assert metrics["unconditional_scenes"] == 1 and metrics["generated_images"] == 2 * 2
    again = evaluate_generated(table, latents, {"progress": False, "mlflow": False, "kid_subsets": 2})[1]
    assert again["reference_renders_reused"] == again["reference_tiles"] == metrics["reference_tiles"]  # cached above
    assert np.isnan(scenes["iou"].iloc[1]) and 0 <= metrics["iou"] == scenes["iou"].iloc[0] <= 1


def test_generate_large_command_from_a_scene_and_a_map_image(project, monkeypatch, capsys):
    """`earthcrafter generate-large`: a scene's tiles as the map, then a painted map image two
    windows wide; bad requests exit 2 with the reason."""
    import json

    from PIL import Image

    from earthcrafter.commands import main
    from earthcrafter.latents.large_scene import class_raster_from_image, raster_image

    monkeypatch.chdir(project)
    out = project / "samples_large"
    args = ["generate-large", "--root", str(project), "--env", "tiny", "--out", str(out), "--steps", "2", "--frames", "1",
            "--size", "32", "--resample", "0"]  # fmt: skip
    assert main([*args, "--scene", "syn_s3_0000"]) == 0
    assert (out / "large_syn_s3_0000" / "gaussians.ply").is_file() and "large_syn_s3_0000" in capsys.readouterr().out
    raster = np.full((48, 32), 11, np.uint8)  # 300 m x 200 m of lawn at 6.25 m voxels, a road across
    raster[:, 14:17] = 3
    Image.fromarray(raster_image(raster)).save(project / "map.png")
    assert main([*args, "--layout", str(project / "map.png"), "--voxel-size", "6.25", "--stride", "2"]) == 0
    summary = json.loads((out / "large_map" / "summary.json").read_text())
    assert [(w["x_cells"], w["y_cells"]) for w in summary["windows"]] == [(0, 0), (2, 0)]  # 6 x 4 cells, windows of 4
    assert summary["map_voxels"] == [48, 32] and np.array_equal(class_raster_from_image(out / "large_map" / "layout.png"), raster)
    for bad, why in ((["--scene", "nowhere"], "nowhere"), (["--layout", str(project / "map.png")], "--voxel-size"),
                     ([], "one of --scene"), (["--layout", str(project / "nothing.png"), "--voxel-size", "6.25"], "nothing.png")):
        assert main([*args, *bad]) == 2
        assert why in capsys.readouterr().err
