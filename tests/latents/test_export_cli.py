"""`earthcrafter export` checks everything before it writes, writes its folder atomically, and ends
a request it cannot do with one line and exit status 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from earthcrafter.commands import main
from earthcrafter.latents import export
from earthcrafter.latents.cache import cache_latents


@pytest.fixture
def project(tiles) -> dict:
    """The ``tiles`` fixture's cache, with its manifest where the command looks for it."""
    table, _, _, _ = cache_latents(tiles["manifest"], tiles["cfg"])
    manifest = tiles["root"] / "data" / "05_model_input" / "latents_manifest.parquet"
    manifest.parent.mkdir(parents=True)
    table.to_parquet(manifest)
    out = tiles["root"] / "data" / "07_model_output" / "reconstructions"
    return {**tiles, "args": ["--root", str(tiles["root"]), "--frames", "0", "--size", "16"], "out": out}


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if not line.startswith(("INFO ", "WARNING "))]  # the log's lines
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


def _left(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_changed_texvae_weights_are_refused_before_anything_is_written(project, capsys):
    tex = project["cfg"]["texvae_path"]
    with open(tex, "ab") as f:  # other bytes at the same path: not the decoder of these latents
        f.write(b"\0")
    assert main(["export", "t001", *project["args"]]) == 2
    err = _err(capsys)
    assert err.startswith("earthcrafter export: ") and "changed since the tex latents of t001 were cached" in err
    assert _left(project["out"]) == []  # no voxels_gt.ply, no voxels_decoded.ply, no temporary


def test_missing_weights_and_bad_options_exit_2(project, capsys):
    for flag, value, why in (("--size", "0", "--size must be at least 16, got 0"),
                             ("--frames", "-1", "--frames must be at least 0, got -1")):  # fmt: skip
        assert main(["export", "t001", *project["args"], flag, value]) == 2
        assert why in _err(capsys)
    with pytest.raises(ValueError, match="size must be a whole number of pixels >= 16"):
        export.export_tile({}, project["out"] / "t001", size=0)  # the library checks before reading the row
    Path(project["cfg"]["structvae_path"]).unlink()
    assert main(["export", "t001", *project["args"]]) == 2
    assert "which no longer exists" in _err(capsys)
    assert _left(project["out"]) == []


def test_the_folder_is_replaced_whole_or_not_at_all(project, capsys, monkeypatch):
    assert main(["export", "t001", *project["args"]]) == 0
    folder = project["out"] / "t001"
    (folder / "voxels_gt.ply").write_bytes(b"an earlier export's mesh")  # an export the next one must replace whole
    first = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert set(first) == {"voxels_gt.ply", "voxels_decoded.ply", "gaussians.ply", "preview.png", "summary.json"}

    def crash(*args, **kwargs):  # a failure after the voxel meshes are written
        raise OSError("disk full")

    monkeypatch.setattr(export, "save_ply", crash)
    with pytest.raises(OSError, match="disk full"):  # not a user error: its traceback stays
        main(["export", "t001", *project["args"], "--size", "24"])
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == first  # the earlier export, untouched
    assert _left(project["out"]) == ["t001"]  # no temporary left beside it
    monkeypatch.undo()
    assert main(["export", "t001", *project["args"], "--size", "24"]) == 0  # an earlier export is replaced
    assert (folder / "preview.png").read_bytes() != first["preview.png"]
    assert (folder / "voxels_gt.ply").read_bytes() != first["voxels_gt.ply"]


def test_a_folder_that_is_no_export_is_never_replaced(project, capsys):
    foreign = project["root"] / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert main(["export", "t001", *project["args"], "--out", str(foreign)]) == 2
    assert "is not an earlier export (no summary.json)" in _err(capsys)
    assert _left(foreign) == ["notes.txt"]
