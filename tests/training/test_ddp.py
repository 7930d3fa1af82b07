"""Two gloo ranks under torchrun stay in sync and match one process on the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).parent


@pytest.mark.timeout(300)
def test_two_process_ddp_matches_single_process(tmp_path):
    import ddp_worker

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("RANK", None), env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           str(HERE / "ddp_worker.py"), str(tmp_path / "ddp")]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    single = ddp_worker.run(tmp_path / "single")  # meanwhile, the same training in this process
    out, _ = proc.communicate(timeout=280)
    assert proc.returncode == 0, out[-4000:]

    r0 = torch.load(tmp_path / "ddp" / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "ddp" / "rank1.pt", weights_only=True)
    ref = torch.load(tmp_path / "single" / "rank0.pt", weights_only=True)
    start = ddp_worker.StructVAETask(ddp_worker.StructVAERunConfig(model=ddp_worker.MODEL).model)
    torch.manual_seed(ddp_worker.TRAINER["seed"])
    init = start.build_model().state_dict()
    moved = 0
    for name, p in ref.items():
        assert torch.equal(r0[name], r1[name]), f"ranks diverged at {name}"
        torch.testing.assert_close(r0[name], p, rtol=1e-4, atol=2e-5, msg=f"DDP != single process at {name}")
        moved += not torch.equal(p, init[name])
    assert moved > len(ref) // 2  # the weights did train
    # validation sharded over the ranks and all-reduced == one process validating every tile
    ddp = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    for key, value in ddp["local"].items():
        assert ddp["trainer"][key] == pytest.approx(value, abs=1e-12), key
    assert {"acc", "iou", "precision", "recall", "acc_s2", "iou_s4"} <= ddp["local"].keys()


@pytest.mark.timeout(300)
def test_two_ranks_killed_and_resumed_end_as_an_uninterrupted_run(tmp_path):
    """Each rank reads the checkpoint itself (a shared folder) and restores its own RNG streams."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("RANK", None), env.pop("WORLD_SIZE", None)

    def torchrun(out, stop_after):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
               str(HERE / "resume_worker.py"), str(out), str(stop_after)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]

    torchrun(tmp_path / "straight", 0)
    torchrun(tmp_path / "resumed", 8)  # killed after step 8: the step-6 checkpoint remains
    assert sorted(p.name for p in (tmp_path / "resumed" / "checkpoints").iterdir()) == ["step_00000006.pt"]
    torchrun(tmp_path / "resumed", 0)
    for rank in (0, 1):
        a = torch.load(tmp_path / "straight" / f"rank{rank}.pt", weights_only=True)
        b = torch.load(tmp_path / "resumed" / f"rank{rank}.pt", weights_only=True)
        for name, value in a.items():
            assert torch.equal(value, b[name]), f"rank {rank}: {name}"


def _torchrun_disagree(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("RANK", None), env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           str(HERE / "disagree_worker.py"), *map(str, args)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]


@pytest.mark.timeout(300)
def test_ranks_logging_different_keys_reduce_them_in_step(tmp_path):
    """Rank 0 logs a key rank 1 does not: the ranks agree on the keys before reducing, and a key
    is averaged over the steps that logged it (not diluted by the rank that never did)."""
    _torchrun_disagree(tmp_path, "keys")
    h0, h1 = (json.loads((tmp_path / f"rank{r}.json").read_text())["history"] for r in (0, 1))
    # (throughput and memory are per rank: the rank's own time and process)
    per_rank = lambda k: k == "peak_mem_gb" or k.endswith("_per_s")  # noqa: E731
    reduced = lambda h: [{k: v for k, v in r.items() if not per_rank(k)} for r in h]  # noqa: E731
    assert [r["step"] for r in h0] == list(range(1, 7)) and reduced(h0) == reduced(h1)
    assert all(r["extra"] == 1.0 for r in h0)


@pytest.mark.timeout(300)
def test_rank_zero_alone_decides_whether_a_checkpoint_continues_the_run(tmp_path):
    """Killed at step 4, restarted where rank 1 would fingerprint the data differently: rank 0's
    decision (resume) holds on both ranks — a split decision hangs the job — and only rank 0
    takes the fingerprint (a stat per tile: at paper scale 450k per rank), once per run, before
    the first step (not at a checkpoint, with the other ranks waiting in the next collective)."""
    _torchrun_disagree(tmp_path, "fingerprint", 1)  # checkpoints at steps 2 and 4
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["fingerprints"] == [0] and r1["fingerprints"] == []
    _torchrun_disagree(tmp_path, "fingerprint", 2)  # resumed at 4, checkpoint at 6
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert [r["step"] for r in r0["history"]] == [r["step"] for r in r1["history"]] == [1, 2, 3, 4, 5, 6]
    assert r0["fingerprints"] == [0] and r1["fingerprints"] == []
    assert not (tmp_path / "checkpoints_stale").exists(), "resumed, not started over"
