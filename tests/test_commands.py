"""The `earthcrafter` command line itself: help, info, and how generate / generate-large / dry-run
refuse what cannot be done (one line, exit status 2) before any model is loaded."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from earthcrafter import commands
from earthcrafter.commands import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path) -> Path:
    """A project root with the cached latents' manifest and statistics (no models: every command
    here must stop before it needs them), base generation parameters and an environment without any."""
    latents = tmp_path / "data" / "05_model_input"
    latents.mkdir(parents=True)
    pd.DataFrame({"tile_id": ["t000"], "split": ["val"], "tile_path": ["t000.parquet"]}).to_parquet(
        latents / "latents_manifest.parquet")  # fmt: skip
    (latents / "latents_stats.json").write_text("{}")
    for env in ("base", "paper", "bare"):
        (tmp_path / "conf" / env).mkdir(parents=True)
    (tmp_path / "conf" / "base" / "parameters_generation.yml").write_text("generation:\n  num_scenes: 2\n")
    (tmp_path / "conf" / "paper" / "parameters_generation.yml").write_text("generation:\n  device: cuda\n")
    return tmp_path


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_help_shows_the_whole_description(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "inspect what the pipelines produced, and generate from the trained models" in out
    assert "earthcrafter colmap-to-frames MODEL_DIR" in out and "exit status 2" in out  # the last lines too


def test_info_counts_scene_folders_and_tiles_and_lists_samples(tmp_path, capsys):
    data = tmp_path / "data"
    for scene in ("gen_000_a", "gen_001_b", ".gen_002_c.x.tmp"):  # a hidden folder: an atomic write's temporary
        (data / "07_model_output" / "generated" / scene).mkdir(parents=True)
    for loose in ("contact_sheet.png", "plotly.min.js"):
        (data / "07_model_output" / "generated" / loose).write_bytes(b"x")
    (data / "07_model_output" / "samples" / "gen_000_uncond").mkdir(parents=True)
    (data / "05_model_input" / "voxels").mkdir(parents=True)
    for name in ("t0.parquet", "t0.views.npz", "t1.parquet"):
        (data / "05_model_input" / "voxels" / name).write_bytes(b"x")
    assert main(["info", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    entries = lambda label: int(re.search(rf"{label}\s*│[^│]*│\s*(\d+)\s*│", out).group(1))  # noqa: E731
    assert entries("generated scenes") == 2 and entries("sampled scenes") == 1 and entries("voxel tiles") == 2


def test_info_refuses_a_root_that_is_no_project(tmp_path, capsys):
    missing = tmp_path / "nonexistent"
    assert main(["info", "--root", str(missing)]) == 2
    err = _err(capsys)
    assert str(missing) in err and "no such folder" in err
    assert main(["info", "--root", str(tmp_path)]) == 2
    assert "no data/ folder" in _err(capsys)


@pytest.mark.parametrize("command", [["generate"], ["generate-large", "--scene", "s0"]])
def test_generate_commands_refuse_an_unknown_environment(project, capsys, command):
    assert main([*command, "--root", str(project), "--env", "papr"]) == 2
    err = _err(capsys)
    assert f"earthcrafter {command[0]}: no environment" in err and "environments: bare, base, paper" in err


def test_an_environment_without_generation_parameters_keeps_the_base_ones(project, capsys):
    (project / "conf" / "base" / "parameters_generation.yml").write_text("generation:\n  num_scenes: 0\n")
    assert main(["generate", "--root", str(project), "--env", "bare"]) == 2
    assert "generation.num_scenes (conf/base/parameters_generation.yml) = 0: Input should be greater" in _err(capsys)


def test_parameter_errors_name_the_flag_that_set_them(project, capsys):
    assert main(["generate", "--root", str(project), "--num", "0", "--steps", "-1"]) == 2
    err = _err(capsys)
    assert "--num=0: Input should be greater than or equal to 1" in err and "--steps=-1" in err
    assert "num_scenes" not in err
    assert main(["generate-large", "--root", str(project), "--scene", "s0", "--size", "8"]) == 2
    assert "--size=8: Input should be greater than or equal to 16" in _err(capsys)


@pytest.mark.parametrize("seed", ["99999999999999999999999", "-1"])
def test_the_seed_range_is_checked(project, capsys, seed):
    assert main(["generate", "--root", str(project), "--seed", seed]) == 2
    err = _err(capsys)  # the CLI's own check or the config's, both naming the flag and the bound
    bounds = ("2**63 - 1", "9223372036854775807", "greater than or equal to 0")
    assert "--seed" in err and any(b in err for b in bounds)


def test_cuda_without_cuda_is_refused_up_front(project, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for command in (["generate"], ["generate-large", "--scene", "s0"]):
        assert main([*command, "--root", str(project), "--device", "cuda"]) == 2
        err = _err(capsys)
        assert f"earthcrafter {command[0]}: device='cuda' requested by --device but CUDA is not available (torch" in err
    assert main(["generate", "--root", str(project), "--env", "paper"]) == 2  # the configuration's device
    assert "requested by generation.device (conf/paper/parameters_generation.yml)" in _err(capsys)
    args = ["dry-run", "--root", str(ROOT), "--models", "structvae"]
    assert main([*args, "--env", "base", "--device", "cuda:0"]) == 2
    assert "device='cuda:0' requested by --device but CUDA is not available" in _err(capsys)
    assert main([*args, "--env", "paper"]) == 2
    assert "requested by train_structvae.device of conf/paper" in _err(capsys)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert main(["generate", "--root", str(project), "--device", "cuda:3"]) == 2
    assert "this machine has 1 GPU(s)" in _err(capsys)


def test_other_runtime_errors_keep_their_traceback(monkeypatch):
    from earthcrafter.training import dry_run as dr

    def broken(*args, **kwargs):
        raise RuntimeError("a real bug")

    monkeypatch.setattr(dr, "dry_run", broken)
    with pytest.raises(RuntimeError, match="a real bug"):
        main(["dry-run", "--root", str(ROOT), "--env", "base", "--models", "structvae", "--device", "cpu"])


def test_the_commands_log_info_lines_unless_quiet(monkeypatch, capsys):
    def chatty(args):
        logging.getLogger("earthcrafter.some.module").info("skipping 2 tables")
        logging.getLogger("earthcrafter.some.module").warning("no MP4 written")
        return 0

    monkeypatch.setattr(commands, "cmd_info", chatty)
    assert main(["info"]) == 0
    assert capsys.readouterr().err.splitlines() == ["INFO earthcrafter.some.module: skipping 2 tables",
                                                    "WARNING earthcrafter.some.module: no MP4 written"]  # fmt: skip
    for quiet in (["-q", "info"], ["info", "--quiet"]):
        assert main(quiet) == 0
        assert capsys.readouterr().err.splitlines() == ["WARNING earthcrafter.some.module: no MP4 written"]
    logger = logging.getLogger("earthcrafter")
    assert logger.level == logging.NOTSET and logger.propagate and not logger.handlers  # as it was before main


def test_view_logs_the_tables_it_does_not_draw(tmp_path, capsys):
    from earthcrafter.geometry.voxel_mesh import voxel_mesh
    from earthcrafter.io.scene import write_mesh_ply

    write_mesh_ply(tmp_path / "voxels.ply", voxel_mesh(np.array([[0, 0, 0], [1, 0, 0]])))
    pd.DataFrame({"a": [1]}).to_parquet(tmp_path / "notes.parquet")
    assert main(["view", str(tmp_path), "--cdn"]) == 0
    err = capsys.readouterr().err
    assert "INFO earthcrafter.render.html_view" in err and "notes.parquet" in err
    assert main(["-q", "view", str(tmp_path), "--cdn"]) == 0
    assert "notes.parquet" not in capsys.readouterr().err


def test_default_model_paths_are_under_the_root_not_the_working_folder(project, capsys, monkeypatch):
    elsewhere = project / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["generate", "--root", str(project), "--device", "cpu"]) == 2
    assert str(project / "data" / "06_models") in _err(capsys)  # models not trained: named where they belong
