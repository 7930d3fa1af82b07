"""The flows' conditions: the RGBD view lifted onto the latent columns against the tile's own top
heights (a ray-cast view as the reference), the camera convention of the lift, the nadir choice,
mixed conditions, views without depth (photos), and a StructFM trained on mixed inputs generating
from either, and from a photo."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from earthcrafter.geometry.cameras import Camera, intrinsics_from_fov, look_at
from earthcrafter.geometry.raycast import MeshRaycaster
from earthcrafter.geometry.voxel_mesh import voxel_mesh
from earthcrafter.io.tiles import TileViews, read_tile, read_views, write_views
from earthcrafter.models.flow_net import RGBD_CHANNELS
from earthcrafter.semantics import NUM_CLASSES
from earthcrafter.training.conditions import (
    RASTERS_VERSION,
    UNKNOWN_HEIGHT,
    drop_depth,
    from_semantic,
    keep_part,
    lift_view,
    mix_parts,
    model_condition,
    nadir_view,
    rgbd_layout,
    tile_rasters,
    view_colours,
    without_depth,
)


def _views_of(coords: np.ndarray, L: int, vs: float, eyes: list, size: int = 96) -> TileViews:
    """Ray-cast views [V] of a tile's voxels (tile-local frame) from cameras at ``eyes`` looking at
    the tile's centre."""
    mesh = voxel_mesh(coords, vs, colors=np.tile(np.array([[200, 120, 40]], np.uint8), (len(coords), 1)))
    caster, frames = MeshRaycaster(mesh), []
    centre = np.array([L * vs / 2, L * vs / 2, 0.0])
    for eye in eyes:
        frames.append(caster.render(Camera(intrinsics_from_fov(size, size, 60.0), look_at(np.asarray(eye, float), centre),
                                           size, size)))  # fmt: skip
    return TileViews(np.stack([f.rgb for f in frames]), np.stack([np.isfinite(f.depth) for f in frames]),
                     np.stack([f.depth for f in frames]), np.stack([f.camera.K for f in frames]),
                     np.stack([f.camera.world_to_camera for f in frames]), [f"v{i}" for i in range(len(frames))])  # fmt: skip


def test_rgbd_layout_recovers_the_tiles_top_heights():
    """Lifted by its depth, a near-nadir view puts each latent column's highest point at the top of
    its highest voxel (the tile's ground truth), and its colour at the surface colour."""
    from earthcrafter.training.synthetic import scene_coords

    L, vs, grid = 32, 2.0, 4
    coords = scene_coords(L, 3)
    views = _views_of(coords, L, vs, [[40.0, 20.0, 150.0], [32.0, 30.0, 140.0]], size=128)
    assert nadir_view(views) == 1
    raster = rgbd_layout(views, L, grid, vs)
    assert raster.shape == (grid, grid, RGBD_CHANNELS)
    cell = L // grid
    truth = np.zeros((grid, grid))
    np.maximum.at(truth, (coords[:, 0] // cell, coords[:, 1] // cell), (coords[:, 2] + 1) * vs / (L * vs))
    seen = raster[..., 4] > 0
    assert seen.mean() > 0.9
    err = np.abs(raster[..., 3] - truth)[seen] * L  # in voxels
    assert np.median(err) < 0.1 and (err < 1.0).mean() > 0.9, err
    assert np.all(np.abs(raster[..., :3][seen].mean(0) * 255 - [200, 120, 40]) < 60)  # shaded surface colour
    empty = TileViews(views.rgb, np.zeros_like(views.mask), views.depth, views.K, views.world_to_camera, views.names)
    assert nadir_view(empty) == -1 and not rgbd_layout(empty, L, grid, vs).any()


def test_lift_is_the_inverse_of_the_camera_projection():
    K = intrinsics_from_fov(40, 30, 50.0)
    E = look_at(np.array([5.0, -3.0, 20.0]), np.array([1.0, 2.0, 0.0]))
    depth = np.full((1, 30, 40), np.inf, np.float32)
    depth[0, 7, 11] = 17.5
    views = TileViews(np.zeros((1, 30, 40, 3), np.uint8), np.isfinite(depth), depth, K[None], E[None], ["v"])
    (p,), _ = lift_view(views, 0)
    cam = E[:3, :3] @ p + E[:3, 3]
    assert cam[2] == pytest.approx(17.5)
    assert (K @ (cam / cam[2]))[:2] == pytest.approx([11.5, 7.5])  # pixel centres at +0.5


def test_mixed_conditions_keep_one_part():
    raster = torch.rand(64, 4, 4, NUM_CLASSES + RGBD_CHANNELS) + 0.1
    mixed = mix_parts(raster, "mixed", torch.Generator().manual_seed(0))
    sem, rgbd = mixed[..., :NUM_CLASSES].flatten(1).abs().sum(1), mixed[..., NUM_CLASSES:].flatten(1).abs().sum(1)
    assert ((sem > 0) ^ (rgbd > 0)).all() and 10 < int((sem > 0).sum()) < 54
    assert torch.equal(mix_parts(raster[..., :NUM_CLASSES], "semantic"), raster[..., :NUM_CLASSES])
    only = keep_part(raster, "mixed", "rgbd")
    assert not only[..., :NUM_CLASSES].any() and torch.equal(only[..., NUM_CLASSES:], raster[..., NUM_CLASSES:])
    assert torch.equal(model_condition(raster, "mixed"), keep_part(raster, "mixed", "semantic"))
    assert model_condition(raster, "none") is None
    with pytest.raises(ValueError, match="cannot take the rgbd condition"):
        keep_part(raster[..., :NUM_CLASSES], "semantic", "rgbd")
    layout = torch.rand(1, 4, 4, NUM_CLASSES)
    assert from_semantic(layout, "mixed").shape[-1] == NUM_CLASSES + RGBD_CHANNELS and from_semantic(layout, "none") is None
    with pytest.raises(ValueError, match="RGBD views only"):
        from_semantic(layout, "rgbd")


def test_a_photo_is_the_view_without_its_heights():
    """``without_depth`` sets the height of the seen columns, and nothing else; ``drop_depth`` does
    it to a fraction of the samples and draws nothing at p = 0."""
    rgbd = torch.rand(64, 4, 4, RGBD_CHANNELS) + 0.1
    rgbd[..., 4] = (torch.rand(64, 4, 4) < 0.7).float()  # seen columns
    photo = without_depth(rgbd, "rgbd")
    seen = rgbd[..., 4] > 0
    assert (photo[..., 3][seen] == UNKNOWN_HEIGHT).all() and torch.equal(photo[..., 3][~seen], rgbd[..., 3][~seen])
    assert torch.equal(photo[..., [0, 1, 2, 4]], rgbd[..., [0, 1, 2, 4]])
    mixed = torch.cat([torch.rand(64, 4, 4, NUM_CLASSES), rgbd], -1)
    assert torch.equal(without_depth(mixed, "mixed")[..., NUM_CLASSES:], photo)
    assert torch.equal(without_depth(mixed, "mixed")[..., :NUM_CLASSES], mixed[..., :NUM_CLASSES])
    # a mixed sample that kept its semantic part has no seen column, so nothing to drop
    sem_only = keep_part(mixed, "mixed", "semantic")
    assert torch.equal(without_depth(sem_only, "mixed"), sem_only)

    dropped = drop_depth(rgbd, "rgbd", 0.5, torch.Generator().manual_seed(0))
    lost = (dropped != rgbd).flatten(1).any(1)
    assert 15 < int(lost.sum()) < 49
    assert torch.equal(dropped[lost], photo[lost]) and torch.equal(dropped[~lost], rgbd[~lost])
    assert torch.equal(drop_depth(rgbd, "rgbd", 1.0), photo)
    state = torch.get_rng_state()
    assert drop_depth(rgbd, "rgbd", 0.0) is rgbd and torch.equal(torch.get_rng_state(), state)
    with pytest.raises(ValueError, match="no RGBD view"):
        without_depth(rgbd, "semantic")
    colours = view_colours(mixed.numpy(), "mixed")  # what a photo shows: colour where seen, white elsewhere
    assert np.array_equal(colours[seen.numpy()], rgbd[..., :3][seen].numpy()) and (colours[~seen.numpy()] == 1).all()


def test_the_training_step_drops_the_views_depth():
    """``height_dropout`` reaches the flow's input: at p = 1 every seen column's height is unknown,
    at p = 0 the model gets the view as it is."""
    from earthcrafter.flow import RectifiedFlow
    from earthcrafter.sparse import SparseTensor
    from earthcrafter.training.flow_task import flow_training_step

    given = []

    class Spy(torch.nn.Module):
        def forward(self, x, t, cond):
            given.append(cond)
            return x.replace(x.feats * 0)

    x0 = SparseTensor(torch.randn(6, 2), torch.tensor([[b, i, 0, 0] for b in range(2) for i in range(3)], dtype=torch.int32), 2)
    rgbd = torch.rand(2, 4, 4, RGBD_CHANNELS) + 0.1
    rgbd[..., 4] = 1.0
    for p in (1.0, 0.0):
        flow_training_step(RectifiedFlow(), Spy(), x0, rgbd, 0.0, "rgbd", p, seeds=torch.tensor([1, 2]))
    assert (given[0][..., 3] == UNKNOWN_HEIGHT).all() and torch.equal(given[1], rgbd)


def test_height_dropout_needs_a_view():
    from pydantic import ValidationError

    from earthcrafter.models.struct_fm import StructFMConfig
    from earthcrafter.models.tex_fm import TexFMConfig

    for config in (StructFMConfig, TexFMConfig):
        with pytest.raises(ValidationError, match="height_dropout = 0.5 needs condition rgbd or mixed"):
            config(condition="semantic", height_dropout=0.5)
        assert config(condition="rgbd", height_dropout=0.5).height_dropout == 0.5


@pytest.mark.timeout(300)
def test_structfm_on_mixed_conditions_trains_and_generates_from_either(tmp_path, tiles32):
    """Tiles with ray-cast views: a StructFM with condition mixed and height dropout trains both
    stages, reloads, and generates from a tile's semantic layout, from its RGBD view, or from that
    view's colours alone (its preview scores both); a semantic-only model refuses the view, and a
    model trained without height dropout refuses the photo."""
    from earthcrafter.latents.generate import tile_condition
    from earthcrafter.training.structfm import LatentTileDataset, load_structfm, train_structfm

    manifest, stats = tiles32
    for path in manifest["tile_path"]:
        tile = read_tile(path)
        views = _views_of(tile.coords, tile.L, tile.voxel_size, [[40.0, 20.0, 120.0], [10.0, 30.0, 90.0]], size=48)
        write_views(tmp_path / "unused.npz", views)  # the writer round-trips
        write_views(str(path).replace(".parquet", ".views.npz"), views)
    data = LatentTileDataset(manifest, stats["struct"], "train", 4, condition="mixed")
    assert data[0]["layout"].shape == (4, 4, NUM_CLASSES + RGBD_CHANNELS) and data[0]["layout"][..., -1].any()
    model_cfg = dict(grid=4, width=32, depth=2, num_heads=2, condition="mixed", height_dropout=0.5)
    tr = dict(steps=3, batch_size=2, lr=1e-3, progress=False, cpu_threads=1, val_batch_size=2)
    cfg = {"output_dir": str(tmp_path / "fm"), "mlflow": False, "preview_tiles": 1, "structvae_path": tiles32.structvae,
           "model": model_cfg, "sample": {"steps": 2}, "coarse": tr, "fine": tr}  # fmt: skip
    metrics = train_structfm(manifest, stats, cfg)
    assert {"coarse/acc", "fine/acc", "gen_cell_iou", "gen_rgb_cell_iou", "gen_rgb_iou", "gen_rgb_tiles"} <= metrics.keys()
    assert (tmp_path / "fm" / "preview_rgb" / "figure.png").exists()
    model = load_structfm(tmp_path / "fm")
    assert model.config.condition == "mixed" and model.config.height_dropout == 0.5
    row = manifest.iloc[0]
    tile = read_tile(row["tile_path"])
    photo, view = (tile_condition("mixed", r, tile, row["tile_path"], 4) for r in ("rgb", "rgbd"))
    assert torch.equal(photo, without_depth(view, "mixed")) and not torch.equal(photo, view)
    assert (photo[..., NUM_CLASSES + 3][photo[..., -1] > 0] == UNKNOWN_HEIGHT).all()
    for request in ("layout", "rgbd", "rgb", "none"):
        cond = tile_condition("mixed", request, tile, row["tile_path"], 4)
        assert cond.shape == (1, 4, 4, NUM_CLASSES + RGBD_CHANNELS)
        _, z = model.generate(cond, steps=2, generator=torch.Generator().manual_seed(0))
        assert len(z) > 0
    assert tile_condition("mixed", "rgbd", tile, row["tile_path"], 4)[..., :NUM_CLASSES].abs().sum() == 0
    with pytest.raises(ValueError, match="cannot take the rgbd condition"):
        tile_condition("semantic", "rgbd", tile, row["tile_path"], 4)


def test_a_photo_needs_flows_trained_without_depth():
    from types import SimpleNamespace

    from earthcrafter.latents.generate import GenerationConfig, check_photo_input
    from earthcrafter.models.struct_fm import StructFMConfig
    from earthcrafter.models.tex_fm import TexFMConfig

    def models(s, t):
        return SimpleNamespace(structfm=SimpleNamespace(config=s), texfm=SimpleNamespace(cfg=t))

    check_photo_input(models(StructFMConfig(condition="rgbd", height_dropout=0.3), TexFMConfig(condition="none")), "rgb")
    check_photo_input(models(StructFMConfig(condition="rgbd"), TexFMConfig()), "rgbd")
    with pytest.raises(ValueError, match="the StructFM was never trained on views without depth"):
        check_photo_input(models(StructFMConfig(condition="rgbd"), TexFMConfig()), "rgb")
    with pytest.raises(ValueError, match=r"the TexFM was never trained on views without depth \(condition semantic"):
        check_photo_input(models(StructFMConfig(condition="rgbd", height_dropout=0.3), TexFMConfig()), "rgb")
    with pytest.raises(ValueError, match="the TexFM was never trained on views without depth"):
        check_photo_input(models(StructFMConfig(condition="mixed", height_dropout=0.3), TexFMConfig(condition="rgbd")), "rgb")
    with pytest.raises(ValueError, match="not rgb"):
        GenerationConfig(condition="rgb", large_scenes=["s"])


@pytest.mark.timeout(300)
def test_texfm_with_height_dropout_scores_photos_in_its_preview(tmp_path):
    """A TexFM on RGBD views with height dropout trains, and its preview scores textures generated
    from the views without depth (``gen_rgb_psnr``) beside those from the views."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "latents"))
    from latent_synth import L, save_models, write_tiles

    from earthcrafter.latents.cache import cache_latents
    from earthcrafter.training.texfm import train_texfm

    manifest = write_tiles(tmp_path / "voxels", ["train"] * 3 + ["val"] * 2)
    for path in manifest["path"]:
        tile = read_tile(path)
        views = _views_of(tile.coords, L, 2.0, [[L + 10.0, L / 2, 4.0 * L], [L / 2, L + 5.0, 3.0 * L]], size=32)
        write_views(str(path).replace(".parquet", ".views.npz"), views)
    struct, tex = save_models(tmp_path)
    table, stats, _, _ = cache_latents(manifest, {"structvae_path": str(struct), "texvae_path": str(tex),
                                                  "out_dir": str(tmp_path / "latents"), "progress": False,
                                                  "mlflow": False})  # fmt: skip
    model = dict(width=32, depth=2, num_heads=2, window=4, layout_grid=2, layout_stride=8, condition="rgbd",
                 height_dropout=0.5)  # fmt: skip
    tr = dict(steps=3, batch_size=2, lr=1e-3, progress=False, cpu_threads=1, val_batch_size=2)
    metrics = train_texfm(table, stats, {"output_dir": str(tmp_path / "fm"), "mlflow": False, "texvae_path": str(tex),
                                         "preview_tiles": 2, "model": model, "sample": {"steps": 2}, "trainer": tr})  # fmt: skip
    assert metrics["preview_tiles"] == 2
    assert np.isfinite(metrics["gen_rgb_psnr"]) and np.isfinite(metrics["gen_psnr"])


def test_cached_condition_rasters_are_what_the_tiles_give(tmp_path, tiles32, monkeypatch, caplog):
    """cache_latents stores each tile's condition rasters, and the flows' dataset reads them instead of
    the tile and its views, getting exactly what it would compute from them. Views added after a
    cache are picked up by the next cache run; rasters of another version, or without the view a
    condition needs, are not used: the dataset computes them, with a warning."""
    import logging

    import earthcrafter.training.structfm as sfm
    from earthcrafter.io.latents import read_conditions, write_conditions
    from earthcrafter.latents.cache import cache_latents
    from earthcrafter.training.structfm import LatentTileDataset

    manifest, stats = tiles32
    assert "cond_path" in manifest.columns
    grid, _, rasters, _ = read_conditions(manifest["cond_path"].iloc[0])
    assert grid == 4 and set(rasters) == {"semantic"}  # no views yet
    for path in manifest["tile_path"]:
        tile = read_tile(path)
        views = _views_of(tile.coords, tile.L, tile.voxel_size, [[40.0, 20.0, 120.0], [10.0, 30.0, 90.0]], size=48)
        write_views(str(path).replace(".parquet", ".views.npz"), views)
    # the tiles' views are in the cached rasters only after the next cache run (latents reused)
    with caplog.at_level(logging.WARNING, logger="earthcrafter.training.structfm"):
        assert LatentTileDataset(manifest, stats["struct"], "train", 4, condition="rgbd")[0]["layout"][..., -1].any()
    assert "stored condition rasters not used" in caplog.text
    voxels = manifest.rename(columns={"tile_path": "path"})
    out_dir = str(Path(manifest["struct_path"].iloc[0]).parents[1])
    table, _, _, _ = cache_latents(voxels, {"structvae_path": tiles32.structvae, "texvae_path": None, "out_dir": out_dir,
                                            "progress": False, "mlflow": False})  # fmt: skip
    assert (table["status"] == "reused").all()
    for r in table.itertuples():
        tile = read_tile(r.tile_path)
        expected = tile_rasters(tile, read_views(str(r.tile_path).replace(".parquet", ".views.npz")), 4)
        grid, version, rasters, _ = read_conditions(r.cond_path)
        assert grid == 4 and version == RASTERS_VERSION and rasters.keys() == expected.keys() == {"semantic", "rgbd"}
        for k in expected:
            np.testing.assert_array_equal(rasters[k], expected[k])

    fresh_rows = table.drop(columns=["cond_path"])
    for condition in ("semantic", "rgbd", "mixed"):
        cached = LatentTileDataset(table, stats["struct"], "train", 4, condition=condition)
        fresh = LatentTileDataset(fresh_rows, stats["struct"], "train", 4, condition=condition)
        with monkeypatch.context() as m:  # the cached dataset reads neither the tiles nor their views
            m.setattr(sfm, "read_tile", None), m.setattr(sfm, "read_views", None)
            from_cache = [cached[i] for i in range(len(cached))]
        for a, b in zip(from_cache, (fresh[i] for i in range(len(fresh)))):
            assert a["tile_id"] == b["tile_id"]
            assert torch.equal(a["layout"], b["layout"]) and torch.equal(a["semantic"], b["semantic"])

    # rasters of another raster version are not used
    first = table.iloc[0]
    _, _, rasters, _ = read_conditions(first["cond_path"])
    write_conditions(first["cond_path"], 4, RASTERS_VERSION + 1, rasters)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="earthcrafter.training.structfm"):
        stale = LatentTileDataset(table, stats["struct"], "train", 4, condition="mixed")[0]
    assert "stored condition rasters not used" in caplog.text
    expected = LatentTileDataset(fresh_rows, stats["struct"], "train", 4, condition="mixed")[0]
    assert torch.equal(stale["layout"], expected["layout"])
    # an unreadable rasters file: the dataset still serves the tile
    Path(first["cond_path"]).write_bytes(b"PK truncated")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="earthcrafter.training.structfm"):
        broken = LatentTileDataset(table, stats["struct"], "train", 4, condition="mixed")[0]
    assert "not a readable NPZ" in caplog.text and torch.equal(broken["layout"], expected["layout"])

    # views rendered again (the tile unchanged): the next cache run lifts the new ones
    cache_cfg = {"structvae_path": tiles32.structvae, "texvae_path": None, "out_dir": out_dir, "progress": False,
                 "mlflow": False}  # fmt: skip
    cache_latents(voxels, cache_cfg)
    row = table.iloc[1]
    tile = read_tile(row["tile_path"])
    views = _views_of(tile.coords, tile.L, tile.voxel_size, [[5.0, 5.0, 100.0], [30.0, 10.0, 80.0]], size=48)
    write_views(str(row["tile_path"]).replace(".parquet", ".views.npz"), views)
    again, _, _, _ = cache_latents(voxels, cache_cfg)
    assert (again["status"] == "reused").all()
    np.testing.assert_array_equal(read_conditions(row["cond_path"])[2]["rgbd"], tile_rasters(tile, views, 4)["rgbd"])
