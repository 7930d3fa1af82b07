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
from earthcrafter.io.tiles import VoxelTile, write_tile
from earthcrafter.render import Gaussians2D, save_ply
from earthcrafter.render.html_view import ViewLayer, layers_of, view_figure, within_budget, write_view
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


def test_voxel_tiles_and_imported_points(tmp_path):
    coords = np.array([[0, 0, 0], [1, 0, 0], [3, 2, 1]], np.int32)
    meta = {"scene_id": "s", "biome": "test", "L": 8, "voxel_size_m": 2.0, "origin_m": [100.0, 200.0, 5.0],
            "feature_layout": layout_to_json(FEATURE_LAYOUT), "counts": {}, "extra": {}}  # fmt: skip
    semantic = np.array([1, 2, 9], np.uint8)
    write_tile(tmp_path / "t.parquet", VoxelTile("t", coords, np.zeros((3, NUM_FEATURES), np.float16), semantic,
                                                 np.ones(3, np.float16), meta))  # fmt: skip
    (tile,) = layers_of(tmp_path / "t.parquet")
    assert tile.faces is not None and len(tile.faces) == 2 * (6 + 6 + 6 - 2)  # two cubes share a face
    np.testing.assert_allclose(tile.xyz.min(0), [100, 200, 5])
    np.testing.assert_allclose(tile.xyz.max(0), [108, 206, 9])
    assert {tuple(c) for c in tile.rgb} == {tuple(PALETTE[c]) for c in semantic}

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
