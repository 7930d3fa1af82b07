"""`earthcrafter view`: what the HTML view draws is what the files hold, within a budget, and bad
paths are refused by name."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from earthcrafter.commands import main
from earthcrafter.features.layout import FEATURE_LAYOUT, NUM_FEATURES, layout_to_json
from earthcrafter.geometry.voxel_mesh import voxel_mesh
from earthcrafter.io.scene import Mesh, write_mesh_ply
from earthcrafter.io.structure import write_structure
from earthcrafter.io.tiles import VoxelTile, write_tile
from earthcrafter.render import Gaussians2D, save_ply
from earthcrafter.render.html_view import ViewLayer, in_one_frame, layers_of, view_figure, within_budget, write_view
from earthcrafter.semantics import PALETTE

UTM = np.array([500_000.0, 4_900_000.0, 120.0])  # georeferenced data sits far from the origin


def _voxels(tmp_path):
    rng = np.random.default_rng(0)
    coords = np.unique(rng.integers(0, 6, (40, 3)), axis=0)
    colours = rng.integers(0, 256, (len(coords), 3)).astype(np.uint8)
    mesh = voxel_mesh(coords, 0.5, UTM, colours)
    write_mesh_ply(tmp_path / "voxels.ply", mesh)
    return mesh


def _gaussians(tmp_path, n=50):
    g = torch.Generator().manual_seed(1)
    gs = Gaussians2D(means=torch.from_numpy(UTM).float() + torch.rand(n, 3, generator=g) * 3,
                     quats=torch.randn(n, 4, generator=g), scales=torch.rand(n, 2, generator=g) * 0.1 + 0.01,
                     opacities=torch.rand(n, generator=g) * 0.9 + 0.05, sh=torch.randn(n, 1, 3, generator=g))  # fmt: skip
    save_ply(tmp_path / "gaussians.ply", gs)
    return gs


def test_a_scene_folder_draws_its_voxels_and_surfels(tmp_path):
    mesh = _voxels(tmp_path)
    gs = _gaussians(tmp_path)
    (tmp_path / "structure.parquet").write_bytes(b"not drawn")  # a generated scene's tables are skipped
    layers = {layer.name: layer for layer in layers_of(tmp_path)}
    assert sorted(layers) == ["gaussians", "voxels"]
    vox = layers["voxels"]
    np.testing.assert_allclose(vox.xyz, mesh.vertices, atol=1e-2 * 4)  # stored as float32 metres (UTM)
    np.testing.assert_array_equal(vox.faces, mesh.faces)
    np.testing.assert_array_equal(vox.rgb, mesh.vertex_colors)
    surf = layers["gaussians"]
    # the DC colour, computed here from the SH definition: Y_00 = 1 / (2 sqrt(pi)), colour = 0.5 + Y_00 c
    expected = np.clip(0.5 + gs.sh[:, 0].double().numpy() / (2 * np.sqrt(np.pi)), 0, 1) * 255
    assert np.abs(surf.rgb.astype(float) - expected).max() <= 0.5 + 1e-6
    np.testing.assert_allclose(surf.xyz, gs.means.numpy(), rtol=0, atol=1e-6 * UTM.max())

    fig, centre = view_figure([vox, surf])
    mesh_trace, point_trace = fig.data
    assert mesh_trace.type == "mesh3d" and point_trace.type == "scatter3d"
    # drawn relative to the centre of the bounds: small numbers, the same geometry
    assert np.abs(centre - UTM).max() < 10 and np.abs(np.asarray(mesh_trace.x)).max() < 10
    np.testing.assert_allclose(np.asarray(mesh_trace.x, np.float64) + centre[0], vox.xyz[:, 0], atol=1e-3)
    np.testing.assert_array_equal(np.asarray(mesh_trace.i), vox.faces[:, 0])
    # a voxel face is one colour: the face colour is its vertices' colour
    face0 = "#%02x%02x%02x" % tuple(vox.rgb[vox.faces[0, 0]])
    assert mesh_trace.facecolor[0] == face0
    assert point_trace.marker.color[3] == "#%02x%02x%02x" % tuple(surf.rgb[3])
    assert fig.layout.scene.aspectmode == "data"


def test_the_budget_keeps_a_random_subset_and_says_so(tmp_path):
    rng = np.random.default_rng(2)
    points = ViewLayer("cloud", rng.normal(size=(1000, 3)), rng.integers(0, 256, (1000, 3)))
    kept = within_budget(points, max_points=100)
    assert kept.count == 100 and kept.total == 1000
    rows = {tuple(r) for r in points.xyz}
    assert all(tuple(r) in rows for r in kept.xyz)  # points of the layer, with their own colours
    idx = [np.flatnonzero((points.xyz == r).all(1))[0] for r in kept.xyz]
    np.testing.assert_array_equal(kept.rgb, points.rgb[idx])
    assert within_budget(points, max_points=5000) is points

    mesh = voxel_mesh(np.unique(rng.integers(0, 10, (300, 3)), axis=0), colors=None)
    layer = ViewLayer("m", mesh.vertices, np.zeros_like(mesh.vertices, np.uint8), mesh.faces)
    small = within_budget(layer, max_faces=50)
    assert small.count == 50 and small.total == len(mesh.faces)
    assert small.faces.max() == len(small.xyz) - 1 == len(np.unique(small.faces)) - 1  # no unused vertex
    original = {tuple(sorted(map(tuple, mesh.vertices[f]))) for f in mesh.faces}
    assert all(tuple(sorted(map(tuple, small.xyz[f]))) in original for f in small.faces)  # whole faces
    fig, _ = view_figure([small])
    assert "50 faces of" in fig.data[0].name
    with pytest.raises(ValueError, match="budget must be positive"):
        within_budget(layer, max_faces=0)


TILE_COORDS = np.array([[0, 0, 0], [1, 0, 0], [3, 2, 1]], np.int32)
TILE_SEMANTIC = np.array([1, 2, 9], np.uint8)
TILE_ORIGIN = np.array([100.0, 200.0, 5.0])  # the tile's corner in its scene's frame; voxels of 2 m


def _tile(folder, tile_id="t", origin=TILE_ORIGIN, scene_id="s"):
    """A voxel tile written by the project's tile writer; returns its path."""
    meta = {"scene_id": scene_id, "biome": "test", "L": 8, "voxel_size_m": 2.0, "origin_m": list(map(float, origin)),
            "feature_layout": layout_to_json(FEATURE_LAYOUT), "counts": {}, "extra": {}}  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    return write_tile(folder / f"{tile_id}.parquet", VoxelTile(tile_id, TILE_COORDS, np.zeros((3, NUM_FEATURES),
                      np.float16), TILE_SEMANTIC, np.ones(3, np.float16), meta))  # fmt: skip


def test_voxel_tiles_and_imported_points(tmp_path):
    (tile,) = layers_of(_tile(tmp_path))
    assert tile.faces is not None and len(tile.faces) == 2 * (6 + 6 + 6 - 2)  # two cubes share a face
    # in the tile's frame, as its exports and generated scenes are; the frame says where it lies
    np.testing.assert_allclose(tile.xyz.min(0), [0, 0, 0])
    np.testing.assert_allclose(tile.xyz.max(0), [8, 6, 4])
    assert (tile.frame.scene, tile.frame.local, tile.frame.corner) == ("s", "tile t", (100.0, 200.0, 5.0))
    ((placed,), words) = in_one_frame([tile], "scene")
    np.testing.assert_allclose(placed.xyz.min(0), [100, 200, 5])
    np.testing.assert_allclose(placed.xyz.max(0), [108, 206, 9])
    assert words == "frame: scene s, local metres"
    assert {tuple(c) for c in tile.rgb} == {tuple(PALETTE[c]) for c in TILE_SEMANTIC}

    scene = tmp_path / "scene"
    scene.mkdir()
    xyz = np.random.default_rng(3).normal(size=(20, 3))
    np.savez(scene / "points.npz", xyz=xyz, rgb=np.zeros((20, 3), np.uint8), semantic=np.full(20, 12, np.uint8))
    (pts,) = layers_of(scene)
    np.testing.assert_array_equal(pts.xyz, xyz)
    assert (pts.rgb == PALETTE[12]).all()  # LiDAR without colour is drawn in its classes


def test_semantic_mesh_without_colours(tmp_path):
    mesh = Mesh([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]], [[0, 1, 2], [1, 3, 2]], face_semantic=[3, 11])
    write_mesh_ply(tmp_path / "mesh.ply", mesh)
    (layer,) = layers_of(tmp_path / "mesh.ply")
    face_colours = layer.rgb[layer.faces].reshape(2, 3, 3)
    assert (face_colours[0] == PALETTE[3]).all() and (face_colours[1] == PALETTE[11]).all()


def test_cli_writes_a_self_contained_view(tmp_path, capsys):
    _voxels(tmp_path)
    _gaussians(tmp_path, n=500)
    assert main(["view", str(tmp_path), "--max-points", "100"]) == 0
    out = tmp_path / "view.html"
    html = out.read_text()
    assert "gaussians (100 points of 500)" in html and "voxels (" in html
    assert len(html) > 2_000_000 and not re.search(r"<script[^>]+src=", html)  # plotly.js inside: opens offline
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".view.html")]  # no temporary left
    assert "written to" in capsys.readouterr().out
    assert main(["view", str(tmp_path / "gaussians.ply"), "--cdn"]) == 0
    small = (tmp_path / "gaussians.view.html").read_text()
    assert len(small) < 200_000 and re.search(r"<script[^>]+cdn\.plot\.ly", small)


def test_write_view_summary(tmp_path):
    _gaussians(tmp_path, n=30)
    summary = write_view([tmp_path / "gaussians.ply"], tmp_path / "v.html", max_points=10, plotlyjs="plotly.min.js")
    assert summary["layers"] == [{"name": "gaussians", "kind": "points", "shown": 10, "total": 30}]
    assert re.search(r'<script[^>]+src="plotly.min.js"', (tmp_path / "v.html").read_text())
    json.dumps(summary)


@pytest.mark.parametrize("name, content, message", [
    ("missing", None, "no such file or folder"),
    ("", None, "nothing to view"),
    ("notes.txt", b"x", "cannot view a .txt file"),
    ("bad.ply", b"ply\nformat ascii 1.0\nelement vertex 2\n", "not a readable PLY"),
    ("points.npz", b"PK\x03\x04junk", "not a readable .npz"),
    ("quads.ply", b"ply\nformat ascii 1.0\nelement vertex 4\nproperty float x\nproperty float y\nproperty float z\n"
     b"element face 1\nproperty list uchar int vertex_indices\nend_header\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n4 0 1 2 3\n",
     "Mesh.faces must be [F, 3]"),
])  # fmt: skip
def test_bad_paths_are_refused_by_name(tmp_path, capsys, name, content, message):
    empty = tmp_path / "empty"
    empty.mkdir()
    path = empty / name if name else empty
    if content is not None:
        path.write_bytes(content)
    assert main(["view", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and str(path) in err
    assert not list(empty.glob("*.html"))


# --------------------------------------------------------------------------- frames and names

def _tile_mesh_ply(folder, name="voxels_gt.ply", coords=TILE_COORDS):
    """Cubes in tile-local metres, as exports and generated scenes write them; returns their vertices there."""
    folder.mkdir(parents=True, exist_ok=True)
    mesh = voxel_mesh(coords, 2.0, colors=PALETTE[np.resize(TILE_SEMANTIC, len(coords))])
    write_mesh_ply(folder / name, mesh)
    return mesh.vertices


def _export(folder, tile_id="t", scene_id="s"):
    local = _tile_mesh_ply(folder)
    (folder / "summary.json").write_text(json.dumps({"tile_id": tile_id, "scene_id": scene_id, "L": 8}))
    return local


def _generated(folder, source):
    local = _tile_mesh_ply(folder, "voxels.ply")
    write_structure(folder / "structure.parquet", TILE_COORDS, {"scene_id": folder.name, "L": 8, "voxel_size_m": 2.0,
                                                                "source": source})  # fmt: skip
    return local


def _scene_points(folder, xyz, scene_id="s"):
    folder.mkdir(parents=True)
    (folder / "metadata.json").write_text(json.dumps({"scene_id": scene_id}))
    np.savez(folder / "points.npz", xyz=xyz, rgb=np.full((len(xyz), 3), 9, np.uint8), semantic=np.ones(len(xyz)))


def _page_strings(html, key):
    """The JSON strings under ``key`` in the page's figure (plotly escapes "/" and "<" in them)."""
    return [json.loads(m) for m in re.findall(rf'"{key}":("(?:[^"\\]|\\.)*")', html)]


def _drawn(paths, frame="auto"):
    """{layer name: layer} as write_view draws them, and the frame's words."""
    layers, words = in_one_frame([layer for p in paths for layer in layers_of(p)], frame)
    return {layer.name: layer for layer in layers}, words


def test_a_tile_and_its_export_are_drawn_in_the_tiles_frame(tmp_path):
    tile_path = _tile(tmp_path / "voxels")
    local = _export(tmp_path / "export")
    summary = write_view([tmp_path / "export", tile_path], tmp_path / "v.html", plotlyjs="cdn")
    # the export's ground truth and the tile are the same cubes: one place, the tile's frame
    assert summary["frame"] == "frame: tile t, local metres (corner at (100.00, 200.00, 5.00) in scene s)"
    np.testing.assert_allclose(summary["centre"], [4, 3, 2])  # the middle of the cubes, tile-local
    (title, *_) = _page_strings((tmp_path / "v.html").read_text(), "text")
    assert f"<sup>{summary['frame']}; coordinates in metres relative to (4.00, 3.00, 2.00)</sup>" in title
    layers, _ = _drawn([tmp_path / "export", tile_path])
    np.testing.assert_allclose(layers["voxels_gt"].xyz, local)
    np.testing.assert_allclose(layers["t voxels"].xyz, local)
    # in the scene's frame both move to the tile's corner
    layers, words = _drawn([tmp_path / "export", tile_path], "scene")
    assert words == "frame: scene s, local metres"
    np.testing.assert_allclose(layers["voxels_gt"].xyz, local + TILE_ORIGIN)
    np.testing.assert_allclose(layers["t voxels"].xyz, local + TILE_ORIGIN)


def test_layers_of_a_scene_and_its_tiles_are_drawn_in_the_scenes_frame(tmp_path):
    tile_path = _tile(tmp_path / "voxels")
    local = _export(tmp_path / "export")
    points = TILE_ORIGIN + np.array([[1.0, 1.0, 1.0], [7.0, 5.0, 3.0]])  # inside the tile, in scene metres
    _scene_points(tmp_path / "scenes" / "s", points)
    gen = _generated(tmp_path / "gen_000_t", {"layout_tile": "t", "tile_path": str(tile_path), "condition": "layout"})
    paths = [tmp_path / "export", tile_path, tmp_path / "scenes" / "s", tmp_path / "gen_000_t"]
    layers, words = _drawn(paths)
    assert words == "frame: scene s, local metres" and not any(layer.note for layer in layers.values())
    np.testing.assert_allclose(layers["voxels_gt"].xyz, local + TILE_ORIGIN)
    np.testing.assert_allclose(layers["t voxels"].xyz, local + TILE_ORIGIN)
    np.testing.assert_allclose(layers["s points"].xyz, points)
    np.testing.assert_allclose(layers["voxels"].xyz, gen + TILE_ORIGIN)
    # the generated scene is placed by the tile its run recorded, without that tile in the view
    layers, _ = _drawn([tmp_path / "gen_000_t", tmp_path / "scenes" / "s"])
    np.testing.assert_allclose(layers["voxels"].xyz, gen + TILE_ORIGIN)
    # or all of them in the tile's frame: the scene's points move to it
    layers, words = _drawn(paths, "tile")
    assert words.startswith("frame: tile t, local metres")
    np.testing.assert_allclose(layers["s points"].xyz, points - TILE_ORIGIN)
    np.testing.assert_allclose(layers["voxels"].xyz, gen)
    with pytest.raises(ValueError, match="frame 'tile' needs the layers to belong to one tile"):
        _drawn([tile_path, _tile(tmp_path / "voxels", "u", TILE_ORIGIN + [16, 0, 0])], "tile")
    with pytest.raises(ValueError, match="frame must be one of auto, tile, scene"):
        write_view([tile_path], tmp_path / "v.html", frame="utm")


def test_a_large_scene_is_placed_by_its_tiles(tmp_path):
    paths = [_tile(tmp_path / "voxels"), _tile(tmp_path / "voxels", "u", TILE_ORIGIN + [16, 0, -4])]
    local = _tile_mesh_ply(tmp_path / "large_s", "voxels.ply")
    (tmp_path / "large_s" / "summary.json").write_text(json.dumps({"scene_id": "large_s", "layout_scene": "s",
                                                                   "layout_tiles": ["t", "u"]}))  # fmt: skip
    layers, words = _drawn([*paths, tmp_path / "large_s"])
    assert words == "frame: scene s, local metres"
    np.testing.assert_allclose(layers["voxels"].xyz, local + TILE_ORIGIN + [0, 0, -4])  # the tiles' lowest corner
    layers, words = _drawn([tmp_path / "large_s"])
    assert words == "frame: map of s, local metres" and not layers["voxels"].note


def test_layers_that_cannot_be_placed_are_drawn_as_stored_and_say_so(tmp_path):
    tile_path = _tile(tmp_path / "voxels")
    elsewhere = _export(tmp_path / "export_u", tile_id="u")  # tile u is not in the view: where it lies is unknown
    _tile_mesh_ply(tmp_path / "loose", "mesh.ply")  # no file beside it says its frame
    _generated(tmp_path / "gen_001_uncond", {"layout_tile": "t", "condition": "none"})  # a sample tied to no place
    paths = [tile_path, tmp_path / "export_u", tmp_path / "loose", tmp_path / "gen_001_uncond"]
    summary = write_view(paths, tmp_path / "v.html", plotlyjs="cdn")
    assert summary["frame"] == "frame: scene s, local metres; layers marked 'drawn as stored' are not in it"
    notes = {layer["name"]: layer.get("note") for layer in summary["layers"]}
    assert notes == {"t voxels": None, "voxels_gt": "drawn as stored: where tile u lies is unknown",
                     "mesh": "drawn as stored: its frame is unknown", "voxels": "drawn as stored: its frame is unknown"}
    legend = _page_strings((tmp_path / "v.html").read_text(), "name")
    assert "voxels_gt (32 faces) [drawn as stored: where tile u lies is unknown]" in legend
    layers, _ = _drawn(paths)
    np.testing.assert_allclose(layers["voxels_gt"].xyz, elsewhere)
    # a view of files that say nothing of their frame draws them as stored, and says so once
    assert write_view([tmp_path / "loose"], tmp_path / "w.html", plotlyjs="cdn")["frame"].startswith("frame: as stored")


def test_equal_layer_names_are_told_apart_by_their_folders(tmp_path):
    for folder in ("a", "b", "x/a"):
        (tmp_path / folder).mkdir(parents=True)
        _gaussians(tmp_path / folder, n=5)
    _voxels(tmp_path / "b")
    paths = [tmp_path / "a" / "gaussians.ply", tmp_path / "b", tmp_path / "x" / "a" / "gaussians.ply"]
    summary = write_view(paths, tmp_path / "v.html", plotlyjs="cdn")
    names = [layer["name"] for layer in summary["layers"]]
    assert names == [f"{tmp_path.name}/a/gaussians", "b/gaussians", "voxels", "x/a/gaussians"]  # voxels: unique
    html = (tmp_path / "v.html").read_text()
    assert _page_strings(html, "name") == [f"{tmp_path.name}/a/gaussians (5 points)", "b/gaussians (5 points)",
                                           "voxels (388 faces)", "x/a/gaussians (5 points)"]  # fmt: skip
    assert _page_strings(html, "text")[0].startswith(f"{tmp_path.name}/a/gaussians.ply, b, x/a/gaussians.ply<br>")
    for site in ("one", "two"):
        _scene_points(tmp_path / site / "autzen", np.zeros((2, 3)), "autzen")
    summary = write_view([tmp_path / "one" / "autzen", tmp_path / "two" / "autzen"], tmp_path / "p.html",
                         plotlyjs="cdn")
    assert [layer["name"] for layer in summary["layers"]] == ["one/autzen points", "two/autzen points"]


def test_cli_frame_flag_and_printed_frame(tmp_path, capsys):
    tile_path = _tile(tmp_path / "voxels")
    _export(tmp_path / "export")
    args = ["view", str(tmp_path / "export"), str(tile_path), "--out", str(tmp_path / "v.html"), "--cdn"]
    assert main(args + ["--frame", "scene"]) == 0
    assert "frame: scene s, local metres" in capsys.readouterr().out
    assert main(args) == 0
    assert "frame: tile t, local metres" in capsys.readouterr().out
    _tile(tmp_path / "other", tile_id="u")
    two = ["view", str(tmp_path / "export"), str(tile_path), str(tmp_path / "other" / "u.parquet"), "--cdn",
           "--out", str(tmp_path / "v2.html"), "--frame", "tile"]  # fmt: skip
    assert main(two) == 2  # two tiles: there is no one tile frame
    assert "earthcrafter view:" in capsys.readouterr().err


def test_an_export_that_records_its_corner_is_placed_without_its_tile(tmp_path):
    local = _export(tmp_path / "export")
    summary = json.loads((tmp_path / "export" / "summary.json").read_text())
    points = TILE_ORIGIN + np.array([[1.0, 1.0, 1.0]])
    _scene_points(tmp_path / "scenes" / "s", points)
    layers, _ = _drawn([tmp_path / "export", tmp_path / "scenes" / "s"])
    assert layers["voxels_gt"].note  # an export from before origin_m was recorded: drawn as stored
    (tmp_path / "export" / "summary.json").write_text(json.dumps({**summary, "origin_m": list(TILE_ORIGIN)}))
    layers, words = _drawn([tmp_path / "export", tmp_path / "scenes" / "s"])
    assert words == "frame: scene s, local metres" and not layers["voxels_gt"].note
    np.testing.assert_allclose(layers["voxels_gt"].xyz, local + TILE_ORIGIN)
