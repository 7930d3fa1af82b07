"""Trainer: resumable bit for bit, atomic checkpoints, schedule, EMA, sampler, MLflow nesting."""

from __future__ import annotations

import math

import pytest
import torch
from toy import ToyData, ToyTask

from earthcrafter.training import GlobalBatchSampler, Trainer, TrainerConfig
from earthcrafter.training import checkpoint as ckpt
from earthcrafter.training.ema import EMA
from earthcrafter.training.schedule import warmup_poly_factor


def _config(**kw) -> TrainerConfig:
    base = dict(steps=12, batch_size=8, lr=1e-2, warmup_steps=2, ckpt_every=6, log_every=3, val_every=4,
                ema_decay=0.9, progress=False, figures=False)
    return TrainerConfig(**{**base, **kw})


def _trainer(out, params=None, **kw) -> Trainer:
    return Trainer(ToyTask(), _config(**kw), ToyData(), ToyData(16, seed=1), out_dir=out, mlflow=False, params=params)


def _assert_same_state(a: Trainer, b: Trainer) -> None:
    for (name, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(p, q), name
    for (name, p), q in zip(a.ema.model.state_dict().items(), b.ema.model.state_dict().values()):
        assert torch.equal(p, q), f"ema {name}"


def test_kill_and_resume_is_bit_identical(tmp_path):
    straight = _trainer(tmp_path / "straight")
    m_straight = straight.fit()

    killed = _trainer(tmp_path / "resumed")
    assert killed.fit(stop_after=9) == {}  # dies 3 steps after the step-6 checkpoint
    assert [s for s, _ in ckpt.list_checkpoints(killed.checkpoint_dir)] == [6]
    resumed = _trainer(tmp_path / "resumed")
    m_resumed = resumed.fit()

    _assert_same_state(straight, resumed)
    state_a = ckpt.load_latest(straight.checkpoint_dir)
    state_b = ckpt.load_latest(resumed.checkpoint_dir)
    for k, v in state_a["optimizer"]["state"].items():
        assert torch.equal(v["exp_avg_sq"], state_b["optimizer"]["state"][k]["exp_avg_sq"])
    assert state_a["scheduler"] == state_b["scheduler"]
    assert m_straight["mse"] == m_resumed["mse"]
    # the resumed loss history continues the straight one from the checkpoint on
    assert [r["loss"] for r in straight.history["train"]] == [r["loss"] for r in resumed.history["train"]]


def test_resume_disabled_starts_over(tmp_path):
    a = _trainer(tmp_path / "r", steps=6)
    a.fit()
    b = _trainer(tmp_path / "r", steps=6, resume=False)
    b.fit()
    _assert_same_state(a, b)  # same seed, from scratch: same result, and no crash on existing files


def test_a_checkpoint_of_another_configuration_is_not_resumed(tmp_path, caplog):
    """Changing a run-defining setting (here the learning rate) in the same folder starts a new
    run: the result equals a fresh run of the new setting, and the old checkpoints are gone."""
    old = _trainer(tmp_path / "r", steps=6)
    old.fit()
    with caplog.at_level("WARNING"):
        new = _trainer(tmp_path / "r", steps=6, lr=5e-3, log_every=2)  # cadence changes alone would resume
        new.fit()
    assert "trainer.lr: 0.01 -> 0.005" in caplog.text and "starting over" in caplog.text
    fresh = _trainer(tmp_path / "fresh", steps=6, lr=5e-3)
    fresh.fit()
    _assert_same_state(new, fresh)


def test_starting_over_moves_the_old_checkpoints_aside(tmp_path):
    """A changed setting starts a new run; the old run's checkpoints are kept in checkpoints_stale/
    (a setting changed by mistake must not cost the run), and a later start over replaces them."""
    _trainer(tmp_path / "r", steps=6).fit()
    _trainer(tmp_path / "r", steps=6, lr=5e-3).fit()
    stale = tmp_path / "r" / "checkpoints_stale"
    assert sorted(p.name for p in stale.iterdir()) == ["step_00000006.pt"]
    assert ckpt.load_latest(stale)["trainer_config"]["lr"] == 1e-2
    _trainer(tmp_path / "r", steps=6, lr=2e-3).fit()
    assert ckpt.load_latest(stale)["trainer_config"]["lr"] == 5e-3


def test_logged_training_loss_is_the_loss_trained_on(tmp_path):
    """The train/loss of every step is the loss the step returned, once, even when the task also
    logs it under "loss" (the flows did, and their curves read twice the loss)."""
    returned = []

    class LogsItsLoss(ToyTask):
        def training_step(self, model, batch):
            loss, logs = super().training_step(model, batch)
            returned.append(float(loss.detach()))
            return loss, {**logs, "loss": returned[-1]}

    trainer = Trainer(LogsItsLoss(), _config(steps=5, log_every=1, val_every=0), ToyData(), out_dir=tmp_path,
                      mlflow=False)  # fmt: skip
    trainer.fit()
    assert [r["loss"] for r in trainer.history["train"]] == pytest.approx(returned, rel=1e-6)

    class SkipsEveryOtherStep(ToyTask):  # a step whose batch had nothing to learn from logs no loss
        def training_step(self, model, batch):
            loss, logs = super().training_step(model, batch)
            returned.append(float(loss.detach()))
            return loss, {**logs, "loss": returned[-1] if len(returned) % 2 else None}

    returned.clear()
    trainer = Trainer(SkipsEveryOtherStep(), _config(steps=6, log_every=2, val_every=0), ToyData(),
                      out_dir=tmp_path / "skips", mlflow=False)  # fmt: skip
    trainer.fit()
    assert [r["loss"] for r in trainer.history["train"]] == pytest.approx(returned[::2], rel=1e-6)

    # logged every step: a window of one skipped step has no loss; training goes on (the progress
    # bar and the loss-curve figure read rows without one), and the row says nothing rather than 0
    returned.clear()
    trainer = Trainer(SkipsEveryOtherStep(), _config(steps=4, log_every=1, val_every=0, progress=True), ToyData(),
                      out_dir=tmp_path / "skips1", mlflow=False)  # fmt: skip
    trainer.fit()
    assert ["loss" in r for r in trainer.history["train"]] == [True, False, True, False]
    from earthcrafter.training.figures import loss_curve_figure

    loss_curve_figure(trainer.history["train"], [])


def test_the_other_stages_and_validation_sampling_do_not_define_a_run(tmp_path, caplog):
    """StructFM passes its whole configuration: the coarse stage's run must not start over when the
    fine stage's trainer settings, the validation sampler, previews or ablation rows change."""
    params = {"model": {"width": 8}, "coarse": {"lr": 1e-2}, "fine": {"log_every": 10}, "sample": {"steps": 25},
              "preview_tiles": 3, "ablations": {}}  # fmt: skip
    make = lambda p: Trainer(ToyTask(), _config(), ToyData(), out_dir=tmp_path / "coarse", mlflow=False,  # noqa: E731
                             params=p, operational_sections=("coarse", "fine"))  # fmt: skip
    make(params).fit(stop_after=7)
    other = {**params, "fine": {"log_every": 50, "lr": 1e-3}, "sample": {"steps": 5}, "preview_tiles": 0,
             "ablations": {"dense": {"variant": "dense"}}}  # fmt: skip
    with caplog.at_level("WARNING"):
        make(other).fit()
    assert "starting over" not in caplog.text
    with caplog.at_level("WARNING"):
        make({**other, "model": {"width": 16}}).fit()
    assert "model.width: 8 -> 16" in caplog.text and "starting over" in caplog.text


def test_changing_only_the_cadence_resumes(tmp_path):
    killed = _trainer(tmp_path / "r")
    killed.fit(stop_after=7)
    resumed = _trainer(tmp_path / "r", log_every=1, val_every=0)
    resumed.fit()
    steps = [r["step"] for r in resumed.history["train"]]
    assert steps[:2] == [3, 6] and steps[2:] == list(range(7, 13))  # continued from the step-6 checkpoint


def test_run_parameters_decide_what_resumes(tmp_path, caplog):
    """The run's own parameters (data, loss... as the pipeline passes them for MLflow) are part of
    its identity: a changed data setting starts over; a changed operational one (workers,
    output names, validation subset) resumes."""
    params = {"data": {"view_width": 16, "num_workers": 0, "max_val_tiles": 0}, "name": "a", "trainer": {"log_every": 3}}
    killed = _trainer(tmp_path / "r", params)
    killed.fit(stop_after=7)
    operational = {"data": {"view_width": 16, "num_workers": 2, "max_val_tiles": 4}, "name": "b", "trainer": {"log_every": 1}}
    with caplog.at_level("WARNING"):
        resumed = _trainer(tmp_path / "r", operational)
        resumed.fit()
    assert "starting over" not in caplog.text  # continued the run
    with caplog.at_level("WARNING"):
        changed = _trainer(tmp_path / "r", {**operational, "data": {**operational["data"], "view_width": 32}})
        changed.fit()
    assert "data.view_width: 16 -> 32" in caplog.text and "starting over" in caplog.text
    fresh = _trainer(tmp_path / "fresh")
    fresh.fit()
    _assert_same_state(changed, fresh)  # a new run from scratch


def test_a_checkpoint_from_before_a_setting_existed_resumes(tmp_path, caplog):
    """A setting a later version added (``ADDED_SETTINGS``) is absent from older checkpoints: they
    ran with its old value, so the same value resumes and another starts over."""
    killed = _trainer(tmp_path / "r", {"model": {"width": 8}})
    killed.fit(stop_after=7)
    with caplog.at_level("WARNING"):
        resumed = _trainer(tmp_path / "r", {"model": {"width": 8, "height_dropout": 0.0}})
        resumed.fit()
    assert "starting over" not in caplog.text  # continued the run
    with caplog.at_level("WARNING"):
        changed = _trainer(tmp_path / "r", {"model": {"width": 8, "height_dropout": 0.5}})
        changed.fit()
    assert "model.height_dropout: 0.0 -> 0.5" in caplog.text and "starting over" in caplog.text


def test_a_checkpoint_trained_on_other_data_is_not_resumed(tmp_path, caplog):
    """Same configuration, other training samples (here: another draw of the same size; in the
    pipelines: other tiles or re-written tile files): a finished run must not be handed back."""
    done = Trainer(ToyTask(), _config(steps=6), ToyData(), ToyData(16, seed=1), out_dir=tmp_path / "r", mlflow=False)
    done.fit()
    with caplog.at_level("WARNING"):
        other = Trainer(ToyTask(), _config(steps=6), ToyData(seed=5), ToyData(16, seed=1), out_dir=tmp_path / "r", mlflow=False)
        other.fit()
    assert "training data" in caplog.text and "starting over" in caplog.text
    fresh = Trainer(ToyTask(), _config(steps=6), ToyData(seed=5), ToyData(16, seed=1), out_dir=tmp_path / "f", mlflow=False)
    fresh.fit()
    _assert_same_state(other, fresh)


def test_a_tile_manifest_fingerprint_sees_ids_and_file_sizes(tmp_path):
    import pandas as pd

    from earthcrafter.training.voxel_data import rows_fingerprint

    for name, text in (("a", "xx"), ("b", "yyy")):
        (tmp_path / f"{name}.parquet").write_text(text)
    rows = pd.DataFrame({"tile_id": ["a", "b"], "path": [str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")]})
    fp = rows_fingerprint(rows, ("path",))
    assert fp == rows_fingerprint(rows.iloc[::-1], ("path",))  # order-free
    assert fp != rows_fingerprint(rows.iloc[:1], ("path",))  # another tile set
    (tmp_path / "b.parquet").write_text("yyyy")
    assert fp != rows_fingerprint(rows, ("path",))  # a re-written tile


def test_checkpoint_crash_mid_write_keeps_previous(tmp_path, monkeypatch):
    d = tmp_path / "ck"
    ckpt.save_checkpoint(d, 5, {"w": torch.arange(4.0)}, keep_last=2)

    def crashing_save(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"half a checkpo")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt.torch, "save", crashing_save)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint(d, 10, {"w": torch.zeros(4)}, keep_last=1)
    monkeypatch.undo()
    assert [s for s, _ in ckpt.list_checkpoints(d)] == [5]
    assert sorted(p.name for p in d.iterdir()) == ["step_00000005.pt"]  # no temp file left
    assert torch.equal(ckpt.load_latest(d)["w"], torch.arange(4.0))


def test_unreadable_newest_checkpoint_falls_back(tmp_path):
    d = tmp_path / "ck"
    ckpt.save_checkpoint(d, 1, {"w": torch.ones(2)}, keep_last=3)
    ckpt.checkpoint_path(d, 2).write_bytes(b"garbage")
    assert torch.equal(ckpt.load_latest(d)["w"], torch.ones(2))


def test_keep_last(tmp_path):
    for s in range(5):
        ckpt.save_checkpoint(tmp_path, s, {"s": s}, keep_last=2)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [3, 4]


def test_schedule_warmup_then_poly():
    f = lambda s: warmup_poly_factor(s, total=110, warmup=10, power=2.0, min_ratio=0.1)  # noqa: E731
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.25)
    assert f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)
    assert all(f(s) >= f(s + 1) for s in range(10, 120))


def test_ema_matches_formula():
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, decay=0.8, start=1)
    w0 = model.weight.detach().clone()
    ema.update(model)  # before start: copy
    assert torch.equal(ema.model.weight, w0)
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    torch.testing.assert_close(ema.model.weight, 0.8 * w0 + 0.2 * (w0 + 1.0))


def test_sampler_ranks_partition_the_global_batch():
    n, B = 10, 4
    single = GlobalBatchSampler(n, B, seed=3)
    ranks = [GlobalBatchSampler(n, B, rank=r, world_size=2, seed=3) for r in range(2)]
    for step in range(7):
        whole = single.draws(step)
        assert ranks[0].draws(step) + ranks[1].draws(step) == whole
        assert len({d.seed for d in whole}) == B
    # every epoch is a permutation of the dataset
    stream = [d.index for s in range(5) for d in single.draws(s)]  # 20 draws = 2 epochs
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:]) == list(range(10))
    resumed = iter(GlobalBatchSampler(n, B, seed=3, start_step=5))
    assert next(resumed) == single.draws(5)
    with pytest.raises(ValueError, match="not divisible"):
        GlobalBatchSampler(n, 5, world_size=2)


def test_nonfinite_step_is_skipped(tmp_path):
    class NaNTask(ToyTask):
        def training_step(self, model, batch):
            loss, logs = super().training_step(model, batch)
            return loss * float("nan"), logs

    t = Trainer(NaNTask(), _config(steps=3, ckpt_every=0, val_every=0), ToyData(), out_dir=tmp_path, mlflow=False)
    t.fit()
    torch.manual_seed(0)
    init = NaNTask().build_model()
    for p, q in zip(t.model.parameters(), init.parameters()):
        assert torch.equal(p, q)  # no update was applied
    assert t.history["train"][-1]["skipped_steps"] == 3


@pytest.mark.parametrize("steps, accum", [(1, 2), (4, 4)])
def test_accumulation_matches_full_batch(tmp_path, steps, accum):
    """``trainer.accum_steps`` (any model's trainer section): ``accum`` micro-batches of
    ``batch / accum`` take the step one batch of ``batch`` takes."""
    class NoDropout(ToyTask):
        def build_model(self):
            return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 1))

    whole = _config(steps=steps, warmup_steps=0, ckpt_every=0, val_every=0)
    micro = _config(steps=steps, warmup_steps=0, ckpt_every=0, val_every=0, accum_steps=accum)
    a = Trainer(NoDropout(), whole, ToyData(), out_dir=tmp_path / "a", mlflow=False)
    b = Trainer(NoDropout(), micro, ToyData(), out_dir=tmp_path / "b", mlflow=False)
    a.fit(), b.fit()
    torch.manual_seed(0)
    moved = 0
    for p, q, p0 in zip(a.model.parameters(), b.model.parameters(), NoDropout().build_model().parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
        moved += not torch.equal(p, p0)
    assert moved  # the step did train


def test_accum_steps_is_a_trainer_setting():
    assert TrainerConfig(batch_size=8, accum_steps=2).accum_steps == 2
    with pytest.raises(ValueError, match="multiple of accum_steps"):
        TrainerConfig(batch_size=6, accum_steps=4)
    from earthcrafter.training.structvae import StructVAERunConfig

    assert StructVAERunConfig(trainer={"batch_size": 4, "accum_steps": 2}).trainer.accum_steps == 2
    with pytest.raises(ValueError, match="train_structvae.trainer.accum_steps"):
        StructVAERunConfig(accum_steps=2)


def test_mlflow_nested_run_with_tags_metrics_artifacts(tmp_path, mlflow_uri):
    import mlflow

    mlflow.set_experiment("trainer-tests")
    with mlflow.start_run(run_name="parent") as parent:
        t = Trainer(ToyTask(), _config(figures=True), ToyData(), ToyData(8), out_dir=tmp_path,
                    run_name="toy/nested", tags={"ablation": "none", "table": "0"}, params={"x": {"y": 2}})
        metrics = t.fit()
    runs = mlflow.search_runs(filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'", output_format="list")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_name == "toy/nested" and run.info.status == "FINISHED"
    assert run.data.tags["model"] == "toy" and run.data.tags["ablation"] == "none"
    assert run.data.params["x.y"] == "2" and run.data.params["trainer.world_size"] == "1"
    assert math.isclose(run.data.metrics["final/mse"], metrics["mse"])
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in history] == [3, 6, 9, 12]
    arts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"model.pt", "figures", "checkpoints", "history.json"} <= arts
    assert (tmp_path / "figures" / "loss_curve.png").is_file()
    exported = torch.load(tmp_path / "model.pt", weights_only=True)
    assert exported["config"] == {"in": 8}


def test_top_level_run_without_parent(tmp_path, mlflow_uri):
    import mlflow

    assert mlflow.active_run() is None
    t = Trainer(ToyTask(), _config(steps=2, warmup_steps=0, val_every=0, ckpt_every=0), ToyData(), out_dir=tmp_path, run_name="toy/top")
    t.fit()
    assert mlflow.active_run() is None
    run = mlflow.search_runs(filter_string="attributes.run_name = 'toy/top'", search_all_experiments=True,
                             output_format="list")[0]
    assert "mlflow.parentRunId" not in run.data.tags


def test_loading_time_is_logged_apart(tmp_path):
    """``data_s``: the part of a step spent waiting for the loader (what idles a GPU), per step."""
    import time

    class SlowData(ToyData):
        def __getitem__(self, item):
            time.sleep(0.005)
            return super().__getitem__(item)

    for accum in (1, 2):  # per optimiser step, over all its micro-batches
        t = Trainer(ToyTask(), _config(steps=4, log_every=2, ckpt_every=0, val_every=0, accum_steps=accum),
                    SlowData(), out_dir=tmp_path / str(accum), mlflow=False)
        t.fit()
        for row in t.history["train"]:
            step_s = 8 / row["samples_per_s"]  # batch_size 8
            assert 8 * 0.005 <= row["data_s"] < step_s  # 8 samples loaded per step, inside the step's time


def test_resuming_a_tracked_run_with_changed_settings(tmp_path, mlflow_uri, caplog):
    """MLflow never changes a logged param: a run resumed at another cadence (or on more GPUs) keeps
    the first values and logs the new ones beside them, named after the step they took effect."""
    import mlflow

    def _trainer_tracked(**kw) -> Trainer:  # the pipelines log their whole section, trainer settings included
        cfg = _config(**kw)
        return Trainer(ToyTask(), cfg, ToyData(), ToyData(16, seed=1), out_dir=tmp_path, run_name="toy/resumed",
                       params={"trainer": cfg.model_dump(mode="json")})

    killed = _trainer_tracked(log_every=3)
    killed.fit(stop_after=7)
    resumed = _trainer_tracked(log_every=2)
    with caplog.at_level("WARNING"):
        resumed.fit()
    assert resumed.run_id == killed.run_id  # one run, continued
    params = mlflow.get_run(resumed.run_id).data.params
    assert params["trainer.log_every"] == "3" and params["resume_6.trainer.log_every"] == "2"
    assert "resume_6.trainer.steps" not in params  # unchanged settings are not repeated
    assert "changed settings" in caplog.text and "trainer.log_every" in caplog.text
    assert mlflow.get_run(resumed.run_id).info.status == "FINISHED"


def test_skipped_step_count_survives_a_resume(tmp_path):
    class NaNTask(ToyTask):
        def training_step(self, model, batch):
            loss, logs = super().training_step(model, batch)
            return loss * float("nan"), logs

    cfg = dict(steps=6, ckpt_every=3, val_every=0, log_every=3, warmup_steps=0)
    Trainer(NaNTask(), _config(**cfg), ToyData(), out_dir=tmp_path, mlflow=False).fit(stop_after=4)
    resumed = Trainer(NaNTask(), _config(**cfg), ToyData(), out_dir=tmp_path, mlflow=False)
    resumed.fit()
    assert resumed.history["train"][-1]["skipped_steps"] == 6  # 3 before the checkpoint + 3 after it


def test_resuming_a_checkpoint_of_other_code_warns(tmp_path, caplog):
    """Code is not part of a run's identity (a bug fix must not throw a long run away), but a
    finished run handed back after a code change must not pass unnoticed."""
    _trainer(tmp_path).fit(stop_after=7)
    again = _trainer(tmp_path)
    again.__dict__["_git_commit"] = "0123456789abcdef-other"
    with caplog.at_level("INFO"):
        again.fit()
    assert "written by the code at commit" in caplog.text and "trainer.resume=false" in caplog.text
    assert "resumed from step 6" in caplog.text  # it did continue the run


def test_validation_with_loader_workers_matches_the_main_process(tmp_path):
    """One validation loader per run, its workers kept between validations: the same metrics at
    every validation as validating in the main process."""
    a, b = _trainer(tmp_path / "a", num_workers=0), _trainer(tmp_path / "b", num_workers=1)
    ma, mb = a.fit(), b.fit()
    assert ma.pop("train_time_s") > 0 and mb.pop("train_time_s") > 0 and ma == mb
    assert len(a.history["val"]) == 3 and a.history["val"] == b.history["val"]
    assert b._val_loader is None  # the workers are gone after the run


def test_a_checkpoint_of_flows_on_other_latents_is_not_resumed(tmp_path, caplog):
    """A flow's training data is latents made with statistics and a VAE (``task.inputs``): after the
    latents are cached again with another VAE, the tile files keep their names and sizes, so only
    those inputs tell that a checkpoint learned from other data."""
    def trainer(inputs):
        task = ToyTask()
        task.inputs = inputs
        return Trainer(task, _config(), ToyData(), out_dir=tmp_path, mlflow=False)

    trainer({"kind": "struct", "vae": {"sha256": "a"}}).fit(stop_after=7)
    with caplog.at_level("WARNING"):
        trainer({"kind": "struct", "vae": {"sha256": "a"}}).fit()
    assert "starting over" not in caplog.text
    with caplog.at_level("WARNING"):
        trainer({"kind": "struct", "vae": {"sha256": "b"}}).fit()
    assert "latent statistics or VAE" in caplog.text and "starting over" in caplog.text


@pytest.fixture
def commits(monkeypatch):
    """The commit reader answers with the next of the commits appended to the yielded list (the code
    changing while a process runs); the process's cached commit is cleared before and after."""
    from earthcrafter import tracking
    from earthcrafter.training import trainer as trainer_module

    answers: list[str] = []
    monkeypatch.setattr(tracking, "git_commit", lambda cwd=None: answers.pop(0))
    trainer_module.code_commit.cache_clear()
    yield answers
    trainer_module.code_commit.cache_clear()


def test_every_run_of_a_process_carries_the_commit_it_started_with(tmp_path, mlflow_uri, commits):
    import mlflow

    commits += ["A", "B"]  # a commit lands while the first run trains
    runs = []
    for name in ("first", "second"):
        t = Trainer(ToyTask(), _config(steps=2, warmup_steps=0, val_every=0, ckpt_every=0), ToyData(),
                    out_dir=tmp_path / name, run_name=f"toy/{name}")
        t.fit()
        runs.append(t.run_id)
    assert [mlflow.get_run(r).data.tags["git_commit"] for r in runs] == ["A", "A"]


def test_a_resumed_run_keeps_its_commit_and_tags_the_resuming_one(tmp_path, mlflow_uri, commits):
    """Killed under commit A, resumed to the end under B, the finished run handed back again under C
    (each a new process): the run stays labelled with the code it was started with."""
    import mlflow

    from earthcrafter.training import trainer as trainer_module

    def run(commit, **kw):
        trainer_module.code_commit.cache_clear()  # a new process
        commits.append(commit)
        t = Trainer(ToyTask(), _config(val_every=0), ToyData(), out_dir=tmp_path, run_name="toy/commits")
        t.fit(**kw)
        return t.run_id

    ids = {run("A", stop_after=7), run("B"), run("C")}
    assert len(ids) == 1  # one run, continued
    tags = mlflow.get_run(ids.pop()).data.tags
    assert tags["git_commit"] == "A"
    assert tags["resume_6.git_commit"] == "B" and tags["resume_12.git_commit"] == "C"


@pytest.mark.parametrize("resume", [True, False])
def test_the_training_data_is_fingerprinted_once_before_the_first_step(tmp_path, resume):
    """A fingerprint is a stat per tile (~450k at paper scale): taken once, before training (under
    DDP the other ranks wait in no step's collective for it), whatever the number of checkpoints."""
    steps_at_call = []

    class CountingTask(ToyTask):
        steps = 0

        def training_step(self, model, batch):
            CountingTask.steps += 1
            return super().training_step(model, batch)

    class CountedData(ToyData):
        def fingerprint(self):
            steps_at_call.append(CountingTask.steps)
            return super().fingerprint()

    t = Trainer(CountingTask(), _config(ckpt_every=2, val_every=0, resume=resume), CountedData(), out_dir=tmp_path,
                mlflow=False)
    t.fit()
    assert len(ckpt.list_checkpoints(t.checkpoint_dir)) == 2 and CountingTask.steps == 12  # 6 saved, 2 kept
    assert steps_at_call == [0]
    assert ckpt.load_latest(t.checkpoint_dir)["train_data"] == ToyData().fingerprint()
