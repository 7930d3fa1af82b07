"""One trainer for every model: devices, DDP, precision, EMA, checkpoints, progress, MLflow.

Run it on a CPU, one GPU, or many GPUs/nodes under ``torchrun`` — the same code; the
environment decides. A run is a pure function of (task, config, data, seed): resuming
from a checkpoint continues the same trajectory (weights, optimizer, EMA, scheduler, data
order and RNG state are all restored), and W ranks reproduce the single-process run on
the same global batch up to float rounding.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import random
import resource
import shutil
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from earthcrafter import config as ec_config
from earthcrafter import tracking as ec_tracking
from earthcrafter.io.atomic import atomic_path
from earthcrafter.sparse import set_activation_checkpointing
from earthcrafter.training import checkpoint as ckpt
from earthcrafter.training import distributed as dist
from earthcrafter.training.config import TrainerConfig
from earthcrafter.training.ema import EMA
from earthcrafter.training.figures import loss_curve_figure
from earthcrafter.training.sampler import GlobalBatchSampler, shard_indices
from earthcrafter.training.schedule import warmup_poly_scheduler
from earthcrafter.training.task import Task
from earthcrafter.training.tracking import set_tags_keeping_first, training_run

log = logging.getLogger(__name__)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay matrices/kernels, not biases, norms or embeddings' 1-D params."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def uses_bf16(precision: str, device: torch.device) -> bool:
    """Whether a run of ``precision`` trains under bf16 autocast on ``device`` (CUDA only)."""
    return device.type == "cuda" and precision in ("auto", "bf16")


def peak_memory_gb(device: torch.device) -> float:
    """Peak allocated CUDA memory, or the process's peak resident set size on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


@functools.cache
def _backend_report() -> dict[str, Any]:
    """earthcrafter.sparse's backend report (once per process: it inspects installed packages)."""
    try:
        from earthcrafter.sparse import backend_report
    except ImportError:
        return {}
    return dict(backend_report())


@functools.cache
def code_commit() -> str:
    """The git commit of the code this process runs (``-dirty`` with uncommitted changes), read once:
    every run a process trains (a sweep, a pipeline of stages) is tagged with the code it started
    with, not with commits made while it ran."""
    return ec_tracking.git_commit(Path(__file__).parent)


def _file_identity(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path), st.st_size, st.st_mtime_ns


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class _MicroBatches:
    """Split each rank's share of a global batch into ``accum`` micro-batches."""

    def __init__(self, sampler: GlobalBatchSampler, accum: int):
        if sampler.per_rank % accum:
            raise ValueError(
                f"trainer.accum_steps={accum} must divide the per-rank batch {sampler.per_rank} "
                f"(batch_size {sampler.batch_size} / world size {sampler.world_size})"
            )
        self.sampler, self.accum = sampler, accum

    def __iter__(self):
        size = self.sampler.per_rank // self.accum
        for draws in self.sampler:
            for i in range(self.accum):
                yield draws[i * size : (i + 1) * size]


# Settings that later versions added (last key component), with the value every run before them
# had: a checkpoint that does not record one ran with that value, so it still resumes.
ADDED_SETTINGS = {"coarse_patch": 1, "height_dropout": 0.0, "rotate": False, "subcell_shift": False}


def _changed(old: dict[str, Any], new: dict[str, Any], keys=None, prefix: str = "") -> list[str]:
    """``"<prefix><key>: old -> new"`` for every key (default: all of both) whose value differs;
    a key of :data:`ADDED_SETTINGS` that ``old`` lacks counts as its value there."""
    keys = sorted(set(old) | set(new)) if keys is None else keys
    missing = "<absent>"

    def before(k):
        return old.get(k, ADDED_SETTINGS.get(k.rsplit(".", 1)[-1], missing))

    return [f"{prefix}{k}: {before(k)!r} -> {new.get(k, missing)!r}" for k in keys if before(k) != new.get(k, missing)]


class Trainer:
    """Trains ``task``'s model on ``train_set`` and validates on ``val_set`` with the EMA weights.

    Outputs (rank 0, under ``out_dir``): ``checkpoints/step_*.pt`` (newest ``keep_last``),
    ``model.pt`` (EMA weights + ``task.export_config()`` and ``task.inputs``), ``figures/*.png`` and
    ``metrics.json``; the same in the MLflow run with the per-step and validation metrics.
    """

    def __init__(
        self,
        task: Task,
        config: TrainerConfig,
        train_set: Dataset,
        val_set: Dataset | None = None,
        *,
        out_dir: str | Path,
        run_name: str | None = None,
        tags: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        device: str = "auto",
        mlflow: bool = True,
        operational_sections: tuple[str, ...] = (),
    ):
        self.task, self.config = task, config
        self.train_set, self.val_set = train_set, val_set
        self.out_dir = Path(out_dir)
        self.run_name = run_name or task.name
        self.tags = {"model": task.name, **(tags or {})}
        self.params = params or {}
        self.device, self.use_mlflow = device, mlflow
        self.operational_sections = tuple(operational_sections)
        self._val_loader: DataLoader | None = None
        self.history: dict[str, list[dict[str, float]]] = {"train": [], "val": []}
        self.model: nn.Module | None = None
        self.ema: EMA | None = None
        self.run_id: str | None = None  # the MLflow run (when tracking; every rank gets rank 0's at the end)

    # ------------------------------------------------------------------ public

    @property
    def checkpoint_dir(self) -> Path:
        return self.out_dir / "checkpoints"

    def fit(self, stop_after: int | None = None) -> dict[str, float]:
        """Train to ``config.steps`` (resuming if a checkpoint exists); return final val metrics.

        ``stop_after``: leave after that global step as if the process were killed — no
        final checkpoint, validation or export (used to test resuming).
        """
        env = dist.setup(self.device)
        threads = torch.get_num_threads()
        if env.device.type == "cpu" and self.config.cpu_threads:
            # Small sparse ops are dominated by thread wake-ups; on a busy CPU one thread per
            # rank can be many times faster than oversubscribed OpenMP teams (see docs/structvae.md).
            torch.set_num_threads(self.config.cpu_threads)
        try:
            return self._fit(env, stop_after)
        finally:
            if torch.get_num_threads() != threads:
                torch.set_num_threads(threads)
            # The process group stays up for the process's lifetime (distributed.setup): a pipeline
            # trains several models in one torchrun process (StructFM's two stages, ablation sweeps,
            # `kedro run`), and re-initialising a destroyed group under torchrun's store hangs.

    # ------------------------------------------------------------------ internals

    def _autocast(self, env: dist.DistEnv):
        if self.config.precision == "bf16" and env.device.type != "cuda":
            log.warning("precision=bf16 requested on CPU: training in fp32")
        return torch.autocast(device_type=env.device.type, dtype=torch.bfloat16,
                              enabled=uses_bf16(self.config.precision, env.device))

    def _restore(self, env, model, opt, sched, ema) -> dict[str, Any]:
        # The training data's identity (a stat per tile: ~450k at paper scale), taken once on rank 0
        # before the first step: the resume decision compares it and every checkpoint records it; the
        # other ranks wait for it here, not inside a training step's collective.
        dist.decided_on_main(lambda: bool(self._train_data), env, "to fingerprint the training data")
        state = self._load_checkpoint(env) if self.config.resume else None
        if state is None:
            self._clear_stale_checkpoints(env)
            return {"step": 0, "train_time_s": 0.0, "skipped_steps": 0, "mlflow_run_id": None}
        try:
            model.load_state_dict(state["model"])
        except RuntimeError as e:
            raise ValueError(
                f"cannot resume from {self.checkpoint_dir}: its weights do not fit this model ({str(e)[:300]}...). "
                "Set trainer.resume=false to start over there, or choose another output folder."
            ) from None
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        ema.load_state_dict(state["ema"])
        self.history = state["history"]
        rngs = state["rng"]
        if len(rngs) == env.world_size:
            ckpt.set_rng_state(rngs[env.rank])
        else:
            log.warning("checkpoint from %d rank(s), now %d: RNG streams reseeded", len(rngs), env.world_size)
            _seed_all(self.config.seed + 1000 * state["step"] + env.rank)
        log.info("resumed from step %d (%s)", state["step"], self.checkpoint_dir)
        if state.get("git_commit", self._git_commit) != self._git_commit:  # code is not part of a run's identity
            log.warning("the checkpoint in %s was written by the code at commit %.12s, this is %.12s: continuing "
                        "it; trainer.resume=false trains again with this code", self.checkpoint_dir,
                        state["git_commit"], self._git_commit)
        return {"step": state["step"], "train_time_s": state["train_time_s"],
                "skipped_steps": state.get("skipped_steps", 0), "mlflow_run_id": state.get("mlflow_run_id")}

    def _load_checkpoint(self, env) -> dict[str, Any] | None:
        """The state to resume from, or None to start over, the same on every rank.

        Rank 0 picks the newest readable checkpoint and decides whether it continues this run
        (:meth:`_differences`; the training data's fingerprint, a ``stat`` per tile, is taken there
        alone) before any other rank reads it. A rank that sees the file (a shared filesystem)
        reads it itself; where some rank cannot, or its read fails, the state is sent from rank 0:
        a pickled multi-GB state through the process group (staged in GPU memory under NCCL).
        """
        found = None

        def decide():
            nonlocal found
            found = ckpt.load_latest_with_path(self.checkpoint_dir)
            return (_file_identity(found[0]), self._differences(found[1])) if found else (None, [])

        ident, differs = dist.decided_on_main(decide, env, f"to read the checkpoints in {self.checkpoint_dir}")
        if differs:
            log.warning("%s holds checkpoints of another configuration (%s): starting over",
                        self.checkpoint_dir, ", ".join(differs[:8]))
            return None
        if ident is None or not env.distributed:
            return found[1] if found else None
        state = found[1] if env.is_main else None
        path = Path(ident[0])  # seen by a rank as the same file (size, mtime), not a node-local namesake
        if not env.is_main and path.is_file() and _file_identity(path) == ident:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:  # noqa: BLE001 - a failed read on one rank must not leave the others waiting
                log.warning("rank %d cannot read %s (%s): receiving the state from rank 0", env.rank, path, e)
        if all(dist.all_gather_object(state is not None, env)):
            return state
        return dist.broadcast_object(found[1] if env.is_main else None, env)

    # Trainer settings that change the optimisation itself; the others (logging, validation and
    # checkpoint cadence, workers, threads) may change between a run and its resumption.
    RUN_DEFINING = ("steps", "batch_size", "lr", "min_lr_ratio", "warmup_steps", "poly_power", "weight_decay",
                    "betas", "grad_clip", "ema_decay", "ema_start", "seed")
    # Run parameters (last key component) that say how a run is executed or observed, not what
    # it learns: changing them keeps the run resumable. Everything else in ``params`` (data,
    # loss, rendering, model...) defines the run.
    OPERATIONAL = frozenset({"name", "output_dir", "out_dir", "report_dir", "mlflow", "device", "threads",
                             "num_workers", "cache_tiles", "max_val_tiles", "val_views", "root", "accum_steps",
                             "preview_tiles", "preview_size", "preview_split", "structvae_path", "texvae_path",
                             "target_psnr", "row", "require_lpips"})  # fmt: skip
    # Sections of ``params`` that do not define the run: the trainer settings (compared through
    # RUN_DEFINING), how validation samples, the ablation rows; plus the ``operational_sections``
    # given to the trainer (StructFM's other stage's trainer settings).
    OPERATIONAL_SECTIONS = ("trainer", "sample", "ablations")

    def _defining(self, flat: dict[str, Any]) -> dict[str, Any]:
        sections = (*self.OPERATIONAL_SECTIONS, *self.operational_sections)
        return {k: v for k, v in flat.items()
                if k.split(".", 1)[0] not in sections and k.rsplit(".", 1)[-1] not in self.OPERATIONAL}

    def _run_params(self) -> dict[str, Any]:
        """The flattened ``params`` that define the run (trainer keys are compared separately)."""
        return self._defining(ec_config.flatten(self.params))

    def _differences(self, state: dict[str, Any]) -> list[str]:
        """Keys in which ``state``'s run differs from this one (empty: safe to resume).

        Resuming continues one run (its schedule, data order and MLflow run); a checkpoint of a
        different model, data, loss or optimisation setting, or of other training tiles, is a
        different run and is not continued.
        """
        flat = ec_config.flatten
        diff = [] if "task_config" in state else ["model configuration not recorded"]
        diff += _changed(flat(state.get("task_config") or {}), flat(self.task.export_config()), prefix="model ")
        old, new = state.get("trainer_config", {}), self.config.model_dump(mode="json")
        diff += _changed(old, new, self.RUN_DEFINING, prefix="trainer.")
        diff += _changed(self._defining(state.get("run_params", {})), self._run_params())  # filtered alike
        if state.get("train_data") != self._train_data:
            diff.append("training data (tiles or their files changed)")
        if state.get("task_inputs") and self.task.inputs and state["task_inputs"] != self.task.inputs:
            diff.append("what the data was made with (latent statistics or VAE)")
        return diff

    @functools.cached_property
    def _git_commit(self) -> str:
        return code_commit()

    @functools.cached_property
    def _train_data(self) -> str:
        """The training set's identity: its ``fingerprint()`` (tile ids and file sizes) or its size.
        Rank 0's alone, taken once before training (:meth:`_restore`)."""
        fingerprint = getattr(self.train_set, "fingerprint", None)
        return fingerprint() if callable(fingerprint) else f"{len(self.train_set)} samples"

    @property
    def stale_checkpoint_dir(self) -> Path:
        return self.out_dir / "checkpoints_stale"

    def _clear_stale_checkpoints(self, env) -> None:
        """Starting over: checkpoints of an earlier run in this folder must not be resumed later.
        They are moved to ``checkpoints_stale/`` (replacing an older set there), not deleted: a
        setting changed by mistake costs a rename back, not the run."""
        def move_aside():
            stale = ckpt.list_checkpoints(self.checkpoint_dir)
            if stale:
                shutil.rmtree(self.stale_checkpoint_dir, ignore_errors=True)
                self.stale_checkpoint_dir.mkdir(parents=True, exist_ok=True)
                for _, path in stale:
                    os.replace(path, self.stale_checkpoint_dir / path.name)
                log.warning("starting %s from scratch: moved %d checkpoint(s) of an earlier run to %s (to resume "
                            "it, move them back and restore its settings; delete the folder to free the space)",
                            self.checkpoint_dir, len(stale), self.stale_checkpoint_dir)  # fmt: skip

        dist.decided_on_main(move_aside, env, f"to move the checkpoints of an earlier run out of {self.checkpoint_dir}")

    def _save(self, env, step, model, opt, sched, ema, train_time_s, skipped_steps, run_id) -> Path | None:
        rngs = dist.all_gather_object(ckpt.rng_state(), env)
        if not env.is_main:
            return None
        state = {
            "step": step,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "ema": ema.state_dict(),
            "rng": rngs,
            "data": GlobalBatchSampler(len(self.train_set), self.config.batch_size, seed=self.config.seed).state(step),
            "history": self.history,
            "train_time_s": train_time_s,
            "skipped_steps": skipped_steps,
            "mlflow_run_id": run_id,
            "trainer_config": self.config.model_dump(mode="json"),
            "task_config": self.task.export_config(),
            "task_inputs": self.task.inputs or {},
            "run_params": self._run_params(),
            "train_data": self._train_data,
            "git_commit": self._git_commit,
        }
        return ckpt.save_checkpoint(self.checkpoint_dir, step, state, self.config.keep_last)

    def _validate(self, env, model: nn.Module) -> dict[str, float]:
        if self.val_set is None or len(self.val_set) == 0:
            return {}
        cfg = self.config
        # the whole set, on any number of ranks (a subset is the dataset's own, e.g. max_val_tiles)
        if self._val_loader is None:  # one loader for the run: its workers start once, not at every validation
            batches = shard_indices(len(self.val_set), env.rank, env.world_size, cfg.val_batch_size)
            self._val_loader = DataLoader(self.val_set, batch_sampler=batches, collate_fn=self.task.collate,
                                          num_workers=cfg.num_workers, pin_memory=env.device.type == "cuda",
                                          persistent_workers=cfg.num_workers > 0)  # fmt: skip
        loader = self._val_loader
        total: dict[str, torch.Tensor] = {}
        model.eval()
        # Validation must not consume the training RNG streams (resumed runs stay identical).
        devices = [env.device] if env.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.no_grad(), self._autocast(env):
            bar = tqdm(loader, desc="validate", leave=False, disable=not (env.is_main and cfg.progress))
            for batch in bar:
                stats = self.task.validation_stats(model, self.task.to_device(batch, env.device))
                for k, v in stats.items():
                    total[k] = total.get(k, 0) + v.detach().double().cpu()
        # Every rank reduces the same keys, even one whose shard was empty.
        keys = sorted(set().union(*dist.all_gather_object(sorted(total), env)))
        if not keys:
            return {}
        flat = torch.stack([torch.as_tensor(total.get(k, 0.0), dtype=torch.float64).reshape(()) for k in keys])
        flat = dist.all_reduce_sum(flat.to(env.device) if env.device.type == "cuda" else flat, env).cpu()
        return self.task.metrics_from_stats(dict(zip(keys, flat.unbind())))

    def _log_params(self, env, num_params: int, step: int) -> None:
        if not ec_tracking.active():
            return
        flat = ec_config.flatten(self.params)
        flat.update({"trainer.world_size": env.world_size, "trainer.device": env.device.type,
                     "trainer.accum_steps": self.config.accum_steps, "model.num_params": num_params,
                     # what the run saw, after any subset the dataset applies (train_fraction, max_val_tiles)
                     "data.train_samples": len(self.train_set),
                     "data.val_samples": 0 if self.val_set is None else len(self.val_set)})
        flat.update(ec_config.flatten(_backend_report(), "backend."))
        # A resumed run may run on other devices or at another cadence: MLflow keeps the first
        # value of a param, so a changed one is logged beside it, named after the step it took effect.
        changed = ec_tracking.log_params(flat, changed_prefix=f"resume_{step}.")
        if changed:
            log.warning("resumed at step %d with changed settings (logged as resume_%d.*): %s",
                        step, step, ", ".join(changed[:8]))
        # A run resumed under other code keeps the commit it was started with; the resuming one is
        # tagged beside it, named after the step it took over.
        set_tags_keeping_first({"git_commit": self._git_commit}, changed_prefix=f"resume_{step}.")

    def _reduce_logs(self, env, sums: dict[str, float], weights: dict[str, float], counts: dict[str, float],
                     n: int) -> dict[str, float]:  # fmt: skip
        """Average each logged value over the steps of the window, on every rank, that logged it
        (``weights``: steps per key, default ``n``); sum work counts over ranks. Ranks may log
        different keys (a TexVAE rank whose batch was all skipped logs no image losses), so they
        agree on the keys first: the reductions must pair up."""
        keys, ckeys = sorted(sums), sorted(counts)
        if env.distributed:
            gathered = dist.all_gather_object((keys, ckeys), env)
            keys, ckeys = (sorted(set().union(*(g[i] for g in gathered))) for i in (0, 1))
        values = [sums.get(k, 0.0) for k in keys] + [weights.get(k, n) if k in sums else 0.0 for k in keys]
        t = torch.tensor(values + [counts.get(k, 0.0) for k in ckeys], dtype=torch.float64)
        t = dist.all_reduce_sum(t.to(env.device) if env.device.type == "cuda" else t, env).cpu()
        K = len(keys)
        out = {k: float(t[i] / t[K + i]) for i, k in enumerate(keys) if t[K + i] > 0}
        out.update({k: float(t[2 * K + i]) for i, k in enumerate(ckeys)})
        return out

    def _fit(self, env: dist.DistEnv, stop_after: int | None) -> dict[str, float]:
        cfg, task = self.config, self.task
        if len(self.train_set) == 0:
            raise ValueError(f"{task.name}: the training set is empty")
        if cfg.resume:  # a restarted job resumes rank 0's checkpoints: whichever node is rank 0 then must see them
            dist.check_shared_folder(self.out_dir, env)
        _seed_all(cfg.seed)  # identical initial weights on every rank (and in the EMA copy)
        model = task.build_model().to(env.device)
        if cfg.activation_checkpointing:
            blocks = set_activation_checkpointing(model)
            (log.info if blocks else log.warning)("%s: activation checkpointing in %d blocks", self.run_name, blocks)
        _seed_all(cfg.seed + env.rank)  # then one RNG stream per rank
        num_params = sum(p.numel() for p in model.parameters())
        ema = EMA(model, cfg.ema_decay, cfg.ema_start)
        opt = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas)
        sched = warmup_poly_scheduler(opt, total=cfg.steps, warmup=cfg.warmup_steps, power=cfg.poly_power, min_ratio=cfg.min_lr_ratio)
        resumed = self._restore(env, model, opt, sched, ema)
        step, train_time = resumed["step"], resumed["train_time_s"]
        self.model, self.ema = model, ema
        ddp = (
            DistributedDataParallel(model, device_ids=[env.local_rank] if env.device.type == "cuda" else None,
                                    find_unused_parameters=task.find_unused_parameters)
            if env.distributed else model
        )
        sampler = GlobalBatchSampler(len(self.train_set), cfg.batch_size, rank=env.rank, world_size=env.world_size,
                                     seed=cfg.seed, start_step=step)
        loader = DataLoader(
            self.train_set, batch_sampler=_MicroBatches(sampler, cfg.accum_steps), collate_fn=task.collate,
            num_workers=cfg.num_workers, pin_memory=env.device.type == "cuda",
            generator=torch.Generator().manual_seed(cfg.seed),
        )
        metrics: dict[str, float] = {}
        with training_run(self.run_name, self.tags, enabled=self.use_mlflow and env.is_main,
                          resume_run_id=resumed["mlflow_run_id"]) as run_id:
            self.run_id = run_id
            self._log_params(env, num_params, step)
            log.info("%s: %d parameters, world size %d on %s, steps %d -> %d",
                     self.run_name, num_params, env.world_size, env.device, step, cfg.steps)
            bar = tqdm(total=cfg.steps, initial=step, desc=self.run_name, disable=not (env.is_main and cfg.progress))
            sums, weights, counts = defaultdict(float), defaultdict(float), defaultdict(float)
            n_window, window_time = 0, 0.0
            skipped = resumed["skipped_steps"]  # non-finite steps so far, across resumptions
            batches = iter(loader)
            last_ckpt, last_ckpt_step = None, None
            while step < cfg.steps:
                t0 = time.perf_counter()
                ddp.train()
                opt.zero_grad(set_to_none=True)
                for micro in range(cfg.accum_steps):
                    t_data = time.perf_counter()
                    batch = task.to_device(next(batches), env.device)
                    sums["data_s"] += time.perf_counter() - t_data  # loading + copy to the device: the GPU idles
                    last = micro == cfg.accum_steps - 1  # DDP all-reduces the gradients once, in the last backward
                    sync = ddp.no_sync() if env.distributed and not last else contextlib.nullcontext()
                    with sync:
                        with self._autocast(env):
                            loss, logs = task.training_step(ddp, batch)
                        (loss / cfg.accum_steps).backward()
                    # the loss, once; a task's own "loss" log wins (None: this micro-batch has none to log,
                    # e.g. a TexVAE batch whose samples were all skipped, so the curve is not pulled to 0)
                    logs = {"loss": float(loss.detach()), **logs}
                    for k, v in logs.items():
                        if v is None:
                            continue
                        sums[k] += float(v) / cfg.accum_steps
                        weights[k] += 1 / cfg.accum_steps
                    for k, v in task.count(batch).items():
                        counts[k] += v
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
                lr = opt.param_groups[0]["lr"]
                if torch.isfinite(grad_norm):
                    opt.step()
                    ema.update(model)
                    sched.step()
                else:  # grads are all-reduced, so every rank takes the same decision
                    skipped += 1
                    log.warning("step %d: non-finite gradient norm, update skipped (%d so far)", step, skipped)
                    with warnings.catch_warnings():  # the schedule still advances with the step count
                        warnings.simplefilter("ignore", UserWarning)
                        sched.step()
                sums["grad_norm"] += float(grad_norm) if torch.isfinite(grad_norm) else 0.0
                step += 1
                n_window += 1
                log_now = step % cfg.log_every == 0 or step == cfg.steps
                if env.device.type == "cuda" and log_now:
                    # kernels run asynchronously: the window's time is read here, so let its work finish
                    # (only here: a wait every step would keep the next batch's loading from overlapping)
                    torch.cuda.synchronize(env.device)
                dt = time.perf_counter() - t0
                train_time += dt
                window_time += dt
                bar.update()

                if log_now:
                    row = self._reduce_logs(env, sums, weights, counts, n_window)
                    for k in list(counts):
                        row[f"{k}_per_s"] = row.pop(k) / max(window_time, 1e-9)
                    row.update(lr=lr, peak_mem_gb=peak_memory_gb(env.device), skipped_steps=skipped)
                    ec_tracking.log_metrics(row, step=step, prefix="train/")
                    self.history["train"].append({"step": step, **row})
                    bar.set_postfix(loss=f"{row.get('loss', float('nan')):.4g}", lr=f"{lr:.2e}")  # none: all skipped
                    log.debug("step %d: %s", step, {k: round(v, 5) for k, v in row.items()})
                    sums, weights, counts = defaultdict(float), defaultdict(float), defaultdict(float)
                    n_window, window_time = 0, 0.0

                if cfg.val_every and step % cfg.val_every == 0 and step < cfg.steps:
                    val = self._validate(env, ema.model)
                    log.info("%s step %d validation: %s", self.run_name, step, {k: round(v, 4) for k, v in val.items()})
                    ec_tracking.log_metrics(val, step=step, prefix="val/")
                    self.history["val"].append({"step": step, **val})

                if cfg.ckpt_every and step % cfg.ckpt_every == 0:
                    last_ckpt = self._save(env, step, model, opt, sched, ema, train_time, skipped, run_id)
                    last_ckpt_step = step

                if stop_after is not None and step >= stop_after:
                    bar.close()
                    return {}
            bar.close()
            if last_ckpt_step != step:  # decided identically on every rank (the save gathers RNG states)
                last_ckpt = self._save(env, step, model, opt, sched, ema, train_time, skipped, run_id)

            metrics = self._validate(env, ema.model)
            if metrics:
                self.history["val"].append({"step": step, **metrics})
            metrics.update(train_time_s=train_time, num_params=float(num_params), steps=float(step))
            ec_tracking.log_metrics(metrics, step=step, prefix="final/")
            ec_tracking.log_metrics({k: v for k, v in metrics.items() if k not in ("steps",)}, step=step, prefix="val/")
            self._val_loader = None  # its workers exit

            def finish():
                self._finish(env, ema, metrics, last_ckpt)
                return run_id, metrics

            # every rank returns rank 0's results (its run id, its training time): the pipeline's node
            # outputs are the same on every rank, whichever one writes them
            self.run_id, metrics = dist.decided_on_main(finish, env, f"to export {self.run_name}")
        if not env.distributed:  # under DDP rank 0 goes on with the next stage; the pipeline's end waits
            ec_tracking.wait_for_uploads()
        return metrics

    def _finish(self, env, ema: EMA, metrics: dict[str, float], last_ckpt: Path | None) -> None:
        """Export EMA weights, write figures and metrics, log artifacts (rank 0; the large ones upload
        in the background, so the other ranks are not held while they do)."""
        import json

        import matplotlib.pyplot as plt

        model_path = self.out_dir / "model.pt"
        with atomic_path(model_path) as tmp:
            torch.save({"model": self.task.name, "config": self.task.export_config(), "inputs": self.task.inputs or {},
                        "state_dict": ema.model.state_dict(), "metrics": metrics}, tmp)
        with atomic_path(self.out_dir / "metrics.json") as tmp:
            tmp.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        figs = {}
        if self.config.figures:
            figs["loss_curve"] = loss_curve_figure(self.history["train"], self.history["val"], self.run_name)
        if self.config.figures and self.val_set is not None and len(self.val_set):
            batch = self.task.collate([self.val_set[i] for i in range(min(2, len(self.val_set)))])
            with torch.random.fork_rng(devices=[env.device] if env.device.type == "cuda" else []), torch.no_grad():
                figs.update(self.task.figures(ema.model, self.task.to_device(batch, env.device)))
        fig_dir = self.out_dir / "figures"
        fig_dir.mkdir(parents=True, exist_ok=True)
        for name, fig in figs.items():
            with atomic_path(fig_dir / f"{name}.png") as tmp:
                fig.savefig(tmp, format="png")
            plt.close(fig)
            ec_tracking.log_artifact(fig_dir / f"{name}.png", "figures")
        # the exported model and the checkpoint (GBs at paper scale) upload in the background
        ec_tracking.log_artifact_in_background(model_path)
        if last_ckpt is not None:
            ec_tracking.log_artifact_in_background(last_ckpt, "checkpoints")
        ec_tracking.log_dict(self.history, "history.json")
