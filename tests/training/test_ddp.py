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
