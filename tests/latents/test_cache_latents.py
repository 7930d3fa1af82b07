"""cache_latents: files equal direct encoding, statistics of the training split, the decode check
equals the StructVAE validation, reuse / resume, skipped tiles, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from latent_synth import STRUCT, save_models, write_tiles

from earthcrafter.io.latents import read_conditions, read_latent_tile
from earthcrafter.io.tiles import read_tile
from earthcrafter.models.struct_vae import StructVAE, StructVAEConfig
from earthcrafter.models.tex_vae import TexVAE, tile_to_sparse
from earthcrafter.sparse import SparseTensor
from earthcrafter.latents import cache as latent_cache
from earthcrafter.latents.cache import cache_latents
from earthcrafter.training.structvae import StructVAETask, load_structvae, save_structvae
from earthcrafter.training.conditions import RASTERS_VERSION


def _voxels(coords: np.ndarray) -> SparseTensor:
    c = torch.from_numpy(coords)
    return SparseTensor.from_list([torch.ones(len(c), 1)], [c])


def test_files_hold_the_posteriors_and_stats_cover_the_training_split(tiles):
    table, stats, skipped, metrics = cache_latents(tiles["manifest"], tiles["cfg"])
    assert len(table) == 6 and skipped.empty and metrics["encoded"] == 6 and metrics["reused"] == 0
    assert table["split"].tolist() == tiles["manifest"]["split"].tolist()
    struct, tex = load_structvae(tiles["cfg"]["structvae_path"]), TexVAE.load(tiles["cfg"]["texvae_path"])
    train_means = {"struct": [], "tex": []}
    for r in table.itertuples():
        tile = read_tile(r.tile_path)
        with torch.no_grad():
            s_mean, s_logvar = struct.encode_posterior(_voxels(tile.coords))
            t_mean, t_logvar = tex.encode_posterior(tile_to_sparse(tile, tex.config.features))
        for kind, path, mean, logvar in (("struct", r.struct_path, s_mean, s_logvar),
                                         ("tex", r.tex_path, t_mean, t_logvar.feats)):  # fmt: skip
            lt = read_latent_tile(path)
            assert lt.kind == kind and lt.meta["L"] == 16 and lt.meta["scene_id"] == tile.meta["scene_id"]
            np.testing.assert_array_equal(lt.coords, mean.coords[:, 1:].numpy())
            torch.testing.assert_close(torch.from_numpy(lt.mean), mean.feats, rtol=0, atol=0)
            torch.testing.assert_close(torch.from_numpy(lt.logvar), logvar, rtol=0, atol=0)
            if r.split == "train":
                train_means[kind].append(lt.mean)
        assert r.struct_voxels == len(s_mean) and r.tex_voxels == len(tile)
        assert read_latent_tile(r.struct_path).stride == 8 and read_latent_tile(r.tex_path).stride == 1
    for kind, chunks in train_means.items():  # numpy over the training files, independently
        ref = np.concatenate(chunks).astype(np.float64)
        assert stats[kind]["count"] == len(ref) and stats[kind]["channels"] == ref.shape[1]
        np.testing.assert_allclose(stats[kind]["mean"], ref.mean(0), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(stats[kind]["std"], ref.std(0), rtol=1e-7)
    assert stats["split"] == "train" and stats["models"]["struct"]["sha256"] != stats["models"]["tex"]["sha256"]


def test_decode_check_equals_the_structvae_validation(tiles):
    """Decoding the cached latents scores exactly what the trainer's validation scores when it
    encodes the same tiles afresh."""
    _, _, _, metrics = cache_latents(tiles["manifest"], tiles["cfg"])
    model = load_structvae(tiles["cfg"]["structvae_path"])
    task = StructVAETask(model.config)
    val = tiles["manifest"][tiles["manifest"]["split"] == "val"]
    stats: dict = {}
    for path in val["path"]:
        with torch.no_grad():
            for k, v in task.validation_stats(model, {"voxels": _voxels(read_tile(path).coords)}).items():
                stats[k] = stats.get(k, 0) + v
    expected = task.metrics_from_stats(stats)
    assert metrics["check_tiles"] == 2
    for name in ("acc", "iou", "precision", "recall", "acc_s2", "iou_s4"):
        assert metrics[f"check_{name}"] == pytest.approx(expected[name], abs=1e-12), name


def test_rerun_reuses_valid_files_and_reencodes_what_changed(tiles, monkeypatch):
    cfg, manifest = tiles["cfg"], tiles["manifest"]
    table, stats, _, _ = cache_latents(manifest, cfg)
    stamps = {p: (tiles["root"] / p).stat().st_mtime_ns for p in [*table["struct_path"], *table["tex_path"]]}
    hashed = []
    sha = latent_cache.file_sha256
    monkeypatch.setattr(latent_cache, "file_sha256", lambda p: hashed.append(str(p)) or sha(p))
    again, stats2, _, m2 = cache_latents(manifest, cfg)
    assert m2["encoded"] == 0 and m2["reused"] == 6 and (again["status"] == "reused").all()
    assert sorted(hashed) == sorted([cfg["structvae_path"], cfg["texvae_path"]]), "unchanged tiles are not re-read"
    assert stats2 == stats
    assert all((tiles["root"] / p).stat().st_mtime_ns == t for p, t in stamps.items())

    # new StructVAE weights: every tile is encoded again, and the struct latents change
    torch.manual_seed(1)
    save_structvae(StructVAE(StructVAEConfig(**STRUCT)), cfg["structvae_path"])
    third, stats3, _, m3 = cache_latents(manifest, cfg)
    assert m3["encoded"] == 6
    assert stats3["struct"]["mean"] != stats["struct"]["mean"] and stats3["tex"] == stats["tex"]

    before = read_latent_tile(third["struct_path"].iloc[0])
    # tiles written again with the same content are recognised by their bytes, not their time
    write_tiles(tiles["root"] / "voxels", ["train"] * 4 + ["val"] * 2, seed=0)
    # one tile with new content: only that tile is encoded again
    write_tiles(tiles["root"] / "other", ["train"], seed=40)
    (tiles["root"] / "other" / "t000.parquet").replace(manifest["path"].iloc[0])
    hashed.clear()
    fourth, _, _, m4 = cache_latents(manifest, cfg)
    assert m4["encoded"] == 1 and fourth.set_index("tile_id")["status"].to_dict()["t000"] == "encoded"
    tile_reads = [p for p in hashed if p.endswith(".parquet")]
    assert sorted(tile_reads) == sorted(manifest["path"].map(str)), "each re-written tile is hashed once"
    after = read_latent_tile(fourth["struct_path"].iloc[0])
    assert after.meta["source"]["sha256"] != before.meta["source"]["sha256"]
    assert not np.array_equal(after.coords, before.coords) or not np.array_equal(after.mean, before.mean)
    # that run hashed the re-written tiles once and recorded their new stamps: the next one reads no tile
    hashed.clear()
    _, _, _, m5 = cache_latents(manifest, cfg)
    assert m5["encoded"] == 0 and sorted(hashed) == sorted([cfg["structvae_path"], cfg["texvae_path"]])


def test_a_crash_leaves_only_whole_files_and_the_rerun_resumes(tiles, monkeypatch):
    real_write, calls = latent_cache.write_latent_tile, []

    def failing_write(path, tile):
        calls.append(path)
        if len(calls) == 5:
            raise RuntimeError("killed")
        return real_write(path, tile)

    monkeypatch.setattr(latent_cache, "write_latent_tile", failing_write)
    with pytest.raises(RuntimeError, match="killed"):
        cache_latents(tiles["manifest"], tiles["cfg"])
    out = tiles["root"] / "latents"
    written = sorted(p for p in out.rglob("*") if p.is_file() and p.parent.name != "conditions")
    assert len(written) == 4 and all(read_latent_tile(p) for p in written)  # 2 tiles whole, nothing partial
    rasters = sorted((out / "conditions").iterdir())
    assert [p.name for p in rasters] == ["t000.npz", "t001.npz"] and all(read_conditions(p)[1] == RASTERS_VERSION for p in rasters)
    monkeypatch.setattr(latent_cache, "write_latent_tile", real_write)
    _, _, _, metrics = cache_latents(tiles["manifest"], tiles["cfg"])
    assert metrics["reused"] == 2 and metrics["encoded"] == 4


def test_empty_tiles_are_skipped_and_recorded(tmp_path):
    manifest = write_tiles(tmp_path / "voxels", ["train", "train", "val"], empty=(1,))
    struct, tex = save_models(tmp_path)
    cfg = {"structvae_path": str(struct), "texvae_path": str(tex), "out_dir": str(tmp_path / "latents"),
           "progress": False, "mlflow": False}  # fmt: skip
    table, _, skipped, metrics = cache_latents(manifest, cfg)
    assert table["tile_id"].tolist() == ["t000", "t002"]
    assert skipped.to_dict("records") == [{"tile_id": "t001", "scene_id": "s1", "reason": "tile has zero voxels"}]
    assert metrics["skipped"] == 1


def test_unet2_texture_latents_live_on_the_coarse_grid(tiles):
    from earthcrafter.models.tex_vae import TexVAEConfig

    unet2 = TexVAE(TexVAEConfig(width=16, num_heads=2, enc_depth=2, dec_depth=2, window=4, arch="unet2"), 66)
    unet2.save(tiles["root"] / "unet2.pt")
    table, stats, _, _ = cache_latents(tiles["manifest"], {**tiles["cfg"], "texvae_path": str(tiles["root"] / "unet2.pt")})
    for r in table.itertuples():
        lt, coords = read_latent_tile(r.tex_path), read_tile(r.tile_path).coords
        assert lt.stride == 2 and len(lt) == r.tex_voxels == len(np.unique(coords // 2, axis=0)) < len(coords)


def test_structure_only(tiles):
    table, stats, _, _ = cache_latents(tiles["manifest"], {**tiles["cfg"], "texvae_path": None})
    assert set(stats) == {"split", "struct", "models"} and (table["tex_path"] == "").all()
    assert not (tiles["root"] / "latents" / "tex").exists()


def test_bad_inputs_fail_at_start_with_clear_messages(tiles, tmp_path):
    cfg, manifest = tiles["cfg"], tiles["manifest"]
    with pytest.raises(FileNotFoundError,
                       match=r"StructVAE weights not found: .*nope\.pt .*--pipelines=train_structvae"):
        cache_latents(manifest, {**cfg, "structvae_path": str(tmp_path / "nope.pt")})
    with pytest.raises(FileNotFoundError, match=r"TexVAE weights not found: .*--pipelines=train_texvae"):
        cache_latents(manifest, {**cfg, "texvae_path": str(tmp_path / "nope.pt")})
    save_structvae(StructVAE(StructVAEConfig(**{**STRUCT, "L": 32})), tmp_path / "l32.pt")
    with pytest.raises(ValueError, match=r"t000\.parquet: field 'L': the tile has L=16, the StructVAE .* L=32"):
        cache_latents(manifest, {**cfg, "structvae_path": str(tmp_path / "l32.pt")})
    gone = manifest.copy()
    gone.loc[5, "path"] = str(tmp_path / "missing.parquet")
    with pytest.raises(FileNotFoundError, match=r"split 'val': 1 tile file\(s\) missing: .*missing\.parquet"):
        cache_latents(gone, cfg)
    with pytest.raises(ValueError, match=r"stats_split = 'test' is not among the encoded splits \['train', 'val'\]"):
        cache_latents(manifest, {**cfg, "stats_split": "test"})
    with pytest.raises(ValueError, match="no tiles in split 'test'"):
        cache_latents(manifest, {**cfg, "splits": ["test"]})
    assert not (tmp_path / "latents").exists()  # nothing written by any of these


@pytest.mark.parametrize("env", ["base", "paper"])
def test_shipped_parameters_validate(env):
    from pathlib import Path

    import yaml

    from earthcrafter.config import ConfigError, validate

    raw = yaml.safe_load((Path(__file__).parents[2] / "conf" / env / "parameters_cache_latents.yml").read_text())
    cfg = validate("cache_latents", raw["cache_latents"])
    assert cfg.structvae_path == "data/06_models/structvae/model.pt" and cfg.stats_split == "train"
    assert cfg.check_tiles == (256 if env == "paper" else 0)
    with pytest.raises(ConfigError, match=r"parameters\.cache_latents\.stats_spilt"):
        validate("cache_latents", {**raw["cache_latents"], "stats_spilt": "train"})
