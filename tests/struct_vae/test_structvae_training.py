"""StructVAE training end to end: config checks at start, overfitting one tile, Kedro nodes,
MLflow runs and the Table 3 report."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from pydantic import ValidationError
from synthetic import memory_tiles, write_real_tiles

from earthcrafter.evaluation.reports import TABLE3_ROWS
from earthcrafter.training.structvae import (
    StructVAERunConfig,
    ablation_config,
    ablation_configs,
    load_structvae,
    train_structvae,
)

TINY = dict(L=32, widths=(16, 16, 32, 32), head_dim=16, enc_depths=(1, 1, 1), dec_depths=(1, 1, 1),
            bottleneck_depth=1, cblock_every=1, pe_channels=24)
QUICK = dict(steps=2, batch_size=2, lr=1e-3, warmup_steps=0, log_every=1, val_every=0, ckpt_every=0,
             progress=False, figures=False)
HALF = {"train_fraction": 0.5}  # the "ablation" rows' data: 1 of the 2 training tiles
ROWS = {
    "xcube": {"model": {"arch": "xcube_conv", "upsample": "naive", "cblock_every": 0, "bottleneck_attn": "window"},
              "data": HALF},
    "naive_upsample": {"model": {"upsample": "naive", "cblock_every": 0, "bottleneck_attn": "window"}, "data": HALF},
    "pixshuffle": {"model": {"cblock_every": 0, "bottleneck_attn": "window"}, "data": HALF},
    "cblock": {"model": {"bottleneck_attn": "window"}, "data": HALF},
    "fullattn": {"model": {"bottleneck_attn": "full", "latent_skip": "position"}, "data": HALF},
    "cblock_global": {"model": {"bottleneck_attn": "window"}},
    "fullattn_global": {"model": {"bottleneck_attn": "full"}},
}


def _config(tmp_path, **kw) -> dict:
    return {"output_dir": str(tmp_path / "out"), "report_dir": str(tmp_path / "report"), "device": "cpu",
            "model": TINY, "data": {"max_voxels": 500}, "trainer": QUICK, **kw}


def test_bad_configs_fail_at_start_with_the_key(tmp_path):
    man, read = memory_tiles(tmp_path, 32, 2, 1)
    with pytest.raises(ValidationError, match=r"model\.L\n.*L=36 must be divisible by 8"):
        StructVAERunConfig.model_validate(_config(tmp_path, model={**TINY, "L": 36}))
    with pytest.raises(ValidationError, match=r"ablations\.xcube\.model\.cblok_every"):
        StructVAERunConfig.model_validate(_config(tmp_path, ablations={"xcube": {"model": {"cblok_every": 0}}}))
    with pytest.raises(ValidationError, match="trainer.steps"):
        StructVAERunConfig.model_validate(_config(tmp_path, trainer={**QUICK, "steps": 0}))
    with pytest.raises(ValueError, match="no tiles in split 'val'"):
        train_structvae(man[man.split == "train"], _config(tmp_path, mlflow=False), read_tile=read)
    (tmp_path / "t001.parquet").unlink()
    with pytest.raises(FileNotFoundError, match="t001.parquet"):
        train_structvae(man, _config(tmp_path, mlflow=False), read_tile=read)


def test_ablation_rows_expand_from_the_base(tmp_path):
    cfg = StructVAERunConfig.model_validate(_config(tmp_path, ablations=ROWS))
    rows = ablation_configs(cfg)
    assert list(rows) == list(ROWS)
    x = rows["xcube"]
    assert (x.name, x.ablation, x.table) == ("structvae/xcube", "xcube", "3")
    assert x.model.arch == "xcube_conv" and x.model.widths == (16, 16, 32, 32)  # base widths kept
    assert x.trainer == cfg.trainer  # same budget
    assert x.data == cfg.data.model_copy(update=HALF) and rows["cblock_global"].data == cfg.data  # data deep-merged
    assert x.output_dir.endswith("ablations/xcube")
    assert rows["fullattn"].model.cblock_every == 1 and rows["fullattn"].model.bottleneck_attn == "full"
    with pytest.raises(KeyError, match="no row 'bogus'"):
        ablation_config(cfg, "bogus")


@pytest.mark.timeout(400)
def test_overfits_a_single_tile(tmp_path):
    """A tiny model reproduces one L=32 tile almost perfectly (free-running decoding)."""
    man, read = memory_tiles(tmp_path, 32, 1, 0)
    man = pd.concat([man, man.assign(split="val")], ignore_index=True)
    cfg = _config(tmp_path, mlflow=False, data={"flip": False, "cache_tiles": True},
                  trainer=dict(steps=80, batch_size=1, lr=1e-2, warmup_steps=5, ema_decay=0.0, log_every=10,
                               progress=False, figures=False))
    m = train_structvae(man, cfg, read_tile=read)
    assert m["iou"] > 0.95 and m["acc"] > 0.98 and m["iou_s4"] > 0.99, m


@pytest.mark.timeout(400)
def test_pipeline_nodes_train_log_and_report_table3(tmp_path, mlflow_uri):
    """Real Parquet tiles -> main node and every Table 3 row (nested MLflow runs) -> table3.{csv,md}."""
    import mlflow

    from earthcrafter.pipelines.train_structvae import create_ablations_pipeline, create_pipeline
    from earthcrafter.pipelines.train_structvae.nodes import make_row_trainer, report_table3, train_main

    man = write_real_tiles(tmp_path / "tiles", 32, 2, 1)
    rows_without_figures = {r: {**o, "trainer": {"figures": False}} for r, o in ROWS.items()}
    params = _config(tmp_path, ablations=rows_without_figures, trainer={**QUICK, "steps": 1, "figures": True})
    mlflow.set_experiment("structvae-tests")
    with mlflow.start_run(run_name="kedro") as parent:
        main = train_main(man, params)
        rows = [make_row_trainer(r)(man, params) for r in ROWS]
        unconfigured = make_row_trainer("latent_skip")(man, params)  # optional row, not in params
        table = report_table3(params, *rows, unconfigured)
    json.dumps(main), json.dumps(table)  # node outputs are JSON datasets
    assert 0.0 <= main["acc"] <= 1.0 and main["ablation"] == "main"
    model = load_structvae(tmp_path / "out" / "model.pt")
    assert model.config.widths == (16, 16, 32, 32)
    assert (tmp_path / "out" / "figures" / "reconstruction_0.png").is_file()

    children = mlflow.search_runs(filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'", output_format="list")
    by_name = {r.info.run_name: r for r in children}
    assert set(by_name) == {"structvae/main", *(f"structvae/{r}" for r in ROWS)}
    assert by_name["structvae/cblock"].data.tags["table"] == "3"
    assert by_name["structvae/xcube"].data.params["model.arch"] == "xcube_conv"
    assert "backend.sparse.conv_backend_cpu" in by_name["structvae/main"].data.params

    df = pd.read_csv(tmp_path / "report" / "table3.csv")
    assert df["row"].tolist() == list(ROWS)
    for r, m in zip(ROWS, rows):  # the report shows exactly what MLflow holds for each run
        got = df.set_index("row").loc[r]
        assert got["acc_pct"] == pytest.approx(100 * by_name[f"structvae/{r}"].data.metrics["final/acc"])
        assert got["acc_pct"] == pytest.approx(100 * m["acc"]) and got["run_id"] == m["run_id"]
    assert df.set_index("row").loc["xcube", "params_M"] != df.set_index("row").loc["pixshuffle", "params_M"]
    assert df["latent_skip"].tolist() == ["position" if r == "fullattn" else "off" for r in ROWS]  # from the runs' params
    assert df["data"].tolist() == ["global" if r.endswith("_global") else "ablation" for r in ROWS]
    assert df["train_tiles"].tolist() == [2 if r.endswith("_global") else 1 for r in ROWS]  # as the runs logged it
    assert by_name["structvae/cblock"].data.params["data.train_samples"] == "1"
    md = (tmp_path / "report" / "table3.md").read_text()
    assert "| XCube* | ablation (1 tiles) |" in md and "| + FullAttn | global (2 tiles) |" in md and "paper Acc" in md
    logged = mlflow.artifacts.load_dict(f"runs:/{parent.info.run_id}/table3.json")["table3"]  # as Tables 2 and 4
    assert [r["row"] for r in logged] == list(ROWS)
    assert [n.name for n in create_pipeline().nodes] == ["train_structvae"]
    assert unconfigured == {"ablation": "latent_skip", "status": "not configured"}
    assert len(create_ablations_pipeline().nodes) == len(TABLE3_ROWS) + 1
    assert torch.load(tmp_path / "out" / "model.pt", weights_only=True)["model"] == "structvae"
