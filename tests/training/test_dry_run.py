"""`earthcrafter dry-run`: a few real training steps of every configured model on synthetic tiles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from earthcrafter.commands import main
from earthcrafter.training import dry_run as dr

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def base_records():
    params = dr.load_parameters(ROOT / "conf", "base")
    return params, {r["model"]: r for r in dr.dry_run(params, steps=2)}


def test_every_base_model_trains_through_the_trainer(base_records):
    params, records = base_records
    assert list(records) == list(dr.MODELS)
    for r in records.values():
        assert r["status"] == "ok" and r["finite"] and not r["no_grad"] and len(r["losses"]) == 2, r
        assert r["device"] == "cpu" and r["world_size"] == 1 and r["precision"] == "fp32"
        assert 0 <= r["data_s"] < r["step_s"]  # loading is part of the step, not all of it
    sv, sfm, tfm = params["train_structvae"], params["train_structfm"], params["train_texfm"]
    # the configured batches and budgets, as the pipelines would train
    assert records["structvae"]["batch_per_rank"] == sv["trainer"]["batch_size"]
    assert 0 < records["structvae"]["voxels_per_sample"] <= sv["data"]["max_voxels"]
    assert records["structfm_coarse"]["voxels_per_sample"] == sfm["model"]["grid"] ** 3  # the whole latent grid
    assert records["structvae"]["voxel_budget"] == sv["data"]["max_voxels"]
    assert records["structfm_fine"]["voxel_budget"] is None and records["structfm_fine"]["skipped_steps"] == 0
    assert records["structfm_fine"]["voxels_per_sample"] < sfm["model"]["grid"] ** 3  # cells + a dilation ring
    assert records["structfm_fine"]["batch_per_rank"] == sfm["fine"]["batch_size"]
    assert 0 < records["texfm"]["voxels_per_sample"] <= tfm["data"]["max_voxels"]


def test_parameter_counts_are_those_of_the_trained_models(base_records):
    from earthcrafter.training.structvae import StructVAERunConfig, StructVAETask

    params, records = base_records
    net = StructVAETask(StructVAERunConfig.model_validate(params["train_structvae"]).model).build_model()
    assert records["structvae"]["params_m"] == round(sum(p.numel() for p in net.parameters()) / 1e6, 2)


def test_overrides_of_batch_and_voxel_budget():
    params = dr.load_parameters(ROOT / "conf", "base")
    (r,) = dr.dry_run(params, ["texfm"], steps=2, batch=1, voxels=300, checkpointing=True)
    assert r["batch_per_rank"] == 1 and 0 < r["voxels_per_sample"] <= 300 and r["activation_checkpointing"]
    assert r["status"] == "ok" and "ckpt" in dr.records_table([r])


def test_a_weight_without_gradient_fails_the_dry_run(monkeypatch, tmp_path, capsys):
    """What DDP would stop on: a weight no step uses is named, and the command exits 1."""
    from earthcrafter.training.structvae import StructVAETask

    build = StructVAETask.build_model

    def with_unused_weight(self):
        net = build(self)
        net.unused = torch.nn.Parameter(torch.zeros(3))
        return net

    monkeypatch.setattr(StructVAETask, "build_model", with_unused_weight)
    out = tmp_path / "records.json"
    rc = main(["dry-run", "--root", str(ROOT), "--env", "base", "--models", "structvae", "--steps", "1", "--json", str(out)])
    assert rc == 1
    (record,) = json.loads(out.read_text())
    assert record["status"] == "failed" and record["no_grad"] == ["unused"]
    assert "no gradient for ['unused']" in capsys.readouterr().err


def test_cli_prints_the_table_and_rejects_bad_arguments(tmp_path, capsys):
    assert main(["dry-run", "--root", str(ROOT), "--env", "base", "--models", "structfm_fine", "--steps", "2"]) == 0
    out = capsys.readouterr().out
    assert "| structfm_fine |" in out and "weights without gradient" in out
    assert main(["dry-run", "--root", str(ROOT), "--models", "structvea"]) == 2
    assert "unknown model(s) ['structvea']" in capsys.readouterr().err
    assert main(["dry-run", "--root", str(ROOT), "--env", "nope"]) == 2
    assert "no environment" in capsys.readouterr().err
    assert main(["dry-run", "--root", str(tmp_path)]) == 2
    assert "conf/base" in capsys.readouterr().err
    assert main(["dry-run", "--root", str(ROOT), "--env", "base", "--steps", "0"]) == 2
    assert "at least 1" in capsys.readouterr().err
    assert main(["dry-run", "--root", str(ROOT), "--device", "tpu"]) == 2
    with pytest.raises(ValueError, match="no train_texfm section"):
        dr.dry_run({"train_structvae": {}}, ["texfm"])


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_paper_models_train_on_the_cpu_at_a_small_budget():
    """The paper configuration's networks (41 M to 433 M parameters) build and train through the
    trainer on L = 360 tiles, one sample of a few thousand voxels each. The coarse StructFM stage
    works on the whole 45³ grid (91k cells at width 1024): beyond a CPU."""
    params = dr.load_parameters(ROOT / "conf", "paper")
    records = dr.dry_run(params, ["structvae", "texvae", "structfm_fine", "texfm"], steps=1, batch=1, voxels=1000,
                         tiles=1, device="cpu")  # conf/paper says cuda  # fmt: skip
    got = {r["model"]: r for r in records}
    for r in records:
        assert r["status"] == "ok" and not r["no_grad"], r
    assert {k: got[k]["params_m"] for k in got} == {"structvae": 41.0, "texvae": 170.23, "structfm_fine": 432.86,
                                                   "texfm": 346.1}  # docs/bench_paper.md  # fmt: skip
    assert got["texvae"]["activation_checkpointing"] and not got["structfm_fine"]["activation_checkpointing"]


@pytest.mark.timeout(300)
def test_under_torchrun_every_rank_trains_and_rank_0_reports(tmp_path):
    """The pre-flight command of a multi-GPU job, here on two gloo ranks, with the blocks recomputed in
    the backward pass (checkpointing under DDP)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "KEDRO_DISABLE_TELEMETRY": "1"}
    env.pop("RANK", None), env.pop("WORLD_SIZE", None)
    out = tmp_path / "records.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m",
           "earthcrafter.commands", "dry-run", "--root", str(ROOT), "--env", "base", "--models", "structvae", "texfm",
           "--steps", "2", "--batch", "1", "--checkpointing", "on", "--json", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.count("| structvae |") == 1  # one table, from rank 0
    records = json.loads(out.read_text())
    assert [(r["model"], r["world_size"], r["batch_per_rank"], r["activation_checkpointing"], r["status"])
            for r in records] == [("structvae", 2, 1, True, "ok"), ("texfm", 2, 1, True, "ok")]


def test_a_model_that_does_not_fit_is_reported_and_the_next_one_runs(monkeypatch):
    """On a GPU, an out-of-memory step is the answer for that model, not the end of the run."""
    from earthcrafter.training.trainer import Trainer

    fit = Trainer.fit

    def fit_or_oom(self, stop_after=None):
        if self.run_name == "dry-run/structfm_coarse":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 75.00 GiB")
        return fit(self, stop_after)

    monkeypatch.setattr(Trainer, "fit", fit_or_oom)
    params = dr.load_parameters(ROOT / "conf", "base")
    coarse, fine = dr.dry_run(params, ["structfm_coarse", "structfm_fine"], steps=1)
    assert coarse["status"] == "out of memory: CUDA out of memory. Tried to allocate 75.00 GiB"
    assert fine["status"] == "ok"
    assert "| structfm_coarse | out of memory" in dr.records_table([coarse, fine])
