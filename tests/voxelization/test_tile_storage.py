import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from earthcrafter.io import tiles as tiles_io
from earthcrafter.io.tiles import (
    SplitConfig,
    TileFormatError,
    TileViews,
    VoxelTile,
    build_manifest,
    read_tile,
    read_tile_coords,
    read_tile_meta,
    read_views,
    skipped_table,
    split_for_scene,
    stratified_splits,
    write_scene_tiles,
    write_table,
    write_tile,
    write_views,
)


@pytest.fixture
def tile(vox_result):
    return vox_result.tiles[1]


def test_tile_round_trip_is_exact(tile, tmp_path):
    path = write_tile(tmp_path / f"{tile.tile_id}.parquet", tile)
    back = read_tile(path)
    assert back.tile_id == tile.tile_id
    np.testing.assert_array_equal(back.coords, tile.coords)
    assert back.feats.dtype == np.float16 and back.feats.shape == (len(tile), 66)
    np.testing.assert_array_equal(back.feats.view(np.uint16), tile.feats.view(np.uint16))  # bit-exact
    np.testing.assert_array_equal(back.semantic, tile.semantic)
    np.testing.assert_array_equal(back.confidence.view(np.uint16), tile.confidence.view(np.uint16))
    assert back.meta == tile.meta
    assert back.layout["f_rgb"] == slice(48, 63)
    schema = pq.read_schema(path)
    assert str(schema.field("feats").type) == "fixed_size_list<element: halffloat>[66]"
    assert schema.field("x").type == pa.uint16() and schema.field("confidence").type == pa.float16()
    coords, meta = read_tile_coords(path)
    np.testing.assert_array_equal(coords, tile.coords)
    assert meta["L"] == 32 and meta["tile_id"] == tile.tile_id
    assert read_tile_meta(path)["origin_m"] == tile.meta["origin_m"]


def test_read_tile_without_features_is_the_tile_minus_its_features(tile, tmp_path):
    """The flows' conditions read a tile without its feature column (most of the file): the same
    voxels, classes, confidences and metadata, still validated; a bad feature column is not read."""
    path = write_tile(tmp_path / "t.parquet", tile)
    full, light = read_tile(path), read_tile(path, features=False)
    np.testing.assert_array_equal(light.coords, full.coords)
    np.testing.assert_array_equal(light.semantic, full.semantic)
    np.testing.assert_array_equal(light.confidence.view(np.uint16), full.confidence.view(np.uint16))
    assert light.meta == full.meta and light.feats.shape == (len(full), 0)
    t = pq.read_table(path)
    sem = t.column("semantic").to_numpy().copy()
    sem[0] = 99
    with pytest.raises(TileFormatError, match="field 'semantic'"):
        read_tile(_rewrite(path, tmp_path, table=t.set_column(t.column_names.index("semantic"), "semantic", pa.array(sem))),
                  features=False)  # fmt: skip
    feats = t.column("feats").combine_chunks().values.to_numpy(zero_copy_only=False).copy()
    feats[5] = np.inf
    bad_feats = pa.FixedSizeListArray.from_arrays(pa.array(feats), 66)
    bad = _rewrite(path, tmp_path, table=t.set_column(3, "feats", bad_feats))
    np.testing.assert_array_equal(read_tile(bad, features=False).coords, full.coords)
    with pytest.raises(TileFormatError, match="field 'feats': non-finite"):
        read_tile(bad)


def _rewrite(path, tmp_path, table=None, meta_update=None, meta_drop=None):
    t = table if table is not None else pq.read_table(path)
    meta = dict(pq.read_schema(path).metadata)
    for k, v in (meta_update or {}).items():
        meta[k.encode()] = json.dumps(v).encode()
    if meta_drop:
        meta.pop(meta_drop.encode())
    out = tmp_path / "bad.parquet"
    pq.write_table(t.replace_schema_metadata(meta), out)
    return out


def test_read_tile_names_file_and_field_on_bad_input(tile, tmp_path):
    good = write_tile(tmp_path / "t.parquet", tile)
    with pytest.raises(FileNotFoundError, match="missing.parquet"):
        read_tile(tmp_path / "missing.parquet")
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"PAR1 nonsense")
    with pytest.raises(TileFormatError, match="junk.parquet.*not a readable Parquet"):
        read_tile(junk)
    cases = [
        (dict(meta_drop="voxel_size_m"), "'voxel_size_m': missing"),
        (dict(meta_update={"L": -3}), "'L'"),
        (dict(meta_update={"L": 4}), "'x/y/z': voxel index"),
        (dict(meta_update={"origin_m": [1, 2]}), "'origin_m'"),
        (dict(meta_update={"format": "other/1"}), "'format'"),
        (dict(meta_update={"feature_layout": '{"f0": [0, 16]}'}), "'feats': expected type"),
    ]
    for kwargs, msg in cases:
        with pytest.raises(TileFormatError, match=f"bad.parquet: field {msg}"):
            read_tile(_rewrite(good, tmp_path, **kwargs))
    t = pq.read_table(good)
    sem = t.column("semantic").to_numpy().copy()
    sem[0] = 99
    with pytest.raises(TileFormatError, match="field 'semantic'"):
        read_tile(_rewrite(good, tmp_path, table=t.set_column(t.column_names.index("semantic"), "semantic", pa.array(sem))))
    with pytest.raises(TileFormatError, match="field 'x': expected type uint16"):
        read_tile(_rewrite(good, tmp_path, table=t.set_column(0, "x", pa.array(t.column("x").to_numpy().astype(np.int32)))))
    dup = pa.concat_tables([t.slice(0, 3), t.slice(0, 1)])
    with pytest.raises(TileFormatError, match="field 'x/y/z': 1 duplicate voxels"):
        read_tile(_rewrite(good, tmp_path, table=dup))
    shuffled = t.take(np.random.default_rng(0).permutation(t.num_rows))  # out of order is allowed, repeats are not
    np.testing.assert_array_equal(np.sort(read_tile(_rewrite(good, tmp_path, table=shuffled)).coords, axis=0),
                                  np.sort(tile.coords, axis=0))  # fmt: skip
    feats = t.column("feats").combine_chunks().values.to_numpy(zero_copy_only=False).copy()
    feats[5] = np.inf
    bad_feats = pa.FixedSizeListArray.from_arrays(pa.array(feats), 66)
    with pytest.raises(TileFormatError, match="field 'feats': non-finite"):
        read_tile(_rewrite(good, tmp_path, table=t.set_column(3, "feats", bad_feats)))


def test_feature_columns_are_written_without_a_dictionary(tile, tmp_path):
    """float16 features always fit a dictionary, and decoding one is about 5x slower than plain values:
    only the integer columns get one (benchmarks/bench_texvae_data.py)."""
    chunks = pq.read_metadata(write_tile(tmp_path / "t.parquet", tile)).row_group(0)
    encodings = {chunks.column(i).path_in_schema: chunks.column(i).encodings for i in range(chunks.num_columns)}
    assert "RLE_DICTIONARY" not in encodings["feats.list.element"] and "RLE_DICTIONARY" not in encodings["confidence"]
    assert "RLE_DICTIONARY" in encodings["semantic"]


def test_write_tile_is_atomic(tile, tmp_path, monkeypatch):
    path = write_tile(tmp_path / "t.parquet", tile)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(tiles_io.pq, "write_table", boom)
    with pytest.raises(OSError, match="disk full"):
        write_tile(path, tile)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.parquet"]


def test_voxel_tile_validates_shapes(tile):
    with pytest.raises(ValueError, match="semantic"):
        VoxelTile("x", tile.coords, tile.feats, tile.semantic[:-1], tile.confidence, tile.meta)
    with pytest.raises(ValueError, match="coords"):
        VoxelTile("x", tile.coords[:, :2], tile.feats, tile.semantic, tile.confidence, tile.meta)


def test_views_round_trip_and_validation(vox_result, tmp_path):
    views = vox_result.views[0]
    path = write_views(tmp_path / "a.views.npz", views)
    back = read_views(path)
    for name in ("rgb", "mask", "depth", "K", "world_to_camera"):
        np.testing.assert_array_equal(getattr(back, name), getattr(views, name))
    assert back.names == views.names and back.mask.dtype == bool
    empty = write_views(tmp_path / "e.views.npz", TileViews.empty(96, 96))
    assert len(read_views(empty)) == 0
    bad = tmp_path / "bad.views.npz"
    np.savez(bad, rgb=views.rgb.astype(np.float32), mask=views.mask, depth=views.depth, K=views.K, world_to_camera=views.world_to_camera, names=np.array(views.names))
    with pytest.raises(TileFormatError, match="bad.views.npz: field 'rgb'"):
        read_views(bad)
    with pytest.raises(ValueError, match="TileViews.mask"):
        TileViews(views.rgb, views.mask[:, :5], views.depth, views.K, views.world_to_camera, views.names)


def test_split_is_by_scene_seeded_and_stable():
    ids = [f"scene_{i:04d}" for i in range(2000)]
    splits = [split_for_scene(s, 0.1, seed=0) for s in ids]
    assert 0.08 < splits.count("val") / len(ids) < 0.12
    assert splits == [split_for_scene(s, 0.1, seed=0) for s in ids]
    assert splits != [split_for_scene(s, 0.1, seed=1) for s in ids]
    # growing the val fraction only moves scenes train -> val
    assert all(b == "val" for a, b in zip(splits, [split_for_scene(s, 0.3) for s in ids]) if a == "val")
    assert {split_for_scene(s, 0.0) for s in ids} == {"train"} and {split_for_scene(s, 1.0) for s in ids} == {"val"}


def test_stratified_split_validates_only_biomes_that_also_train():
    biomes = {f"s{i}": b for i, b in enumerate(["downtown"] * 2 + ["farmland"] * 5 + ["desert"] + ["hills"] * 10)}
    splits = stratified_splits(biomes, 0.2, seed=0)
    val = {b: sum(1 for s, v in splits.items() if v == "val" and biomes[s] == b) for b in set(biomes.values())}
    assert val == {"downtown": 1, "farmland": 1, "desert": 0, "hills": 2}  # at least 1, round(0.2 n), never all
    assert splits == stratified_splits(biomes, 0.2, seed=0) and splits != stratified_splits(biomes, 0.2, seed=3)
    assert set(stratified_splits(biomes, 0.0).values()) == {"train"}
    rows = [{"tile_id": f"{s}_t{k}", "scene_id": s, "biome": b, "num_voxels": 10} for s, b in biomes.items() for k in range(3)]
    df = build_manifest(rows, SplitConfig(val_fraction=0.2, seed=0, stratify_by="biome"))
    assert df.groupby("scene_id")["split"].nunique().max() == 1
    assert set(df.loc[df.split == "val", "biome"]) <= set(df.loc[df.split == "train", "biome"])


def test_manifest_from_written_tiles(vox_result, tmp_path):
    rows = write_scene_tiles(tmp_path / "voxels", vox_result.tiles, vox_result.views)
    other = [dict(r, tile_id=r["tile_id"].replace("toy", f"s{k}"), scene_id=f"s{k}") for k in range(40) for r in rows]
    df = build_manifest(rows + other, SplitConfig(val_fraction=0.3, seed=0))
    assert len(df) == 4 * 41 and df["tile_id"].is_unique
    assert df.groupby("scene_id")["split"].nunique().max() == 1  # never split a scene
    assert set(df["split"]) == {"train", "val"}
    toy = df[df.scene_id == "toy"].set_index("tile_id")
    for tile, views in zip(vox_result.tiles, vox_result.views):
        row = toy.loc[tile.tile_id]
        assert row.num_voxels == len(tile) and row.num_views == len(views) and row.biome == "temperate"
        assert row.z0 == pytest.approx(tile.origin[2])
        assert row.unseen_fraction == pytest.approx(tile.meta["counts"]["unseen_fraction"])
        assert sum(json.loads(row.class_hist).values()) == len(tile)
        assert read_tile(row.path).tile_id == tile.tile_id and len(read_views(row.views_path)) == len(views)
    out = write_table(tmp_path / "manifest.parquet", df)
    pd.testing.assert_frame_equal(pd.read_parquet(out), df)
    with pytest.raises(ValueError, match="duplicate tile ids"):
        build_manifest(rows + rows)


def test_skipped_table(vox_result):
    df = skipped_table([{"scene_id": "a", "scope": "frame", "item": "003", "reason": "NaN depth"}])
    assert list(df.columns) == ["scene_id", "scope", "item", "reason"] and len(df) == 1
    assert len(skipped_table(vox_result.skipped)) == 0


def test_block_split_divides_one_survey_without_overlap_between_splits():
    """One scene of 10 x 10 overlapping tiles (100 m, stride 50 m) in 200 m blocks: both splits get
    tiles, whole blocks go together, no training tile overlaps a validation tile (those become
    'buffer'), and the split is stable when the survey grows."""
    from earthcrafter.io.tiles import block_splits

    xy = [(50.0 * i, 50.0 * j) for i in range(10) for j in range(10)]
    rows = [{"tile_id": f"t{i:03d}", "scene_id": "survey", "num_voxels": 10, "x0": x, "y0": y, "extent_m": 100.0}
            for i, (x, y) in enumerate(xy)]  # fmt: skip
    cfg = SplitConfig(val_fraction=0.3, seed=0, by="block", block_size_m=200.0)
    df = build_manifest(rows, cfg)
    assert set(df["split"]) == {"train", "val", "buffer"}
    block = ((df["x0"] + 50) // 200).astype(int).astype(str) + "_" + ((df["y0"] + 50) // 200).astype(int).astype(str)
    assert (df[df.split != "buffer"].groupby(block)["split"].nunique() == 1).all()  # a block is not divided
    val, train = df[df.split == "val"], df[df.split == "train"]
    for _, t in train.iterrows():
        overlap = (abs(val["x0"] - t["x0"]) < 100) & (abs(val["y0"] - t["y0"]) < 100)
        assert not overlap.any(), t["tile_id"]
    for _, b in df[df.split == "buffer"].iterrows():  # and each buffer tile does overlap one
        assert ((abs(val["x0"] - b["x0"]) < 100) & (abs(val["y0"] - b["y0"]) < 100)).any(), b["tile_id"]
    grown = pd.DataFrame(rows + [dict(rows[0], tile_id="t999", x0=1000.0, y0=1000.0)])
    again = block_splits(grown, 0.3, 200.0, seed=0)
    assert (again[:100].to_numpy()[df.split.to_numpy() != "buffer"] == df.split[df.split != "buffer"]).all()
    with pytest.raises(ValueError, match="stratify_by works on scenes"):
        SplitConfig(by="block", stratify_by="biome")
