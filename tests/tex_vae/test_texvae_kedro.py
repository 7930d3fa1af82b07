"""`kedro run --pipelines=train_texvae` in a throw-away project: the shipped base parameters validate,
the catalog entries resolve, metrics.json and the model file are written and load back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from earthcrafter import config
from earthcrafter.models.tex_vae import TexVAE
from earthcrafter.models.tex_vae_train import TexVAETrainConfig

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = "earthcrafter.models.tex_vae_train:TexVAETrainConfig"


def _base_params() -> dict:
    return yaml.safe_load((ROOT / "conf" / "base" / "parameters_train_texvae.yml").read_text())["train_texvae"]


@pytest.mark.parametrize("env", ["base", "paper"])
def test_shipped_parameters_validate(env):
    raw = yaml.safe_load((ROOT / "conf" / env / "parameters_train_texvae.yml").read_text())["train_texvae"]
    cfg = TexVAETrainConfig.model_validate(raw)
    assert cfg.row == "TexE" and cfg.model.features == "f_feat" and cfg.model.arch == "tube"
    assert list(cfg.ablations.rows) == ["TexA", "TexB", "TexC", "TexD", "TexE", "TexF"]
    if env == "paper":
        assert (cfg.model.enc_depth, cfg.model.dec_depth, cfg.model.latent_channels) == (12, 12, 8)
        assert (cfg.trainer.batch_size, cfg.trainer.steps, cfg.trainer.lr) == (64, 200_000, 1e-4)


@pytest.fixture()
def project(tmp_path, synth_manifest, monkeypatch):
    """A project with only this stage's conf (plus a tiny env and the test tiles as voxel_manifest)."""
    for name in ("pyproject.toml", ".telemetry"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "src").mkdir()
    base = tmp_path / "conf" / "base"
    base.mkdir(parents=True)
    for name in ("catalog_train_texvae.yml", "parameters_train_texvae.yml"):
        shutil.copy(ROOT / "conf" / "base" / name, base / name)
    (base / "mlflow.yml").write_text("enabled: false\n")
    manifest = tmp_path / "manifest.parquet"
    synth_manifest.to_parquet(manifest)
    (base / "catalog_test_tiles.yml").write_text(
        f"voxel_manifest:\n  type: earthcrafter.datasets.AtomicParquetDataset\n  path: {manifest}\n"
    )
    (tmp_path / "conf" / "local").mkdir()
    tiny = _base_params()
    tiny["model"].update(width=16, num_heads=2, window=4)
    tiny["data"].update(view_width=16, views_per_sample=1, val_views=2)
    tiny["trainer"].update(steps=2, warmup_steps=0, log_every=1, val_every=0, ckpt_every=0, progress=False,
                          figures=False)  # figures: test_tex_vae_train
    (tmp_path / "conf" / "tiny").mkdir()
    (tmp_path / "conf" / "tiny" / "parameters_train_texvae.yml").write_text(yaml.safe_dump({"train_texvae": tiny}))
    monkeypatch.setitem(config.PARAMETER_SCHEMAS, "train_texvae", SCHEMA)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_kedro_run_train_texvae(project):
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env="tiny") as session:
        session.run(pipeline_names=["train_texvae"])
    metrics = json.loads((project / "data/08_reporting/train_texvae/metrics.json").read_text())
    assert metrics["row"] == "TexE" and metrics["steps"] == 2 and metrics["target_psnr"] == 20.0
    assert metrics["lpips"].startswith(("disabled: ", "enabled: "))
    assert isinstance(metrics["reached_target"], bool) and metrics["val_views"] == 2
    model = TexVAE.load(project / "data/06_models/tex_vae/model.pt")
    assert model.config.width == 16 and model.in_channels == 66
    exported = torch.load(project / "data/06_models/tex_vae/run/model.pt", weights_only=True)
    for k, v in model.state_dict().items():  # the catalog's model is the trainer's EMA export
        assert torch.equal(v, exported["state_dict"][k]), k
