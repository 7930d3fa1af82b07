"""cache_latents under torchrun: two gloo ranks shard the tiles and return what one process returns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from latent_synth import save_models, write_tiles

from earthcrafter.io.latents import read_latent_tile

HERE = Path(__file__).parent


@pytest.mark.timeout(300)
def test_two_ranks_match_one_process(tmp_path):
    import cache_worker

    write_tiles(tmp_path / "voxels", ["train"] * 4 + ["val"] * 3).to_parquet(tmp_path / "manifest.parquet")
    save_models(tmp_path)
    (tmp_path / "ddp").mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("RANK", None), env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           str(HERE / "cache_worker.py"), str(tmp_path), str(tmp_path / "ddp")]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    single = cache_worker.run(tmp_path, tmp_path / "single")  # meanwhile, one process
    out, _ = proc.communicate(timeout=280)
    assert proc.returncode == 0, out[-4000:]

    ranks = [json.loads((tmp_path / "ddp" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1], "every rank returns the same outputs"
    ddp = ranks[0]
    assert ddp["metrics"]["world_size"] == 2 and ddp["metrics"]["encoded"] == 7
    for kind in ("struct", "tex"):  # all-reduced sums == one process's sums (up to summation order)
        assert ddp["stats"][kind]["count"] == single["stats"][kind]["count"]
        np.testing.assert_allclose(ddp["stats"][kind]["mean"], single["stats"][kind]["mean"], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(ddp["stats"][kind]["std"], single["stats"][kind]["std"], rtol=1e-12)
    assert {k: v for k, v in ddp["metrics"].items() if k.startswith("check_")} == \
        {k: v for k, v in single["metrics"].items() if k.startswith("check_")}  # fmt: skip
    assert [r["tile_id"] for r in ddp["table"]] == [r["tile_id"] for r in single["table"]]
    for a, b in zip(ddp["table"], single["table"]):
        for kind in ("struct", "tex"):
            la, lb = read_latent_tile(a[f"{kind}_path"]), read_latent_tile(b[f"{kind}_path"])
            np.testing.assert_array_equal(la.coords, lb.coords)
            np.testing.assert_array_equal(la.mean, lb.mean)
