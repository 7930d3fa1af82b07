"""Large scenes: maps from tiles and images, the per-column layout against the flows' own, the
window grid, and generation window by window with randomly initialised models of the real
architectures (nothing a window decided changes later; files you can open)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from earthcrafter.io.tiles import VoxelTile
from earthcrafter.latents.large_scene import (
    EMPTY,
    Generators,
    cell_layout,
    class_raster_from_image,
    class_raster_from_tiles,
    generate_large_scene,
    raster_image,
    scene_voxels_from_tiles,
    seam_scores,
    window_starts,
    write_large_scene,
)
from earthcrafter.semantics import NUM_CLASSES
from earthcrafter.training.conditions import semantic_layout


def _tile(tile_id: str, coords, semantic, origin, L: int = 16, vs: float = 2.0) -> VoxelTile:
    coords = np.asarray(coords, np.int32).reshape(-1, 3)
    meta = {"scene_id": "s", "L": L, "voxel_size_m": vs, "origin_m": list(origin)}
    return VoxelTile(tile_id, coords, np.zeros((len(coords), 1)), np.asarray(semantic, np.uint8), np.ones(len(coords)), meta)


def _random_tile(rng, tile_id: str, origin, L: int = 16) -> VoxelTile:
    xy = np.stack(np.meshgrid(np.arange(L), np.arange(L), indexing="ij"), -1).reshape(-1, 2)
    keep = rng.random(len(xy)) < 0.9  # some columns empty
    ground = np.c_[xy[keep], rng.integers(1, 3, keep.sum())]
    extra = np.c_[xy[keep][:40], ground[:40, 2] + 1 + rng.integers(0, 4, 40)]  # stacked voxels: the top wins
    coords = np.unique(np.concatenate([ground, extra]), axis=0)
    return _tile(tile_id, coords, rng.integers(0, NUM_CLASSES, len(coords)), origin, L)


def test_cell_layout_of_one_tile_is_the_flows_semantic_layout():
    """The map pooled per latent column equals semantic_layout, the condition the flows trained on."""
    tile = _random_tile(np.random.default_rng(0), "t", (0.0, 0.0, 0.0))
    raster, vs, corner = class_raster_from_tiles([tile])
    assert raster.shape == (16, 16) and vs == 2.0 and corner.tolist() == [0.0, 0.0]
    np.testing.assert_allclose(cell_layout(raster, 4), semantic_layout(tile.coords, tile.semantic, 16, 4), atol=1e-7)
    assert (raster == EMPTY).any()
    # sides not multiples of the cell: padded with empty columns
    assert cell_layout(raster[:14, :10], 4).shape == (4, 3, NUM_CLASSES)
    np.testing.assert_allclose(cell_layout(raster[:14, :10], 4)[:3, :2], cell_layout(raster, 4)[:3, :2])


def test_scene_map_from_overlapping_tiles():
    """Two tiles 6 voxels apart: each column's class is its highest voxel's in either tile, z from
    the lower tile's bottom; tiles off the voxel grid or at another voxel size are refused."""
    a = _tile("a", [[0, 0, 1], [5, 0, 1], [6, 1, 2], [7, 1, 0]], [3, 3, 3, 9], (10.0, 20.0, 100.0), L=8)
    b = _tile("b", [[0, 1, 0], [1, 1, 3], [7, 7, 0]], [11, 1, 12], (22.0, 20.0, 101.0), L=8)  # +6 voxels in x, +0.5 in z
    raster, vs, corner = class_raster_from_tiles([a, b])
    assert raster.shape == (14, 8) and corner.tolist() == [10.0, 20.0]
    # column (6, 1): a has z 2 (top at 100 + 5 m), b's (0, 1) has z 0 (101 + 1 m): a's class
    assert raster[6, 1] == 3 and raster[7, 1] == 1 and raster[13, 7] == 12 and raster[0, 0] == 3
    assert (raster != EMPTY).sum() == 5  # (0, 0), (5, 0), (6, 1), (7, 1), (13, 7)
    voxels = scene_voxels_from_tiles([a, b])
    assert {tuple(v) for v in voxels.tolist()} >= {(6, 1, 2, 3), (13, 7, 0, 12), (7, 1, 3, 1)}
    with pytest.raises(ValueError, match="not on the voxel grid"):
        class_raster_from_tiles([a, _tile("c", [[0, 0, 0]], [1], (11.0, 20.0, 100.0), L=8)])
    with pytest.raises(ValueError, match="voxel size"):
        class_raster_from_tiles([a, _tile("d", [[0, 0, 0]], [1], (10.0, 20.0, 100.0), L=8, vs=1.0)])


def test_layout_images_round_trip_and_bad_pixels_are_named(tmp_path):
    rng = np.random.default_rng(1)
    raster = rng.integers(0, NUM_CLASSES, (12, 7)).astype(np.uint8)
    raster[3, 4] = EMPTY
    Image.fromarray(raster_image(raster)).save(tmp_path / "rgb.png")
    rgb_back = class_raster_from_image(tmp_path / "rgb.png")
    assert np.array_equal(rgb_back, raster)
    # a class-id image: north up, so row 0 is the largest y
    Image.fromarray(np.ascontiguousarray(raster.T[::-1])).save(tmp_path / "ids.png")
    assert np.array_equal(class_raster_from_image(tmp_path / "ids.png"), raster)
    bad = np.ascontiguousarray(raster.T[::-1]).copy()
    bad[2, 5] = 77
    Image.fromarray(bad).save(tmp_path / "bad_ids.png")
    with pytest.raises(ValueError, match=r"bad_ids.png: pixel \(row 2, column 5\) holds 77"):
        class_raster_from_image(tmp_path / "bad_ids.png")
    img = raster_image(raster)
    img[1, 2] = (1, 2, 3)
    Image.fromarray(img).save(tmp_path / "bad_rgb.png")
    with pytest.raises(ValueError, match=r"pixel \(row 1, column 2\) has colour \(1, 2, 3\)"):
        class_raster_from_image(tmp_path / "bad_rgb.png")
    (tmp_path / "junk.png").write_text("not an image")
    with pytest.raises(ValueError, match="junk.png: cannot be read"):
        class_raster_from_image(tmp_path / "junk.png")


def test_window_starts():
    assert window_starts(8, 8, 6) == [0]
    assert window_starts(20, 8, 6) == [0, 6, 12]
    assert window_starts(17, 8, 6) == [0, 6, 9]  # the last window ends at the map's edge
    for n in (8, 9, 15, 23, 40):
        starts = window_starts(n, 8, 6)
        covered = np.zeros(n, bool)
        for s in starts:
            covered[s : s + 8] = True
        assert covered.all() and starts[-1] + 8 == n
    with pytest.raises(ValueError, match="a window needs 8"):
        window_starts(7, 8, 6)
    with pytest.raises(ValueError, match="stride_cells"):
        window_starts(20, 8, 9)


def _generators() -> Generators:
    """Randomly initialised models of the real architectures (L = 32, grid 4), perturbed so every
    flow has a non-zero velocity, and identity latent statistics."""
    from latent_synth import STRUCT, TEX

    from earthcrafter.models.struct_fm import StructFM, StructFMConfig
    from earthcrafter.models.struct_vae import StructVAE, StructVAEConfig
    from earthcrafter.models.tex_fm import TexFMConfig, build_texfm
    from earthcrafter.models.tex_vae import TexVAE, TexVAEConfig

    torch.manual_seed(0)
    structfm = StructFM(StructFMConfig(grid=4, width=32, depth=1, num_heads=2, latent_channels=8))
    texfm = build_texfm(TexFMConfig(width=32, depth=1, num_heads=2, window=4, layout_grid=4, layout_stride=8,
                                    latent_channels=8))  # fmt: skip
    structvae = StructVAE(StructVAEConfig(**{**STRUCT, "L": 32, "latent_channels": 8}))
    texvae = TexVAE(TexVAEConfig(**TEX, latent_channels=8), in_channels=66)
    models = [m.eval() for m in (structfm, texfm, structvae, texvae)]
    with torch.no_grad():
        for m in models[:2]:
            for p in m.parameters():
                p.add_(0.1 * torch.randn_like(p))
    ident = lambda c: {"mean": [0.0] * c, "std": [1.0] * c}  # noqa: E731
    return Generators(*models, {"struct": ident(8), "tex": ident(8)})


@pytest.mark.timeout(300)
def test_large_scene_grows_window_by_window_without_changing_what_was_decided(tmp_path):
    """A 7 x 5-cell map (3 x 2 windows of 4 cells at stride 3): the scene covers the map and
    nothing else, one surfel set per voxel; its part inside the first window is exactly the scene
    of the first window alone (later windows never change decided columns); files you can open."""
    models = _generators()
    rng = np.random.default_rng(0)
    raster = rng.integers(0, NUM_CLASSES, (56, 40)).astype(np.uint8)
    layout = cell_layout(raster, 8)
    kw = dict(stride_cells=3, steps=3, cfg_strength=1.0, seed=4, resample=1, progress=False)
    scene = generate_large_scene(models, layout, 2.0, **kw)
    assert [(w["x_cells"], w["y_cells"]) for w in scene.windows] == [(0, 0), (3, 0), (0, 1), (3, 1)]
    v = scene.voxels
    assert len(v) > 0 and v.min() >= 0 and v[:, 0].max() < 56 and v[:, 1].max() < 40 and v[:, 2].max() < 32
    assert len(np.unique(v, axis=0)) == len(v)
    assert scene.windows[1]["pinned_cells"] > 0 and scene.windows[1]["pinned_voxels"] > 0
    assert len(scene.gaussians) % len(v) == 0 and scene.tex_latents.shape == (len(v), 8)
    k = len(scene.gaussians) // len(v)
    centres = np.repeat((v + 0.5) * 2.0, k, axis=0)
    assert np.abs(scene.gaussians.means.numpy() - centres)[:, :2].max() < 3 * 2.0, "surfels sit at their voxels"

    first = generate_large_scene(models, layout[:4, :4], 2.0, **kw)
    inside = (v[:, 0] < 32) & (v[:, 1] < 32)
    order = lambda a: np.lexsort(a.T[::-1])  # noqa: E731
    a, b = order(v[inside]), order(first.voxels)
    assert np.array_equal(v[inside][a], first.voxels[b])
    np.testing.assert_allclose(scene.tex_latents[inside][a], first.tex_latents[b], atol=1e-5)
    in_cells = (scene.cells[:, 0] < 4) & (scene.cells[:, 1] < 4)
    assert np.array_equal(scene.cells[in_cells], first.cells)
    np.testing.assert_allclose(scene.struct_latents[in_cells], first.struct_latents, atol=1e-6)

    summary = write_large_scene(tmp_path / "large", scene, raster, {"scene_id": "large_test"}, frames=2, size=48,
                                reference=np.c_[v[:50], np.zeros(50, np.int64)])  # fmt: skip
    for name in ("layout.png", "voxels.ply", "structure.parquet", "gaussians.ply", "preview.png", "top.png", "summary.json"):
        assert (tmp_path / "large" / name).is_file(), name
    assert len(list((tmp_path / "large" / "orbit").glob("*.png"))) == 2
    assert Image.open(tmp_path / "large" / "preview.png").size == (4 * 48, 48)
    assert Image.open(tmp_path / "large" / "top.png").size == (3 * 48 + 2 * 4, round(48 * 40 / 56))  # the map's aspect
    written = json.loads((tmp_path / "large" / "summary.json").read_text())
    assert written["voxels"] == summary["voxels"] == len(v) and written["seams"]["seam_pairs"] > 0
    # windows at x 0, 3 and y 0, 1 (4 cells each): the first to reach a column decides it
    assert scene.owner.tolist() == [[0, 0, 0, 0, 2]] * 4 + [[1, 1, 1, 1, 3]] * 3
    assert np.array_equal(class_raster_from_image(tmp_path / "large" / "layout.png"), raster)


def test_seam_scores_on_a_hand_built_scene():
    """Two windows side by side (cell columns x < 2 and x >= 2 of a 4 x 2-cell map, 2-voxel cells):
    the right one's ground sits 3 voxels higher and is red, so across the seam the ground and top
    step by 3 voxels and the colour by 1/3; across the other cell boundaries nothing steps."""
    from earthcrafter.latents.large_scene import LargeScene
    from earthcrafter.render import Gaussians2D
    from earthcrafter.render.sh import C0

    xy = np.stack(np.meshgrid(np.arange(8), np.arange(4), indexing="ij"), -1).reshape(-1, 2)
    z = np.where(xy[:, 0] >= 4, 5, 2)
    voxels = np.c_[xy, z]
    rgb = np.where((xy[:, 0] >= 4)[:, None], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0])
    n = len(voxels)
    g = Gaussians2D(torch.zeros(n, 3), torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1), torch.ones(n, 2), torch.ones(n) * 0.5,
                    torch.from_numpy((rgb - 0.5) / C0).float()[:, None])  # fmt: skip
    owner = np.array([[0, 0], [0, 0], [1, 1], [1, 1]])
    scene = LargeScene(voxels, np.zeros((n, 8)), np.zeros((0, 3)), np.zeros((0, 8)), g, 0.5, owner, cell=2)
    s = seam_scores(scene)
    assert s["seam_pairs"] == 4 and s["interior_pairs"] == 4 * 2 + 8 * 1  # x: boundaries 1|2, 5|6; y: 1|2
    assert s["seam_ground_step_m"] == s["seam_top_step_m"] == 1.5 and abs(s["seam_colour_step"] - 1 / 3) < 1e-6
    assert s["interior_ground_step_m"] == s["interior_top_step_m"] == s["interior_colour_step"] == 0
    one = seam_scores(LargeScene(voxels, np.zeros((n, 8)), np.zeros((0, 3)), np.zeros((0, 8)), g, 0.5, owner * 0, cell=2))
    assert one["seam_pairs"] == 0 and one["seam_ground_step_m"] is None


def test_top_view_is_north_up_like_the_layout_image():
    """Surfels in the map's north-west corner land top-left in the top view, the south-east ones
    bottom-right — as in layout.png (row 0 = north)."""
    from earthcrafter.latents.large_scene import top_view
    from earthcrafter.render import Gaussians2D, render_orbit
    from earthcrafter.render.sh import C0

    vs, X, Y = 1.0, 60, 40
    means = torch.tensor([[8.0, 34.0, 0.0], [52.0, 6.0, 0.0]])  # north-west: red, south-east: blue
    colours = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    g = Gaussians2D(means, torch.tensor([[1.0, 0, 0, 0]] * 2), torch.full((2, 2), 3.0), torch.full((2,), 0.99),
                    ((colours - 0.5) / C0)[:, None])  # fmt: skip
    view = top_view((X, Y), vs, 0.0, 96)
    img = render_orbit(g, n_frames=1, **view)[0].astype(int)
    assert img.shape == (64, 96, 3)
    red = np.argwhere((img[..., 0] > 150) & (img[..., 2] < 100)).mean(0)
    blue = np.argwhere((img[..., 2] > 150) & (img[..., 0] < 100)).mean(0)
    assert red[0] < 32 and red[1] < 48 and blue[0] > 32 and blue[1] > 48, (red, blue)
    # where the map says: north-west at (x 8, y 34) of 60 x 40 m -> column 8/60, row (40 - 34)/40 of the image
    assert abs(red[1] / 96 - 8 / 60) < 0.05 and abs(red[0] / 64 - 6 / 40) < 0.05


def test_large_scenes_need_a_semantic_map_condition():
    from earthcrafter.latents.generate import GenerationConfig

    with pytest.raises(ValueError, match="condition must be layout or none, not rgbd"):
        GenerationConfig(large_scenes=["s"], condition="rgbd")
    assert GenerationConfig(large_scenes=[], condition="rgbd").condition == "rgbd"


def test_load_generators_refuses_a_texfm_whose_layout_stride_misses_l(monkeypatch):
    """TexFM's condition tokens must tile the StructVAE's L (layout_grid x layout_stride = L)."""
    from earthcrafter.latents import generate
    from earthcrafter.models.tex_fm import TexFMConfig, build_texfm

    models = _generators()  # L = 32, grid 4, TexFM layout 4 x 8
    monkeypatch.setattr(generate, "load_structfm", lambda path: models.structfm)
    monkeypatch.setattr(generate, "load_structvae", lambda path: models.structvae)
    monkeypatch.setattr(generate.TexVAE, "load", lambda path: models.texvae)
    cfg = generate.GenerationConfig(texfm_dir="runs/texfm")
    monkeypatch.setattr(generate, "load_texfm", lambda path: models.texfm)
    assert generate.load_generators(cfg, models.stats).texfm is models.texfm
    bad = build_texfm(TexFMConfig(width=32, depth=1, num_heads=2, window=4, layout_grid=4, layout_stride=4,
                                  latent_channels=8))  # fmt: skip
    monkeypatch.setattr(generate, "load_texfm", lambda path: bad)
    with pytest.raises(ValueError, match=r"runs/texfm: TexFM layout_grid 4 x layout_stride 4 = 16 voxels, .* L = 32"):
        generate.load_generators(cfg, models.stats)


def _hand_scene():
    """A 2-window scene of 8 x 4 ground voxels (the seam test's), and its 8 x 4 class map."""
    from earthcrafter.latents.large_scene import LargeScene
    from earthcrafter.render import Gaussians2D

    xy = np.stack(np.meshgrid(np.arange(8), np.arange(4), indexing="ij"), -1).reshape(-1, 2)
    voxels, n = np.c_[xy, np.full(len(xy), 2)], len(xy)
    means = torch.tensor((voxels + 0.5) * 0.5, dtype=torch.float32)
    g = Gaussians2D(means, torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1), torch.full((n, 2), 0.25), torch.full((n,), 0.9),
                    torch.zeros(n, 1, 3))  # fmt: skip
    scene = LargeScene(voxels, np.zeros((n, 8)), np.zeros((0, 3)), np.zeros((0, 8)), g, 0.5,
                       np.array([[0, 0], [0, 0], [1, 1], [1, 1]]), cell=2)  # fmt: skip
    return scene, np.ones((8, 4), np.uint8)


def test_a_crash_while_writing_a_large_scene_leaves_the_previous_one_whole(tmp_path, monkeypatch):
    """The scene folder is replaced at once: a re-run that dies midway leaves the previous scene's
    files together (not its structure beside another run's surfels), and no temporary behind."""
    from earthcrafter.latents import large_scene

    scene, raster = _hand_scene()
    out = tmp_path / "large_a"
    first = write_large_scene(out, scene, raster, {"scene_id": "large_a", "seed": 1}, frames=0, size=32)
    assert first["path"] == str(out) and json.loads((out / "summary.json").read_text())["seed"] == 1
    assert (out / "view.html").is_file() and (tmp_path / "plotly.min.js").is_file()  # shared beside the scenes
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    def dies(*args, **kwargs):
        raise RuntimeError("killed while rendering")

    monkeypatch.setattr(large_scene, "render_orbit", dies)  # after voxels.ply and structure.parquet are written
    with pytest.raises(RuntimeError, match="killed"):
        write_large_scene(out, scene, raster, {"scene_id": "large_a", "seed": 2}, frames=0, size=32)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["large_a", "plotly.min.js"]


def test_load_generators_refuses_flows_trained_on_other_latents(monkeypatch, tmp_path, caplog):
    """A flow samples normalised latents: de-normalised with other statistics, or decoded by
    another VAE than the one whose latents it learned, it gives plausible nonsense — refused."""
    from earthcrafter.flow.latent_stats import latent_inputs
    from earthcrafter.io.latents import file_sha256
    from earthcrafter.latents import generate

    models = _generators()
    for name in ("structfm", "structvae", "texfm"):
        monkeypatch.setattr(generate, f"load_{name}", lambda path, m=getattr(models, name): m)
    monkeypatch.setattr(generate.TexVAE, "load", lambda path: models.texvae)
    vae = {"struct": tmp_path / "structvae.pt", "tex": tmp_path / "texvae.pt"}
    vae["struct"].write_bytes(b"structure weights")
    vae["tex"].write_bytes(b"texture weights")
    stats = {**models.stats, "models": {k: {"path": str(p), "sha256": file_sha256(p)} for k, p in vae.items()}}
    models.structfm.inputs, models.texfm.inputs = latent_inputs(stats, "struct"), latent_inputs(stats, "tex")
    cfg = generate.GenerationConfig(structvae_path=str(vae["struct"]), texvae_path=str(vae["tex"]))
    assert generate.load_generators(cfg, stats).vaes == stats["models"]

    recached = {**stats, "struct": {"mean": [0.5] * 8, "std": [1.0] * 8}}
    with pytest.raises(ValueError, match="trained on other struct latent statistics"):
        generate.load_generators(cfg, recached)
    vae["tex"].write_bytes(b"retrained texture weights")
    with pytest.raises(ValueError, match=r"latents of another tex VAE(.|\n)*stats.json was computed with another"):
        generate.load_generators(cfg, stats)
    vae["tex"].write_bytes(b"texture weights")
    models.structfm.inputs = {}  # exported before flows recorded their inputs: loads, with a warning
    with caplog.at_level("WARNING"):
        assert generate.load_generators(cfg, recached).structfm is models.structfm
    assert "records no latent statistics or VAE" in caplog.text
