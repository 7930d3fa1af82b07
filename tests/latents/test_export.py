"""Voxel meshes, and `earthcrafter export`: a tile's cached latents decoded to files people open."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from latent_synth import STRUCT

from earthcrafter.commands import main
from earthcrafter.geometry.voxel_mesh import voxel_mesh
from earthcrafter.io.scene import read_mesh_ply
from earthcrafter.io.tiles import read_tile
from earthcrafter.latents.cache import cache_latents
from earthcrafter.latents.export import export_tile
from earthcrafter.models.struct_vae import StructVAE, StructVAEConfig
from earthcrafter.render import load_ply
from earthcrafter.training.structvae import load_structvae, save_structvae


def _signed_volume(mesh) -> float:
    v = mesh.vertices[mesh.faces]
    return float(np.einsum("ij,ij->i", v[:, 0], np.cross(v[:, 1], v[:, 2])).sum() / 6.0)


def test_voxel_mesh_bounds_the_cubes():
    one = voxel_mesh(np.array([[0, 0, 0]]))
    assert len(one.faces) == 12 and _signed_volume(one) == pytest.approx(1.0)
    two = voxel_mesh(np.array([[3, 4, 5], [4, 4, 5]]), voxel_size=0.5, origin=(10, 0, 0))
    assert len(two.faces) == 20  # the shared face is not drawn
    assert _signed_volume(two) == pytest.approx(2 * 0.125)
    np.testing.assert_allclose(two.vertices.min(0), [11.5, 2.0, 2.5])
    rng = np.random.default_rng(0)
    blob = np.unique(rng.integers(0, 6, (120, 3)), axis=0)  # cavities, edge-only contacts, everything
    colors = rng.integers(0, 255, (len(blob), 3), dtype=np.uint8)
    mesh = voxel_mesh(blob, voxel_size=2.0, colors=colors)
    assert _signed_volume(mesh) == pytest.approx(len(blob) * 8.0), "outward faces bounding exactly the cubes"
    assert set(map(tuple, mesh.vertex_colors.tolist())) <= set(map(tuple, colors.tolist()))
    with pytest.raises(ValueError, match="coords must lie in"):
        voxel_mesh(np.array([[-1, 0, 0]]))


def test_export_decodes_the_cached_latents(tiles):
    table, _, _, _ = cache_latents(tiles["manifest"], tiles["cfg"])
    row = table[table["split"] == "val"].iloc[0]
    out = tiles["root"] / "export"
    summary = export_tile(row, out, frames=2, size=32)

    tile = read_tile(row["tile_path"])
    gt = read_mesh_ply(out / "voxels_gt.ply")
    assert _signed_volume(gt) == pytest.approx(len(tile) * tile.voxel_size**3)
    model = load_structvae(tiles["cfg"]["structvae_path"])
    from earthcrafter.sparse import SparseTensor

    c = torch.from_numpy(tile.coords)
    with torch.no_grad():
        ref = model.decode(model.encode(SparseTensor.from_list([torch.ones(len(c), 1)], [c]))).coords[:, 1:].numpy()
    assert summary["decoded_voxels"] == len(ref)
    decoded = read_mesh_ply(out / "voxels_decoded.ply")
    assert _signed_volume(decoded) == pytest.approx(len(ref) * tile.voxel_size**3)
    inter = len({tuple(r) for r in ref.tolist()} & {tuple(r) for r in tile.coords.tolist()})
    assert summary["iou"] == pytest.approx(inter / (len(ref) + len(tile) - inter))
    assert len(load_ply(out / "gaussians.ply")) == len(tile) == summary["gaussians"]
    assert (out / "orbit" / "orbit.gif").is_file() and len(list((out / "orbit").glob("frame_*.png"))) == 2
    written = json.loads((out / "summary.json").read_text())
    assert written["tile_id"] == row["tile_id"] and len(written["origin_m"]) == 3  # view places the files by it
    from PIL import Image

    assert Image.open(out / "preview.png").size == (3 * 32, 32)  # GT voxels | decoded voxels | surfels

    # the latents pair with their own decoder: new weights at the same path are refused
    torch.manual_seed(5)
    save_structvae(StructVAE(StructVAEConfig(**STRUCT)), tiles["cfg"]["structvae_path"])
    with pytest.raises(ValueError, match="changed since the struct latents of t004 were cached"):
        export_tile(row, tiles["root"] / "again", frames=0)
    assert not (tiles["root"] / "again" / "voxels_decoded.ply").exists()


def test_export_command_names_what_is_missing(tmp_path, capsys):
    assert main(["export", "t000", "--root", str(tmp_path)]) == 2
    assert "run `kedro run --pipelines=cache_latents` first" in capsys.readouterr().err


def test_export_command_writes_a_reconstruction(tiles, capsys):
    table, _, _, _ = cache_latents(tiles["manifest"], tiles["cfg"])
    manifest = tiles["root"] / "data" / "05_model_input" / "latents_manifest.parquet"
    manifest.parent.mkdir(parents=True)
    table.to_parquet(manifest)
    assert main(["export", "t404", "--root", str(tiles["root"])]) == 2
    assert "tile 't404' is not in" in capsys.readouterr().err
    assert main(["export", "t001", "--root", str(tiles["root"]), "--frames", "0"]) == 0
    out = tiles["root"] / "data" / "07_model_output" / "reconstructions" / "t001"
    assert {p.name for p in out.iterdir()} == {"voxels_gt.ply", "voxels_decoded.ply", "gaussians.ply", "preview.png",
                                              "summary.json"}
