"""Scores of generated scenes: structure against hand-built voxel sets, the structure file format."""

import numpy as np
import pytest

from earthcrafter.evaluation.generated import structure_scores, top_heights
from earthcrafter.io.parquet import TileFormatError
from earthcrafter.io.structure import read_structure, write_structure
from earthcrafter.semantics import CLASS_ID


def _ground_and_block(L=16, ground=2, roof=9):
    """Ground at z = ground everywhere (road), a 4 x 4 block of height roof in one corner (roof on top)."""
    xs, ys = np.meshgrid(np.arange(L), np.arange(L), indexing="ij")
    coords = [np.stack([xs.ravel(), ys.ravel(), np.full(L * L, ground)], 1)]
    sem = [np.full(L * L, CLASS_ID["road"])]
    bx, by = np.meshgrid(np.arange(4), np.arange(4), indexing="ij")
    for z in range(ground + 1, roof + 1):
        coords.append(np.stack([bx.ravel(), by.ravel(), np.full(16, z)], 1))
        sem.append(np.full(16, CLASS_ID["building_roof"] if z == roof else CLASS_ID["building_facade"]))
    return np.concatenate(coords).astype(np.int32), np.concatenate(sem)


def test_a_copy_scores_perfectly():
    coords, sem = _ground_and_block()
    scores, by_class = structure_scores(coords, coords, sem, 16, 0.5)
    assert scores["iou"] == scores["cell_iou"] == scores["footprint_iou"] == scores["voxel_ratio"] == 1.0
    assert scores["height_mae_m"] == 0.0
    assert by_class["road"] == (0.0, 16 * 16 - 16) and by_class["building_roof"] == (0.0, 16)


def test_a_lower_building_shows_in_the_roof_class_only():
    ref, sem = _ground_and_block(roof=9)
    gen, _ = _ground_and_block(roof=6)  # 3 voxels lower
    scores, by_class = structure_scores(gen, ref, sem, 16, 0.5)
    assert by_class["building_roof"] == (pytest.approx(16 * 3 * 0.5), 16) and by_class["road"][0] == 0.0
    assert scores["height_mae_m"] == pytest.approx(16 * 1.5 / 256)
    assert scores["footprint_iou"] == 1.0 and scores["precision"] == 1.0
    assert scores["recall"] == pytest.approx(len(gen) / len(ref)) and scores["voxel_ratio"] == pytest.approx(len(gen) / len(ref))


def test_a_shifted_scene_loses_voxels_but_not_cells_within_the_cell():
    ref, sem = _ground_and_block(L=16, ground=2)
    gen = ref + [0, 0, 1]  # everything one voxel up: still inside the same 8-voxel cells (z 2..9 -> 3..10 crosses 7/8)
    scores, _ = structure_scores(gen, ref, sem, 16, 1.0)
    assert scores["height_mae_m"] == 1.0 and scores["footprint_iou"] == 1.0
    assert scores["iou"] < 1.0 and scores["cell_iou"] == 1.0


def test_top_heights_ignore_lower_voxels_and_mark_empty_columns():
    h = top_heights(np.array([[0, 0, 1], [0, 0, 5], [1, 0, 2]]), 3)
    assert h[0, 0] == 5 and h[1, 0] == 2 and (h[2] == -1).all()


def test_structure_file_round_trip_and_bad_files(tmp_path):
    coords = np.array([[0, 1, 2], [3, 3, 3]])
    path = write_structure(tmp_path / "s.parquet", coords, {"scene_id": "g", "L": 4, "voxel_size_m": 2.0, "source": {"seed": 1}})
    back, meta = read_structure(path)
    assert (back == coords).all() and meta["source"] == {"seed": 1} and meta["L"] == 4
    with pytest.raises(ValueError, match="outside"):
        write_structure(tmp_path / "t.parquet", coords, {"scene_id": "g", "L": 3, "voxel_size_m": 2.0, "source": {}})
    with pytest.raises(ValueError, match="lacks"):
        write_structure(tmp_path / "t.parquet", coords, {"scene_id": "g", "L": 4})
    assert not (tmp_path / "t.parquet").exists()
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(TileFormatError, match="bad.parquet"):
        read_structure(tmp_path / "bad.parquet")


def test_reference_renders_are_reused_while_the_texture_latents_are_unchanged(tmp_path, monkeypatch):
    from earthcrafter.evaluation import generated

    calls = []

    def fake_render(row, root, frames, size):
        calls.append((frames, size))
        return [np.full((size, size, 3), len(calls), np.uint8)] * frames

    monkeypatch.setattr(generated, "reference_frames", fake_render)
    (tmp_path / "tex.parquet").write_bytes(b"latents v1")
    row, cache = {"tile_id": "t0", "tex_path": "tex.parquet"}, tmp_path / "cache"
    first, reused = generated.cached_reference_frames(row, tmp_path, 2, 8, cache)
    assert not reused and len(calls) == 1 and len(first) == 2
    again, reused = generated.cached_reference_frames(row, tmp_path, 2, 8, cache)
    assert reused and len(calls) == 1 and all((a == b).all() for a, b in zip(first, again, strict=True))
    assert not generated.cached_reference_frames(row, tmp_path, 2, 16, cache)[1]  # another size
    (tmp_path / "tex.parquet").write_bytes(b"latents v2")  # re-cached latents
    assert not generated.cached_reference_frames(row, tmp_path, 2, 16, cache)[1] and len(calls) == 3
    (cache / "t0.npz").write_bytes(b"damaged")
    views, reused = generated.cached_reference_frames(row, tmp_path, 2, 16, cache)
    assert not reused and len(calls) == 4 and views[0][0, 0, 0] == 4
    assert generated.cached_reference_frames(row, tmp_path, 2, 16, None)[1] is False and len(calls) == 5


def test_report_page_escapes_values_and_names_missing_tables(tmp_path):
    import json

    import pandas as pd

    from earthcrafter.evaluation import html_report as hr

    (tmp_path / "train_structfm").mkdir()
    (tmp_path / "train_structfm" / "metrics.json").write_text(json.dumps({"note": "<script>x</script>", "iou": 0.5}))
    pd.DataFrame({"Method": ["DenseSFM"], "mIoU3": [48.2]}).to_csv(tmp_path / "train_structfm" / "table4.csv", index=False)
    stages, (tables, missing) = hr.read_stage_metrics(tmp_path), hr.read_tables(tmp_path)
    assert list(stages) == ["train_structfm"] and list(tables) == ["Table 4: StructFM"]
    assert any("structvae_ablations" in m for m in missing) and any("texvae_ablations" in m for m in missing)
    page = hr.write_report(tmp_path / "out" / "report.html", summary={"iou": 0.25}, scenes=pd.DataFrame({"scene_id": ["a"]}),
                           stage_metrics=stages, tables=tables, notes=missing, images={}, commit="abc")  # fmt: skip
    text = page.read_text()
    assert "<script>x" not in text and "&lt;script&gt;x" in text and "48.2" in text and "abc" in text
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["report.html"]  # no temporary left behind
