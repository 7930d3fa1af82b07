"""StructFM and TexFM under torchrun: two gloo ranks train both flows, stay in sync, and match one
process on the same global batch (every random draw is a function of the sample's seed, and the
loss is a mean per sample, so the tiles' unequal voxel counts weigh the same on any split)."""

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
def test_two_ranks_train_the_flows_in_sync_and_as_one_process(tmp_path):
    sys.path.insert(0, str(HERE.parent / "latents"))
    from latent_synth import save_models, write_tiles

    from earthcrafter.latents.cache import cache_latents

    manifest = write_tiles(tmp_path / "voxels", ["train"] * 4 + ["val"] * 2)
    struct, tex = save_models(tmp_path)
    table, stats, _, _ = cache_latents(manifest, {"structvae_path": str(struct), "texvae_path": str(tex),
                                                  "out_dir": str(tmp_path / "latents"), "progress": False,
                                                  "mlflow": False})  # fmt: skip
    table.to_parquet(tmp_path / "manifest.parquet")
    (tmp_path / "stats.json").write_text(json.dumps(stats))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("RANK", None), env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           str(HERE / "flow_ddp_worker.py"), str(tmp_path), str(tmp_path / "ddp")]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sys.path.insert(0, str(HERE))
    import flow_ddp_worker

    flow_ddp_worker.run(tmp_path, tmp_path / "single")  # meanwhile, the same trainings in this process
    out, _ = proc.communicate(timeout=280)
    assert proc.returncode == 0, out[-4000:]
    r0, r1 = (torch.load(tmp_path / "ddp" / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    ref = torch.load(tmp_path / "single" / "rank0.pt", weights_only=True)
    sizes = manifest.query("split == 'train'")["num_voxels"]
    assert sizes.nunique() > 1, "the tiles must differ in size for the loss weighting to matter"
    for model in ("structfm", "texfm"):
        assert r0[model].keys() == r1[model].keys() == ref[model].keys()
        for name, value in r0[model].items():
            assert torch.equal(value, r1[model][name]), f"{model}: ranks diverged at {name}"
            torch.testing.assert_close(value, ref[model][name], rtol=1e-4, atol=2e-5,
                                       msg=f"{model}: DDP != single process at {name}")  # fmt: skip
    assert r0["metrics"] == r1["metrics"], "validation is all-reduced: every rank reports the same loss"
    for key, value in ref["metrics"].items():  # a tile's validation noise is its own, on any split
        assert r0["metrics"][key] == pytest.approx(value, rel=1e-5), key
