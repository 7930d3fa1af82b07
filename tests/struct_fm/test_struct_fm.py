"""StructFM: layout and dilation against loops, the network's invariances, overfitting one tile
through both stages, save/load, and bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from earthcrafter.models.flow_net import LayoutEncoder, SparseFlowNet
from earthcrafter.models.struct_fm import StructFM, StructFMConfig, keep_cells, stage_net
from earthcrafter.semantics import NUM_CLASSES
from earthcrafter.sparse import SparseTensor
from earthcrafter.training.structfm import (
    LatentTileDataset,
    StructFMDataConfig,
    StructFMSampleConfig,
    StructFMTask,
    dilate,
    load_structfm,
    train_structfm,
)
from earthcrafter.training.conditions import semantic_layout
from flow_testing import fit_one_sample

TINY = dict(grid=4, width=32, depth=2, num_heads=2)
FINE_UNET = dict(fine_arch="unet", unet_widths=[16, 32, 32], unet_depths=[1, 1, 1])


def test_semantic_layout_matches_a_loop():
    rng = np.random.default_rng(0)
    L, grid = 16, 4
    coords = np.unique(rng.integers(0, L, (300, 3)), axis=0)
    semantic = rng.integers(0, NUM_CLASSES, len(coords))
    ref = np.zeros((grid, grid, NUM_CLASSES))
    for x in range(L):
        for y in range(L):
            col = np.nonzero((coords[:, 0] == x) & (coords[:, 1] == y))[0]
            if len(col):
                ref[x // 4, y // 4, semantic[col[coords[col, 2].argmax()]]] += 1 / 16
    np.testing.assert_allclose(semantic_layout(coords, semantic, L, grid), ref, atol=1e-7)


def test_dilation_adds_only_empty_face_neighbours():
    cells = torch.tensor([[0, 0, 0], [1, 0, 0], [3, 3, 3]])
    everything = dilate(cells, 4, 1.0, np.random.default_rng(0))
    ref = {(0, 1, 0), (0, 0, 1), (2, 0, 0), (1, 1, 0), (1, 0, 1), (2, 3, 3), (3, 2, 3), (3, 3, 2)}
    assert {tuple(c) for c in everything.tolist()} == ref
    some = dilate(cells, 4, 0.5, np.random.default_rng(1))
    assert {tuple(c) for c in some.tolist()} < ref and len(dilate(cells, 4, 0.0, np.random.default_rng(0))) == 0


def test_dilation_draws_as_the_row_unique_reference():
    """The same cells in the same order as unique-over-rows, so a seeded draw keeps the same ones."""

    def reference(cells, grid, p, rng):
        steps = torch.tensor([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]])
        nb = (cells[:, None] + steps[None]).reshape(-1, 3)
        nb = torch.unique(nb[((nb >= 0) & (nb < grid)).all(1)], dim=0)
        occupied = {tuple(c) for c in cells.tolist()}
        nb = nb[torch.tensor([tuple(c) not in occupied for c in nb.tolist()], dtype=torch.bool)]
        return nb[torch.from_numpy(rng.random(len(nb)) < p)]

    gen = torch.Generator().manual_seed(0)
    for grid, n in ((4, 5), (8, 60), (45, 3000)):
        cells = torch.unique(torch.randint(0, grid, (n, 3), generator=gen), dim=0)
        for p in (1.0, 0.3):
            got = dilate(cells, grid, p, np.random.default_rng(grid))
            assert torch.equal(got, reference(cells, grid, p, np.random.default_rng(grid)))


@pytest.mark.parametrize("cond_blocks", [0, 2])
def test_network_starts_at_zero_velocity_and_ignores_row_order(cond_blocks):
    torch.manual_seed(0)
    net = SparseFlowNet(StructFMConfig(**TINY, cond_blocks=cond_blocks), 3, 3)
    coords = torch.tensor([[0, 1, 2], [3, 0, 1], [2, 2, 2], [1, 3, 0]])
    x = SparseTensor.from_list([torch.randn(4, 3)], [coords])
    layout = torch.rand(1, 4, 4, NUM_CLASSES)
    assert torch.equal(net(x, torch.tensor([0.5]), layout).feats, torch.zeros(4, 3))
    with torch.no_grad():  # the zero-initialised gates, cross-attention and output: give them weights
        for p in net.parameters():
            p.add_(0.2 * torch.randn_like(p))
    out = net(x, torch.tensor([0.5]), layout).feats
    perm = torch.tensor([2, 0, 3, 1])
    shuffled = SparseTensor.from_list([x.feats[perm]], [coords[perm]])
    torch.testing.assert_close(net(shuffled, torch.tensor([0.5]), layout).feats, out[perm], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(net(x, torch.tensor([0.5]), torch.zeros_like(layout)).feats, out), "reads the layout"
    assert not torch.allclose(net(x, torch.tensor([0.9]), layout).feats, out), "reads the time"


def _token_change(encoder: LayoutEncoder, layout: torch.Tensor, column: tuple[int, int, int]) -> torch.Tensor:
    """[B, G, G] bool: the tokens that change when one column (b, i, j) of the raster changes."""
    other = layout.clone()
    other[column] += 1.0
    with torch.no_grad():
        diff = (encoder(other) - encoder(layout)).abs().amax(-1)
    return (diff > 1e-6).reshape(layout.shape[:3])


def test_condnet_swin_blocks_mix_columns_within_shifted_windows():
    """CondNet without blocks embeds each column alone; one Swin block mixes the columns of a window;
    the shifted second block carries a column across its window's edge; samples never mix."""
    torch.manual_seed(0)
    layout = torch.rand(2, 8, 8, NUM_CLASSES)
    cfg = StructFMConfig(**{**TINY, "grid": 8, "window": 4})
    alone = _token_change(LayoutEncoder(32, NUM_CLASSES, 1.0, 0, cfg), layout, (0, 1, 2))
    assert alone.sum() == 1 and alone[0, 1, 2]
    one = _token_change(LayoutEncoder(32, NUM_CLASSES, 1.0, 1, cfg), layout, (0, 1, 2))
    expected = torch.zeros_like(one)
    expected[0, :4, :4] = True  # the 4 x 4 window holding column (1, 2)
    assert torch.equal(one, expected)
    two = _token_change(LayoutEncoder(32, NUM_CLASSES, 1.0, 2, cfg), layout, (0, 1, 2))
    assert two[0, :4, :4].all() and two[0, 4:, 4:].any() and not two[1].any()


def _one_tile_sample(grid: int = 4) -> dict:
    rng = np.random.default_rng(3)
    cells = torch.from_numpy(np.unique(rng.integers(0, grid, (12, 3)), axis=0))
    z = rng.normal(0, 1, (len(cells), 8))
    z = np.sign(z) * (0.5 + np.abs(z))  # every channel clear of the keep threshold (0.3), like real codes mostly are
    return {"tile_id": "t0", "cells": cells, "latents": torch.from_numpy(z).float(),
            "layout": torch.from_numpy(rng.random((grid, grid, NUM_CLASSES))).float(), "seed": 0}  # fmt: skip


@pytest.mark.timeout(240)
def test_both_stages_overfit_one_tile():
    """Trained on a single tile, the coarse stage samples exactly its cells and the fine stage
    samples its latents on them: the flow objective, the network and the sampler agree."""
    cfg = StructFMConfig(**TINY, latent_channels=8, cond_dropout=0.0)
    sample, data = _one_tile_sample(), StructFMDataConfig(dilation=0.3)
    model = StructFM(cfg)
    for stage in ("coarse", "fine"):
        task = StructFMTask(stage, cfg, data, StructFMSampleConfig(steps=20, cfg_strength=0.0))
        net = getattr(model, stage)
        torch.manual_seed(0)
        fit_one_sample(task, net, sample, 1000 if stage == "coarse" else 800, copies=4)
        metrics = task.validate(net.eval(), [task.collate([sample])])
        assert metrics["acc"] > 0.97, (stage, metrics)
    occupancy, z = model.generate(sample["layout"][None], steps=20, cfg_strength=0.0,
                                  generator=torch.Generator().manual_seed(1))  # fmt: skip
    key = lambda c: {tuple(r) for r in c.tolist()}  # noqa: E731
    assert key(occupancy.coords[:, 1:]) == key(sample["cells"])
    order = np.lexsort(sample["cells"].numpy().T[::-1])
    got = z.feats[np.lexsort(z.coords[:, 1:].numpy().T[::-1])]
    assert key(z.coords[:, 1:]) == key(sample["cells"])
    assert torch.nn.functional.mse_loss(got, sample["latents"][order]).item() < 0.05


@pytest.mark.timeout(240)
def test_fine_unet_overfits_one_tile():
    """The paper's fine stage (a Swin U-Net over the latent cells) learns one tile's latents."""
    cfg = StructFMConfig(**TINY, **FINE_UNET, latent_channels=8, cond_dropout=0.0)
    sample = _one_tile_sample()
    task = StructFMTask("fine", cfg, StructFMDataConfig(dilation=0.3), StructFMSampleConfig(steps=20, cfg_strength=0.0))
    torch.manual_seed(0)
    net = task.build_model()
    assert type(net).__name__ == "SparseFlowUNet"
    fit_one_sample(task, net, sample, 800, copies=4)
    metrics = task.validate(net.eval(), [task.collate([sample])])
    assert metrics["acc"] > 0.97, metrics


def test_keep_rule():
    cfg = StructFMConfig(**TINY)
    z = torch.tensor([[1.0, -1.0, 0.5, 0.0], [0.1, -0.2, 0.0, 0.4], [0.0, 0.0, 0.0, 0.0]])
    assert keep_cells(cfg, z).tolist() == [True, False, False]


@pytest.mark.parametrize("fine", [{}, FINE_UNET], ids=["transformer", "unet"])
def test_training_run_saves_and_reloads(tmp_path, tiles32, fine):
    manifest, stats = tiles32
    tr = dict(steps=3, batch_size=2, lr=1e-3, progress=False, cpu_threads=1, val_batch_size=2)
    cfg = {"output_dir": str(tmp_path / "fm"), "mlflow": False, "preview_tiles": 1, "structvae_path": tiles32.structvae,
           "model": {**TINY, **fine}, "sample": {"steps": 2}, "coarse": tr, "fine": tr}  # fmt: skip
    metrics = train_structfm(manifest, stats, cfg)
    assert {"coarse/acc", "fine/acc", "coarse/val_loss", "gen_iou", "gen_cell_iou"} <= metrics.keys()
    assert (tmp_path / "fm" / "preview" / "figure.png").is_file()
    model = load_structfm(tmp_path / "fm")
    x = SparseTensor.from_list([torch.randn(5, 1)], [torch.tensor([[0, 0, 0], [1, 0, 0], [2, 1, 0], [3, 3, 3], [0, 2, 1]])])
    blob = torch.load(tmp_path / "fm" / "coarse" / "model.pt", weights_only=True)
    fresh = SparseFlowNet(StructFMConfig(**TINY), 1, 1)
    fresh.load_state_dict(blob["state_dict"])
    layout = torch.rand(1, 4, 4, NUM_CLASSES)
    torch.testing.assert_close(model.coarse(x, torch.tensor([0.3]), layout).feats, fresh(x, torch.tensor([0.3]), layout).feats)
    # the fine stage reloads as the network it was trained as
    fine_net = stage_net(StructFMConfig(**TINY, **fine), "fine")
    fine_net.load_state_dict(torch.load(tmp_path / "fm" / "fine" / "model.pt", weights_only=True)["state_dict"])
    assert type(model.fine) is type(fine_net) and type(fine_net).__name__ == ("SparseFlowUNet" if fine else "SparseFlowNet")
    z = x.replace(torch.randn(len(x), 32))
    torch.testing.assert_close(model.fine(z, torch.tensor([0.6]), layout).feats, fine_net(z, torch.tensor([0.6]), layout).feats)
    if fine:  # a U-Net fine stage exported before its levels' window shifts ran across both paths is refused
        path = tmp_path / "fm" / "fine" / "model.pt"
        blob = torch.load(path, weights_only=True)
        del blob["config"]["window_shifts"]
        torch.save(blob, path)
        with pytest.raises(ValueError, match="train it again"):
            load_structfm(tmp_path / "fm")


def test_bad_inputs(tmp_path, tiles32):
    manifest, stats = tiles32
    with pytest.raises(ValueError, match="no tiles in split 'test'"):
        LatentTileDataset(manifest, stats["struct"], "test", 4)
    with pytest.raises(ValueError, match="lacks column"):
        LatentTileDataset(manifest.drop(columns=["struct_path"]), stats["struct"], "train", 4)
    with pytest.raises(ValueError, match="does not match the model's grid 8"):
        LatentTileDataset(manifest, stats["struct"], "train", 8)[0]
    with pytest.raises(ValueError, match="no 'struct' entry"):
        train_structfm(manifest, {}, {"model": TINY})
    with pytest.raises(FileNotFoundError, match="StructFM coarse stage not found"):
        load_structfm(tmp_path)
    with pytest.raises(ValueError, match="heads of even size"):
        StructFMConfig(width=30, num_heads=2)
    gone = manifest.copy()
    gone.loc[0, "struct_path"] = str(tmp_path / "nope.parquet")
    with pytest.raises(FileNotFoundError, match="struct_path file"):
        LatentTileDataset(gone, stats["struct"], "train", 4)


def test_tile_cache_is_opt_in(tiles32, monkeypatch):
    """Without ``cache`` a dataset holds no tiles (paper scale: 447k would not fit in a worker) and reads
    the files per draw; with it each tile is read once. Both give the same sample."""
    import earthcrafter.training.structfm as sfm

    manifest, stats = tiles32
    reads = []
    real_read = sfm.read_latent_tile
    monkeypatch.setattr(sfm, "read_latent_tile", lambda path, **kw: reads.append(path) or real_read(path, **kw))
    samples = {}
    for cache in (False, True):
        reads.clear()
        data = LatentTileDataset(manifest, stats["struct"], "train", 4, cache=cache)
        first, again = data[0], data[0]
        assert len(reads) == (1 if cache else 2)
        assert len(data._cache) == (1 if cache else 0)
        torch.testing.assert_close(first["latents"], again["latents"])
        samples[cache] = first
    for key in ("cells", "latents", "layout", "semantic"):
        torch.testing.assert_close(samples[False][key], samples[True][key])


def test_dense_variant_and_table4(tmp_path, tiles32):
    """Table 4's one-stage DenseSFM trains, reloads as such, and both rows feed the table."""
    from earthcrafter.training.structfm import ablation_config, StructFMRunConfig, table4

    manifest, stats = tiles32
    tr = dict(steps=2, batch_size=2, lr=1e-3, progress=False, cpu_threads=1, val_batch_size=2)
    base = StructFMRunConfig.model_validate({
        "output_dir": str(tmp_path / "fm"), "mlflow": False, "preview_tiles": 1, "structvae_path": tiles32.structvae,
        "model": TINY, "sample": {"steps": 2}, "coarse": tr, "fine": tr,
        "ablations": {"two_stage": {"variant": "two_stage"}, "dense": {"variant": "dense", "preview_tiles": 2}}})  # fmt: skip
    dense_cfg = ablation_config(base, "dense")
    assert dense_cfg.variant == "dense" and dense_cfg.output_dir.endswith("ablations/dense") and not dense_cfg.ablations
    dense = train_structfm(manifest, stats, dense_cfg)
    assert "dense/acc" in dense and "coarse/acc" not in dense and dense["gen_tiles"] == 2
    assert (dense["gen_split"], dense["gen_condition"]) == (base.preview_split, base.model.condition)
    model = load_structfm(dense_cfg.output_dir)
    assert model.variant == "dense" and not hasattr(model, "coarse")
    two = train_structfm(manifest, stats, ablation_config(base, "two_stage"))
    df = table4(two, dense).set_index("Method")
    assert df.loc["LatentSFM", "mIoU3"] == pytest.approx(100 * two["gen_cell_iou"], abs=0.05)
    assert df.loc["ClassSFM", "mIoU3"] == pytest.approx(100 * two["gen_coarse_cell_iou"], abs=0.05)
    assert df.loc["DenseSFM", "mIoU0"] == pytest.approx(100 * dense["gen_iou"], abs=0.05)
    assert df.loc["LatentSFM", "paper mIoU3"] == 86.1
    with pytest.raises(ValueError, match="no row 'nope'"):
        ablation_config(base, "nope")


def test_table4_report_with_and_without_the_optional_rows(tmp_path, tiles32):
    """The sweep's optional rows: skipped (and said so) when not configured, table rows when they ran."""
    from earthcrafter.pipelines.train_structfm.nodes import make_row_trainer, report_table4

    manifest, stats = tiles32
    params = {"report_dir": str(tmp_path / "report"), "mlflow": False, "structvae_path": tiles32.structvae, "model": TINY,
              "ablations": {"two_stage": {"variant": "two_stage"}, "dense": {"variant": "dense"}}}  # fmt: skip
    skipped = make_row_trainer("two_stage_unet", optional=True)(manifest, stats, params)
    assert "no row 'two_stage_unet'" in skipped["skipped"]
    with pytest.raises(ValueError, match="no row 'two_stage_unet'"):  # a required row is not skipped
        make_row_trainer("two_stage_unet")(manifest, stats, params)
    two = {"gen_cell_iou": 0.8, "gen_iou": 0.3, "gen_coarse_cell_iou": 0.85, "gen_tiles": 3}
    dense = {"gen_cell_iou": 0.6, "gen_iou": 0.2}
    assert [r["Method"] for r in report_table4(params, two, dense, skipped)["rows"]] == ["DenseSFM", "ClassSFM", "LatentSFM"]
    rows = report_table4(params, two, dense, {"gen_cell_iou": 0.79, "gen_iou": 0.279})["rows"]
    last = rows[-1]
    assert (last["Method"], last["S-Num"], last["S-Index"], last["mIoU3"], last["mIoU0"]) == (
        "LatentSFM, fine stage: Swin U-Net", 2, 2, 79.0, 27.9)
    assert np.isnan(last["paper mIoU3"]) and np.isnan(last["paper mIoU0"])  # no paper numbers for this row
    assert "| LatentSFM, fine stage: Swin U-Net | 2 | 2 | 79.0 | 27.9 | – | – |" in (tmp_path / "report" / "table4.md").read_text()
    rows = report_table4(params, two, dense, skipped, {"gen_cell_iou": 0.81, "gen_iou": 0.28})["rows"]
    assert [r["Method"] for r in rows][-1] == "LatentSFM, Swin CondNet" and rows[-1]["mIoU3"] == 81.0
    assert len(rows) == 4  # the skipped U-Net row is not in the table


def test_table4_caption_comes_from_the_rows_not_the_current_config(tmp_path):
    """A table rebuilt from stored rows says what those rows were measured on, even after the
    configuration changed; rows measured on different sets are named."""
    from earthcrafter.pipelines.train_structfm.nodes import report_table4

    params = {"report_dir": str(tmp_path), "mlflow": False, "model": {**TINY, "condition": "semantic"}}
    row = {"gen_cell_iou": 0.8, "gen_iou": 0.3, "gen_coarse_cell_iou": 0.85, "gen_tiles": 3,
           "gen_split": "val", "gen_condition": "rgbd"}  # fmt: skip
    report_table4(params, row, {**row, "gen_cell_iou": 0.6})
    caption = (tmp_path / "table4.md").read_text().splitlines()[0]
    assert caption.startswith("StructFM Table 4 on 3 val tiles (RGBD view condition), percent")
    report_table4(params, row, {"gen_cell_iou": 0.6, "gen_iou": 0.2, "gen_tiles": 2})  # a row of an older run
    caption = (tmp_path / "table4.md").read_text().splitlines()[0]
    assert "measured on different sets" in caption and "LatentSFM on 3 val tiles (RGBD view condition)" in caption
    assert "DenseSFM on 2 tiles (split and condition not recorded)" in caption


def test_table4_rows_are_mlflow_runs_holding_the_table_numbers(tmp_path, tiles32, mlflow_uri):
    """One search (tags.table = '4' and tags.stage != 'coarse') finds one run per row, holding the
    numbers the table is made of; the main training is not among them."""
    import mlflow

    from earthcrafter.pipelines.train_structfm.nodes import make_row_trainer

    manifest, stats = tiles32
    mlflow.set_experiment("structfm-tests")  # this store's (another test module may have set another store's)
    tr = dict(steps=1, batch_size=2, progress=False, cpu_threads=1, val_batch_size=2)
    params = {"output_dir": str(tmp_path / "fm"), "name": f"sfm{tmp_path.name}", "structvae_path": tiles32.structvae,
              "preview_tiles": 1, "model": TINY, "sample": {"steps": 2}, "coarse": tr, "fine": tr,
              "ablations": {"two_stage": {"variant": "two_stage"}, "dense": {"variant": "dense"}}}  # fmt: skip
    rows = {row: make_row_trainer(row)(manifest, stats, params) for row in ("two_stage", "dense")}
    main = train_structfm(manifest, stats, params)
    runs = mlflow.search_runs(filter_string=f"tags.table = '4' and tags.stage != 'coarse' and "
                                            f"attributes.run_name LIKE 'sfm{tmp_path.name}%'", search_all_experiments=True)
    assert sorted(runs["tags.ablation"]) == ["dense", "two_stage"]
    for _, run in runs.iterrows():
        m = rows[run["tags.ablation"]]
        assert run["metrics.final/gen_cell_iou"] == pytest.approx(m["gen_cell_iou"])
        assert run["metrics.final/gen_iou"] == pytest.approx(m["gen_iou"])
    from earthcrafter.training.structfm import table4

    by_method = table4(rows["two_stage"], rows["dense"]).set_index("Method")["run_id"]
    assert by_method["LatentSFM"] == by_method["ClassSFM"] == rows["two_stage"]["fine/run_id"]
    assert by_method["DenseSFM"] == rows["dense"]["dense/run_id"] != ""
    two = runs.set_index("tags.ablation").loc["two_stage"]
    assert two["metrics.final/gen_coarse_cell_iou"] == pytest.approx(rows["two_stage"]["gen_coarse_cell_iou"])
    assert two["run_id"] == rows["two_stage"]["fine/run_id"]
    main_runs = mlflow.search_runs(filter_string=f"tags.ablation = 'main' and attributes.run_name LIKE 'sfm{tmp_path.name}%'",
                                   search_all_experiments=True)  # fmt: skip
    assert set(main_runs["tags.table"]) == {"none"} and set(main_runs["run_id"]) == {main["coarse/run_id"], main["fine/run_id"]}


@pytest.mark.parametrize("patch,kx", [(1, 2), (2, 1)], ids=["cells", "half-known-patches"])
def test_outpainting_keeps_the_known_cells_and_samples_the_rest(patch, kx):
    """With the cells of some columns known, generation returns exactly those cells with their
    latents (coarse and fine stages pinned), samples the other columns, and with every column known
    returns the known set; resampling changes only the free columns. With a patched coarse stage
    the known columns may cover part of a patch: its known cells are pinned value by value."""
    from earthcrafter.models.struct_fm import KnownCells

    torch.manual_seed(0)
    model = StructFM(StructFMConfig(**TINY, latent_channels=8, coarse_patch=patch)).eval()
    with torch.no_grad():  # non-zero velocities (the output layers start at zero)
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    G, rng = 4, np.random.default_rng(0)
    columns = torch.zeros(1, G, G, dtype=torch.bool)
    columns[0, :kx] = True  # x < kx decided
    xyz = np.array([[x, y, z] for x in range(kx) for y in range(G) for z in range(G) if rng.random() < 0.4])
    latents = torch.from_numpy(np.sign(rng.normal(size=(len(xyz), 8))) * 0.8).float()
    cells = SparseTensor(latents, torch.from_numpy(np.c_[np.zeros(len(xyz)), xyz]).int(), 1)
    layout = torch.rand(1, G, G, NUM_CLASSES)

    def run(known, resample=0, seed=1):
        _, z = model.generate(layout, steps=4, cfg_strength=1.0, generator=torch.Generator().manual_seed(seed),
                              known=known, resample=resample)  # fmt: skip
        return {tuple(c): f for c, f in zip(z.coords[:, 1:].tolist(), z.feats)}

    def split(out):
        return ({c: f for c, f in out.items() if c[0] < kx}, {c: f for c, f in out.items() if c[0] >= kx})

    expected = {tuple(c): f for c, f in zip(xyz.tolist(), latents)}
    for resample in (0, 2):
        pinned, free = split(run(KnownCells(columns, cells), resample))
        assert pinned.keys() == expected.keys() and all(torch.equal(pinned[c], expected[c]) for c in expected)
        assert len(free) > 0
    free_plain, free_resampled = split(run(KnownCells(columns, cells)))[1], split(run(KnownCells(columns, cells), 2))[1]
    assert free_plain.keys() != free_resampled.keys() or any(not torch.equal(free_plain[c], free_resampled[c]) for c in free_plain)
    everything = KnownCells(torch.ones(1, G, G, dtype=torch.bool), cells)
    out = run(everything)
    assert out.keys() == expected.keys() and all(torch.equal(out[c], expected[c]) for c in expected)
    with pytest.raises(ValueError, match="two-stage"):
        StructFM(StructFMConfig(**TINY, latent_channels=8), "dense").generate(layout, steps=1, known=everything)


def test_patches_are_p3_blocks_of_the_grid():
    """patchify_grid against a loop over cells, and unpatchify_grid as its inverse."""
    from earthcrafter.models.struct_fm import full_grid, patchify_grid, unpatchify_grid

    B, G, p, C = 2, 6, 3, 2
    values = torch.randn(B * G**3, C)
    tokens = patchify_grid(values, B, G, p)
    g, cells = G // p, full_grid(B, G).tolist()
    row = {tuple(c): i for i, c in enumerate(cells)}
    for t, (b, tx, ty, tz) in enumerate(full_grid(B, g).tolist()):
        for k in range(p**3):
            i, j, m = k // (p * p), (k // p) % p, k % p
            cell = row[(b, tx * p + i, ty * p + j, tz * p + m)]
            assert torch.equal(tokens[t, k * C:(k + 1) * C], values[cell])
    assert torch.equal(unpatchify_grid(tokens, B, G, p), values)
    with pytest.raises(ValueError, match="not divisible by coarse_patch 3"):
        StructFMConfig(**TINY, coarse_patch=3)


@pytest.mark.timeout(240)
def test_patched_coarse_stage_overfits_one_tile():
    """A coarse stage on 2³-cell patches (8 occupancy values per token) samples exactly the tile's cells."""
    cfg = StructFMConfig(**TINY, latent_channels=8, cond_dropout=0.0, coarse_patch=2)
    sample = _one_tile_sample()
    task = StructFMTask("coarse", cfg, StructFMDataConfig(), StructFMSampleConfig(steps=20, cfg_strength=0.0))
    torch.manual_seed(0)
    model = StructFM(cfg)
    batch = task.collate([sample])
    assert len(batch["x0"]) == 2**3 and batch["x0"].feats.shape[1] == 8
    fit_one_sample(task, model.coarse, sample, 1000, copies=4)
    assert task.validate(model.coarse.eval(), [batch])["acc"] > 0.97
    occupancy, _ = model.eval().generate(sample["layout"][None], steps=20, cfg_strength=0.0,
                                         generator=torch.Generator().manual_seed(1))  # fmt: skip
    assert {tuple(r) for r in occupancy.coords[:, 1:].tolist()} == {tuple(r) for r in sample["cells"].tolist()}


class _FlowToMinusOne(torch.nn.Module):
    """A coarse stage whose flow ends at -1 on every cell: nothing comes out occupied."""

    def forward(self, x, t, c=None):
        return x.replace((x.feats + 1.0) / t.clamp_min(1e-3)[x.batch_idx][:, None])


def test_outpainting_never_empty_guard_picks_a_free_cell():
    """With no positive cell, the never-empty guard keeps the strongest *free* cell: a cell of a
    known (and known empty) column stays empty, and nothing is pinned to a missing known latent.
    With every cell known empty the sample stays empty (nothing is invented where the scene is known)."""
    from earthcrafter.models.struct_fm import KnownCells

    G = 4
    model = StructFM(StructFMConfig(grid=G, latent_channels=8, width=32, depth=1, num_heads=2, condition="none"))
    model = model.eval()
    model.coarse = _FlowToMinusOne()
    empty = SparseTensor(torch.zeros(0, 8), torch.zeros(0, 4, dtype=torch.int32), 1)
    columns = torch.zeros(1, G, G, dtype=torch.bool)
    columns[0, :3] = True  # x < 3 decided, and empty
    gen = torch.Generator().manual_seed(0)
    cells, z = model.generate(None, 1, steps=4, known=KnownCells(columns, empty), generator=gen)
    assert len(cells) == 1 and len(z) == 1 and int(cells.coords[0, 1]) == 3  # the one free column
    # a known occupied cell elsewhere: the sample is not empty, no guard cell is added, the cell keeps its latent
    one = SparseTensor(torch.full((1, 8), 0.8), torch.tensor([[0, 1, 2, 0]], dtype=torch.int32), 1)
    cells, z = model.generate(None, 1, steps=4, known=KnownCells(columns, one), generator=gen)
    assert cells.coords.tolist() == [[0, 1, 2, 0]] and torch.equal(z.feats, one.feats)
    everything = torch.ones(1, G, G, dtype=torch.bool)
    cells, z = model.generate(None, 1, steps=4, known=KnownCells(everything, empty), generator=gen)
    assert len(cells) == 0 and len(z) == 0


def test_fine_unet_levels_alternate_regular_and_shifted_windows():
    """Each window level above the middle alternates regular / shifted windows from its way down
    into its way up: a level of one block per side has one of each."""
    net = stage_net(StructFMConfig(**TINY, latent_channels=8, **FINE_UNET), "fine")
    half = net.cfg.window // 2
    for down, up in zip(net.down, net.up):
        assert [b.attn.shift for b in down] + [b.attn.shift for b in up] == [0, half]
