"""Scene generation with randomly initialised small models of the real architectures, exported into
a project root under tmp_path the way the pipelines write them: the VAEs given are checked against
latents_stats.json for flows of any age, and unconditional sampling runs each network once per step."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from latent_synth import save_models, write_tiles

from earthcrafter.io.latents import file_sha256, read_latent_tile
from earthcrafter.io.structure import read_structure
from earthcrafter.flow import guidance
from earthcrafter.models.struct_fm import StructFM, StructFMConfig
from earthcrafter.models.tex_fm import TexFMConfig, build_texfm

MODELS = Path("data") / "06_models"


def _perturbed(net: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights everywhere: the flows' output layers start at zero (v = 0 would hide any
    difference between sampling paths)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net.eval()


def _export_flows(root: Path) -> None:
    """StructFM (two stages) and TexFM exports without ``inputs``: flows exported before they
    recorded their latent statistics and VAE (what generation cannot check on the flow's side)."""
    structfm = _perturbed(StructFM(StructFMConfig(grid=2, width=32, depth=1, num_heads=2)), 1)
    config = structfm.config.model_dump(mode="json")
    for stage in ("coarse", "fine"):
        path = root / MODELS / "struct_fm" / stage / "model.pt"
        path.parent.mkdir(parents=True)
        torch.save({"model": "structfm", "config": {"struct_fm": config, "stage": stage},
                    "state_dict": getattr(structfm, stage).state_dict()}, path)  # fmt: skip
    cfg = TexFMConfig(width=32, depth=1, num_heads=2, window=4, layout_grid=2, layout_stride=8)
    (root / MODELS / "tex_fm").mkdir(parents=True)
    torch.save({"model": "texfm", "config": {"tex_fm": cfg.model_dump(mode="json")},
                "state_dict": _perturbed(build_texfm(cfg), 2).state_dict()}, root / MODELS / "tex_fm" / "model.pt")


@pytest.fixture
def project(tmp_path) -> Path:
    """A project root (L = 16, grid 2): two voxel tiles in the latent manifest, both VAEs, both flows
    (old exports), latents_stats.json naming the VAEs the latents were cached with, and generation
    parameters of a quick run."""
    root = tmp_path / "project"
    inputs = root / "data" / "05_model_input"
    tiles = write_tiles(inputs / "voxels", ["train", "val"])
    tiles["tile_path"] = [str(Path(p).relative_to(root)) for p in tiles.pop("path")]
    tiles.to_parquet(inputs / "latents_manifest.parquet")
    (root / MODELS).mkdir(parents=True)
    vaes = dict(zip(("struct", "tex"), save_models(root / MODELS)))
    _export_flows(root)
    ident = lambda c: {"mean": [0.0] * c, "std": [1.0] * c}  # noqa: E731
    cached_with = {k: {"path": str(p.relative_to(root)), "sha256": file_sha256(p)} for k, p in vaes.items()}
    stats = {"struct": ident(32), "tex": ident(8), "models": cached_with}
    (inputs / "latents_stats.json").write_text(json.dumps(stats))
    params = {"structfm_dir": str(MODELS / "struct_fm"), "texfm_dir": str(MODELS / "tex_fm"),
              "structvae_path": str(MODELS / "structvae.pt"), "texvae_path": str(MODELS / "texvae.pt"),
              "steps": 2, "frames": 0, "size": 16, "views": False, "mlflow": False, "device": "cpu",
              "large_scenes": []}  # fmt: skip
    (root / "conf" / "base").mkdir(parents=True)
    (root / "conf" / "base" / "parameters_generation.yml").write_text(yaml.safe_dump({"generation": params}))
    return root


def _inputs(root: Path, **overrides):
    """(latent manifest, stats, config) as `earthcrafter generate` reads them from ``root``."""
    from earthcrafter.latents.generate import GenerationConfig

    inputs = root / "data" / "05_model_input"
    manifest = pd.read_parquet(inputs / "latents_manifest.parquet")
    manifest["tile_path"] = [str(root / p) for p in manifest["tile_path"]]
    params = yaml.safe_load((root / "conf" / "base" / "parameters_generation.yml").read_text())["generation"]
    params = {k: str(root / v) if k.endswith(("_dir", "_path")) else v for k, v in params.items()}
    stats = json.loads((inputs / "latents_stats.json").read_text())
    return manifest, stats, GenerationConfig(**{**params, **overrides})


@pytest.mark.timeout(300)
def test_a_texvae_other_than_the_cached_latents_one_is_refused_for_old_flow_exports(project, capsys):
    """latents_stats.json records the VAEs the latents were cached with: a TexVAE with other weights
    is refused even when the flows were exported before they recorded their own inputs (that check
    needs nothing from the flows), naming both files and what to re-run; no scene is written."""
    from earthcrafter.commands import main
    from earthcrafter.models.tex_vae import TexVAE

    other = project / MODELS / "texvae_retrained.pt"
    _perturbed(TexVAE.load(project / MODELS / "texvae.pt"), 3).save(other)
    (project / "conf" / "other").mkdir()
    (project / "conf" / "other" / "parameters_generation.yml").write_text(
        yaml.safe_dump({"generation": {"texvae_path": str(MODELS / "texvae_retrained.pt")}}))  # fmt: skip
    out = project / "samples"
    args = ["generate", "--root", str(project), "--tiles", "t001", "--out", str(out)]
    assert main([*args, "--env", "other"]) == 2
    err = capsys.readouterr().err
    assert "latents_stats.json was computed with another tex VAE" in err, err
    assert "data/06_models/texvae.pt" in err and str(other) in err and "--pipelines=cache_latents" in err, err
    assert "struct VAE" not in err  # the StructVAE given is the cached one
    assert not out.exists() or not any(out.iterdir())
    assert main(args) == 0  # the VAE the latents were cached with: generated, the flows' own inputs unchecked
    assert "records no latent statistics or VAE" in capsys.readouterr().err
    assert (out / "gen_000_t001" / "gaussians.ply").is_file()


def test_guidance_is_skipped_only_for_no_condition_or_the_dropped_one():
    layout = torch.zeros(2, 4, 4, 3)
    assert guidance(None, 3.0) == (None, 0.0) and guidance(layout, 3.0) == (None, 0.0)
    layout[1, 2, 0, 1] = 0.5  # one sample conditioned: the batch is guided (its zero sample gets v again)
    uncond, strength = guidance(layout, 3.0)
    assert strength == 3.0 and uncond.shape == layout.shape and not uncond.any()


def _old_guidance(cond, strength):
    """Before the fix: any condition, the all-zero one too, was guided against zeros."""
    return (None, 0.0) if cond is None else (torch.zeros_like(cond), strength)


def _generate_counting(monkeypatch, root: Path, out: str, **overrides) -> tuple[pd.Series, int]:
    """One scene of generate_scenes (its summary row) and how many times the flow networks ran."""
    from earthcrafter.latents import generate

    calls, load = [0], generate.load_generators

    def counted(*args, **kwargs):
        models = load(*args, **kwargs)
        for net in (models.structfm.coarse, models.structfm.fine, models.texfm):
            net.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
        return models

    monkeypatch.setattr(generate, "load_generators", counted)
    table, _ = generate.generate_scenes(*_inputs(root, out_dir=out, tile_ids=["t001"], **overrides))
    return table.iloc[0], calls[0]


@pytest.mark.timeout(300)
def test_unconditional_generation_runs_each_flow_once_per_step_with_the_same_samples(project, monkeypatch):
    """With the dropped (all-zero) condition, classifier-free guidance combines two evaluations of
    the network on the same input: (1 + w) v - w v = v. Unconditional generation runs each network
    once per Euler step (3 networks x 4 steps) and writes the scene the double evaluation wrote
    (same cells and voxels, latents to float rounding); a layout is still guided (twice the calls)."""
    from earthcrafter.models import struct_fm, tex_fm

    kw = dict(condition="none", cfg_strength=3.0, steps=4, seed=5)
    new, calls = _generate_counting(monkeypatch, project, str(project / "new"), **kw)
    assert calls == 3 * 4
    monkeypatch.setattr(struct_fm, "guidance", _old_guidance)
    monkeypatch.setattr(tex_fm, "guidance", _old_guidance)
    old, old_calls = _generate_counting(monkeypatch, project, str(project / "old"), **kw)
    assert old_calls == 2 * 3 * 4
    np.testing.assert_array_equal(read_structure(Path(new["path"]) / "structure.parquet")[0],
                                  read_structure(Path(old["path"]) / "structure.parquet")[0])  # fmt: skip
    for kind in ("struct", "tex"):
        a, b = (read_latent_tile(Path(s["path"]) / f"{kind}_latents.parquet") for s in (new, old))
        np.testing.assert_array_equal(a.coords, b.coords)
        np.testing.assert_allclose(a.mean, b.mean, rtol=1e-5, atol=1e-5)
    assert new["voxels"] == old["voxels"] > 0
    monkeypatch.undo()
    _, guided = _generate_counting(monkeypatch, project, str(project / "layout"), **{**kw, "condition": "layout"})
    assert guided == 2 * 3 * 4
