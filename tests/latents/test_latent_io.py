"""Latent tile files and channel statistics."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from earthcrafter.flow.latent_stats import ChannelMoments, denormalize, normalize
from earthcrafter.io.latents import LatentTile, read_latent_tile, write_latent_tile
from earthcrafter.io.parquet import TileFormatError

META = {"scene_id": "s0", "L": 64, "stride": 8, "voxel_size_m": 3.125, "origin_m": [1.0, 2.0, 3.0],
        "model": {"path": "m.pt", "sha256": "ab"}, "source": {"path": "t.parquet", "sha256": "cd"}}  # fmt: skip


def _tile(n: int = 20, c: int = 32, seed: int = 0) -> LatentTile:
    rng = np.random.default_rng(seed)
    coords = rng.choice(8**3, n, replace=False)
    coords = np.stack(np.unravel_index(coords, (8, 8, 8)), 1)
    return LatentTile("t0", "struct", coords, rng.normal(size=(n, c)), rng.normal(-5, 1, (n, c)), META)


def test_round_trip(tmp_path):
    tile = _tile()
    read = read_latent_tile(write_latent_tile(tmp_path / "t0.parquet", tile))
    assert (read.tile_id, read.kind, read.channels, read.stride) == ("t0", "struct", 32, 8)
    np.testing.assert_array_equal(read.coords, tile.coords)
    np.testing.assert_array_equal(read.mean, tile.mean)
    np.testing.assert_array_equal(read.logvar, tile.logvar)
    assert read.meta == META
    assert [p.name for p in tmp_path.iterdir()] == ["t0.parquet"]  # no temporary left behind


def test_reading_the_mean_only(tmp_path):
    """The flows read the mean alone: the same coords, mean and metadata; a file lacking the
    log-variance still reads that way, and a tile read so cannot be written back."""
    tile = _tile()
    path = write_latent_tile(tmp_path / "t0.parquet", tile)
    full, mean_only = read_latent_tile(path), read_latent_tile(path, logvar=False)
    np.testing.assert_array_equal(mean_only.coords, full.coords)
    np.testing.assert_array_equal(mean_only.mean, full.mean)
    assert mean_only.meta == full.meta and mean_only.logvar.shape == (len(tile), 0)
    pq.write_table(pq.read_table(path).drop(["logvar"]), tmp_path / "no_logvar.parquet")
    np.testing.assert_array_equal(read_latent_tile(tmp_path / "no_logvar.parquet", logvar=False).mean, tile.mean)
    with pytest.raises(ValueError, match="no log-variance to write"):
        write_latent_tile(tmp_path / "back.parquet", mean_only)


def test_bad_files_name_file_and_field(tmp_path):
    path = write_latent_tile(tmp_path / "t0.parquet", _tile())
    table = pq.read_table(path)
    pq.write_table(table.drop(["logvar"]), tmp_path / "b.parquet")
    with pytest.raises(TileFormatError, match=r"b\.parquet: field 'logvar': column missing"):
        read_latent_tile(tmp_path / "b.parquet")
    meta = dict(table.schema.metadata)
    pq.write_table(table.replace_schema_metadata({k: v for k, v in meta.items() if k != b"source"}), tmp_path / "a.parquet")
    with pytest.raises(TileFormatError, match=r"a\.parquet: field 'source': missing from the file metadata"):
        read_latent_tile(tmp_path / "a.parquet")
    meta[b"L"] = b"16"  # coords up to 7 need L/stride = 2 cells
    pq.write_table(table.replace_schema_metadata(meta), tmp_path / "c.parquet")
    with pytest.raises(TileFormatError, match=r"c\.parquet: field 'x/y/z': latent index 7 >= L/stride = 2"):
        read_latent_tile(tmp_path / "c.parquet")
    with pytest.raises(FileNotFoundError, match="latent tile not found"):
        read_latent_tile(tmp_path / "absent.parquet")
    with pytest.raises(ValueError, match="meta lacks"):
        write_latent_tile(tmp_path / "d.parquet", LatentTile("t", "tex", np.zeros((1, 3)), np.zeros((1, 8)),
                                                             np.zeros((1, 8)), {"L": 8}))  # fmt: skip
    with pytest.raises(ValueError, match="kind 'shape'"):
        LatentTile("t", "shape", np.zeros((1, 3)), np.zeros((1, 8)), np.zeros((1, 8)))


def test_channel_moments_match_numpy():
    rng = np.random.default_rng(1)
    chunks = [rng.normal(rng.normal(size=6), rng.uniform(0.1, 3, 6), (n, 6)) for n in (1, 50, 333, 7)]
    ref = np.concatenate(chunks)
    a = ChannelMoments.zeros(6)
    for x in chunks[:2]:
        a.update(x)
    b = ChannelMoments.zeros(6).update(torch.from_numpy(chunks[2])).update(chunks[3])
    merged = ChannelMoments.from_tensor(a.to_tensor() + b.to_tensor())  # what ranks all-reduce
    for m in (merged, a.merge(b)):
        assert m.count == len(ref)
        np.testing.assert_allclose(m.mean, ref.mean(0), rtol=1e-12)
        np.testing.assert_allclose(m.std, ref.std(0), rtol=1e-9)
    with pytest.raises(ValueError, match=r"expected \[N, 6\]"):
        a.update(np.zeros((3, 5)))

    stats = merged.as_dict()
    x = torch.from_numpy(ref).float()
    z = normalize(x, stats)
    torch.testing.assert_close(z.mean(0), torch.zeros(6), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.std(0, unbiased=False), torch.ones(6), atol=1e-4, rtol=0)
    torch.testing.assert_close(denormalize(z, stats), x, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="6 channels, the latents 5"):
        normalize(x[:, :5], stats)
