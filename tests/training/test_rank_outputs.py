"""Under torchrun: every rank hands back rank 0's results, rank 0 alone writes the pipeline's
outputs, and a training refuses an output folder that some rank does not share."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from earthcrafter.datasets import (AtomicJSONDataset, AtomicParquetDataset, AtomicTextDataset, SceneFolderDataset,
                                  SceneTilesDataset)

HERE = Path(__file__).parent


@pytest.mark.timeout(300)
def test_two_ranks_return_rank_zeros_results_and_refuse_an_unshared_output_dir(tmp_path):
    import mlflow

    uri = "sqlite:///" + str(tmp_path / "mlflow.db")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore", "MLFLOW_TRACKING_URI": uri}
    for key in ("RANK", "WORLD_SIZE", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):  # this process's, not theirs
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           str(HERE / "rank_outputs_worker.py"), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))

    # a folder of each rank's own: both ranks raised before training, naming the folder and the rank
    for r in (r0, r1):
        assert f"output_dir {tmp_path / 'node0'} is not shared by all ranks: rank 1 on" in r["error"], r["error"]
        assert f"(looking in {tmp_path / 'node1'})" in r["error"] and "filesystem every node sees" in r["error"]
        assert "rank 0 on" not in r["error"]
    assert not (tmp_path / "node0" / "checkpoints").exists()

    # one folder: the same metrics and MLflow run on every rank, and no leftover of the check there
    assert r0["run_id"] and r0["run_id"] == r1["run_id"]
    assert r0["metrics"] == r1["metrics"] and "mse" in r0["metrics"]
    assert r0["shared"] == r1["shared"] and {"checkpoints", "model.pt"} <= set(r0["shared"])
    assert not [name for name in r0["shared"] if name.startswith(".")]
    assert mlflow.MlflowClient(tracking_uri=uri).get_run(r0["run_id"]).info.status == "FINISHED"


def test_other_ranks_save_nothing_and_load_what_they_were_given(tmp_path, monkeypatch):
    """Every project dataset writes on rank 0 alone; a file dataset on another rank hands its later
    loads what it was given (rank 0 may still be writing the file), as the file would read back."""
    def not_produced_here():
        raise AssertionError("a scene evaluated on a rank that does not save it")

    datasets = {
        "json": (AtomicJSONDataset(str(tmp_path / "m.json")), {"run_id": "abc", "steps": (1, 2)}),
        "text": (AtomicTextDataset(str(tmp_path / "t.md")), "| a |\n"),
        "parquet": (AtomicParquetDataset(str(tmp_path / "t.parquet")), pd.DataFrame({"x": [1, 2]}, index=[7, 8])),
        "scenes": (SceneFolderDataset(str(tmp_path / "scenes")), {"s1": not_produced_here}),
        "tiles": (SceneTilesDataset(str(tmp_path / "tiles")), {"s1": not_produced_here}),
    }
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    for dataset, data in datasets.values():
        dataset.save(data)
    assert list(tmp_path.iterdir()) == []
    assert datasets["json"][0].load() == {"run_id": "abc", "steps": [1, 2]}
    assert datasets["text"][0].load() == "| a |\n"
    pd.testing.assert_frame_equal(datasets["parquet"][0].load(), pd.DataFrame({"x": [1, 2]}))

    monkeypatch.setenv("RANK", "0")  # rank 0 writes
    dataset, data = datasets["json"]
    fresh = AtomicJSONDataset(str(tmp_path / "m.json"))
    fresh.save(data)
    assert json.loads((tmp_path / "m.json").read_text()) == {"run_id": "abc", "steps": [1, 2]}
