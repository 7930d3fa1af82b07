"""Large scenes: a semantic map wider than one tile, generated window by window.

The paper's "Infinite Scene Generation": a large semantic map conditions tile-sized windows that
slide over it, each outpainting from what the earlier windows generated (mask-based inpainting).
Here, with G = L/8 latent cells per window edge and a stride of ``stride_cells`` cells, windows are
visited row by row; in each one

1. StructFM samples the window's cells — the coarse occupancy, then the latents — with every cell
   column an earlier window decided pinned to its occupancy and latents (replacement:
   :func:`earthcrafter.flow.euler_sample` with ``known``);
2. the StructVAE decodes the window's cells, and the voxels of its new columns join the scene;
3. TexFM samples texture latents on the window's voxels — the new ones, and the earlier voxels
   inside the window pinned to theirs — and the TexVAE decodes them; the surfels of the new voxels
   join the scene.

So nothing a window decided is changed by a later one, and every new column is generated beside
the decided ones it borders. All windows share one z frame (the window's z = 0 is the scene's),
as a flat map gives no heights. Maps come as a class raster at the voxel size: from the voxel
tiles of a scene (:func:`class_raster_from_tiles`) or an image (:func:`class_raster_from_image`);
:func:`~earthcrafter.training.conditions.cell_layout` pools it into the per-column class
fractions the flows were trained on.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from earthcrafter.flow.latent_stats import denormalize
from earthcrafter.geometry.voxel_mesh import voxel_mesh
from earthcrafter.io.atomic import atomic_path, atomic_write_text
from earthcrafter.io.georef import write_georef
from earthcrafter.io.scene import write_mesh_ply
from earthcrafter.io.structure import write_structure
from earthcrafter.io.tiles import VoxelTile
from earthcrafter.latents.export import aerial_orbit, render_mesh
from earthcrafter.models.struct_fm import KnownCells
from earthcrafter.models.tex_fm import generate_texture
from earthcrafter.render import Gaussians2D, render_orbit, save_frames, save_ply
from earthcrafter.render.html_view import write_scene_view
from earthcrafter.semantics import NUM_CLASSES, PALETTE, classes_of_colours
from earthcrafter.sparse import SparseTensor
from earthcrafter.sparse.tensor import batched_coords
from earthcrafter.training.conditions import EMPTY, cell_layout, from_semantic, top_surface
from earthcrafter.training.structfm_preview import height_colors

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- maps

def map_corner(origins) -> np.ndarray:
    """The corner of a large scene's map frame, in its scene's metres, from its tiles' ``origin_m``:
    the lowest of each coordinate (z: the lowest tile bottom)."""
    return np.min(np.asarray(origins, float).reshape(-1, 3), axis=0)


def _tile_frame(tiles: Sequence[VoxelTile]) -> tuple[float, np.ndarray, list[np.ndarray]]:
    """(voxel size, world xyz of the scene frame's corner, each tile's offset in voxels from it) of
    tiles on one voxel grid in xy (a scene's tiles). z: the lowest tile bottom, offsets rounded."""
    if not tiles:
        raise ValueError("no tiles")
    vs = float(tiles[0].voxel_size)
    corner = map_corner([t.meta["origin_m"] for t in tiles])
    shifts = []
    for t in tiles:
        if abs(t.voxel_size - vs) > 1e-9 * vs:
            raise ValueError(f"tile {t.tile_id}: voxel size {t.voxel_size} m, the others {vs} m")
        s = (np.asarray(t.meta["origin_m"], float) - corner) / vs
        if np.abs(s[:2] - np.round(s[:2])).max() > 1e-3:
            raise ValueError(f"tile {t.tile_id}: origin {t.meta['origin_m'][:2]} is not on the voxel grid of the "
                             f"other tiles (offset {s[:2]} voxels)")  # fmt: skip
        shifts.append(np.round(s).astype(np.int64))
    return vs, corner, shifts


def class_raster_from_tiles(tiles: Sequence[VoxelTile]) -> tuple[np.ndarray, float, np.ndarray]:
    """(raster [X, Y] uint8: the class of each voxel column's top voxel, EMPTY where no tile has
    one; voxel size; world xy of the raster's corner) of tiles on one voxel grid (a scene's tiles).

    Overlapping tiles see the same surface; where their tops differ, the higher one wins.
    """
    vs, corner, shifts = _tile_frame(tiles)
    size = np.max([s[:2] + t.L for s, t in zip(shifts, tiles)], axis=0)
    raster = np.full(size, EMPTY, np.uint8)
    best = np.full(size, -np.inf)  # world height of the top so far
    for s, t in zip(shifts, tiles):
        classes, top = top_surface(t.coords, t.semantic, t.L)
        z = t.meta["origin_m"][2] + (top + 0.5) * vs
        region = (slice(s[0], s[0] + t.L), slice(s[1], s[1] + t.L))
        higher = (top >= 0) & (z > best[region])
        raster[region][higher] = classes[higher]
        best[region][higher] = z[higher]
    return raster, vs, corner[:2]


def map_georef(tiles: Sequence[VoxelTile]) -> tuple[dict, np.ndarray] | None:
    """(the tiles' georef, the corner of their map frame in the scene's frame): where a large scene
    of these tiles' map lies (:func:`write_large_scene`); None for tiles of a synthetic scene."""
    return (tiles[0].georef, _tile_frame(tiles)[1]) if tiles[0].georef else None


def scene_voxels_from_tiles(tiles: Sequence[VoxelTile]) -> np.ndarray:
    """[N, 4] int64 (x, y, z, class): the union of the tiles' voxels in the frame of
    :func:`class_raster_from_tiles` (z from the lowest tile bottom, rounded to whole voxels)."""
    _, _, shifts = _tile_frame(tiles)
    rows = np.concatenate([np.concatenate([t.coords + s, t.semantic[:, None]], 1) for s, t in zip(shifts, tiles)])
    _, first = np.unique(rows[:, :3], axis=0, return_index=True)
    return rows[np.sort(first)].astype(np.int64)


def class_raster_from_image(path: str | Path) -> np.ndarray:
    """Raster [X, Y] uint8 from an image, north up and x to the right (as the layout images this
    package writes). A single-channel image holds class ids (EMPTY = 255: no surface); an RGB
    image holds the class colours of :data:`earthcrafter.semantics.PALETTE`, white for no surface."""
    path = Path(path)
    try:
        img = Image.open(path)
        img.load()
    except (OSError, ValueError) as e:
        raise ValueError(f"layout image {path}: cannot be read ({e})") from e
    if img.mode in ("L", "P", "I", "I;16"):
        ids = np.asarray(img.convert("I") if img.mode != "L" else img).astype(np.int64)
        bad = (ids >= NUM_CLASSES) & (ids != EMPTY)
        if bad.any():
            r, c = np.argwhere(bad)[0]
            raise ValueError(f"layout image {path}: pixel (row {r}, column {c}) holds {ids[r, c]}, not a class id "
                             f"(0..{NUM_CLASSES - 1}) or {EMPTY} (no surface)")  # fmt: skip
    else:
        rgb = np.asarray(img.convert("RGB"))
        ids, found = classes_of_colours(rgb)
        white = (rgb == 255).all(-1)  # no surface
        if not (found | white).all():
            r, c = np.argwhere(~(found | white))[0]
            raise ValueError(f"layout image {path}: pixel (row {r}, column {c}) has colour "
                             f"{tuple(int(v) for v in rgb[r, c])}, not a class colour of earthcrafter.semantics.PALETTE "
                             "(or white: no surface)")  # fmt: skip
        ids[white] = EMPTY
    return np.ascontiguousarray(ids.astype(np.uint8)[::-1].T)


def raster_image(raster: np.ndarray) -> np.ndarray:
    """RGB [Y, X, 3] of a class raster, north up (what :func:`class_raster_from_image` reads back)."""
    rgb = np.where((raster == EMPTY)[..., None], 255, PALETTE[np.minimum(raster, NUM_CLASSES - 1)])
    return np.ascontiguousarray(rgb.astype(np.uint8).transpose(1, 0, 2)[::-1])


def window_starts(n: int, window: int, stride: int) -> list[int]:
    """Starts of windows of ``window`` cells every ``stride`` cells covering [0, n); the last one
    ends at n (so it may overlap its neighbour more)."""
    if n < window:
        raise ValueError(f"the map is {n} latent cells wide; a window needs {window} (the tiles' L/8)")
    if not 1 <= stride <= window:
        raise ValueError(f"stride_cells must be in [1, {window}], got {stride}")
    starts = list(range(0, n - window + 1, stride))
    if starts[-1] != n - window:
        starts.append(n - window)
    return starts


# --------------------------------------------------------------------------- generation

@dataclass
class Generators:
    """The four trained models and the latent statistics generation needs."""

    structfm: torch.nn.Module
    texfm: torch.nn.Module
    structvae: torch.nn.Module
    texvae: torch.nn.Module
    stats: dict
    vaes: dict = field(default_factory=dict)  # kind -> {"path", "sha256"} of the VAE weights (what decodes)

    @property
    def grid(self) -> int:
        return self.structfm.config.grid


@dataclass
class LargeScene:
    """A generated large scene in its own frame: voxel (x, y, z) index from the map's corner."""

    voxels: np.ndarray  # [N, 3] int64
    tex_latents: np.ndarray  # [N, c_t] (denormalised)
    cells: np.ndarray  # [M, 3] latent cells (L/8 units)
    struct_latents: np.ndarray  # [M, c_s] (denormalised)
    gaussians: Gaussians2D  # metres, the same frame
    voxel_size: float
    owner: np.ndarray  # [X, Y] int: the window (index into ``windows``) that decided each cell column
    windows: list[dict] = field(default_factory=list)
    cell: int = 8  # voxels per latent cell edge


@torch.no_grad()
def generate_large_scene(
    models: Generators,
    layout: np.ndarray,
    voxel_size: float,
    stride_cells: int | None = None,
    steps: int = 25,
    cfg_strength: float = 3.0,
    seed: int = 0,
    condition: bool = True,
    resample: int = 3,
    outpaint: bool = True,
    progress: bool = True,
) -> LargeScene:
    """Generate the scene of a cell layout [X, Y, classes] (:func:`cell_layout`).

    ``stride_cells``: window step in latent cells (default: 3/4 of a window, a quarter overlap);
    ``condition=False`` samples unconditionally (the layout then only sizes the scene);
    ``resample``: RePaint resampling per Euler step where a window borders decided columns;
    ``outpaint=False``: the baseline — each window sampled on its own (nothing pinned), its new
    columns placed beside the decided ones.
    """
    G = models.grid
    cell = models.structvae.config.L // G  # voxels per latent cell edge (8)
    if models.texfm.cfg.condition != "none" and models.texfm.cfg.layout_grid != G:
        raise ValueError(f"TexFM's layout grid {models.texfm.cfg.layout_grid} differs from StructFM's grid {G}")
    stride = stride_cells or max(1, (3 * G) // 4)
    X, Y = layout.shape[:2]
    xs, ys = window_starts(X, G, stride), window_starts(Y, G, stride)
    device = next(models.structfm.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    c_s, c_t = models.structfm.config.latent_channels, models.texfm.out.out_features
    stats_s, stats_t = models.stats["struct"], models.stats["tex"]

    col_done = np.zeros((X, Y), bool)  # cell columns decided
    owner = np.full((X, Y), -1, np.int64)
    cell_lat = np.zeros((X, Y, G, c_s), np.float32)  # normalised latents of occupied cells
    cell_occ = np.zeros((X, Y, G), bool)
    parts: list[Gaussians2D] = []
    windows: list[dict] = []
    scene_vox = np.zeros((0, 3), np.int64)
    scene_tex = np.zeros((0, c_t), np.float32)
    order = [(ox, oy) for oy in ys for ox in xs]
    for ox, oy in tqdm(order, desc="windows", disable=not progress):
        t0 = time.perf_counter()
        win = (slice(ox, ox + G), slice(oy, oy + G))
        cond = torch.from_numpy(layout[win]).float()[None].to(device)
        if not condition:
            cond = torch.zeros_like(cond)
        # 1. cells, with the decided columns pinned
        ix, iy, iz = np.nonzero(cell_occ[win])
        known = None
        if outpaint and col_done[win].any():
            known = KnownCells(torch.from_numpy(col_done[win])[None].to(device),
                               SparseTensor(torch.from_numpy(cell_lat[win][ix, iy, iz]).to(device),
                                            batched_coords(np.stack([ix, iy, iz], 1)).to(device), 1))  # fmt: skip
        use = from_semantic(cond, models.structfm.config.condition)
        _, z_s = models.structfm.generate(use, 1, steps, cfg_strength, generator=gen, device=device, known=known,
                                            resample=resample)  # fmt: skip
        cells = z_s.coords[:, 1:].cpu().numpy().astype(np.int64)
        new_cell = ~col_done[win][cells[:, 0], cells[:, 1]]
        # 2. voxels of the new columns
        voxels = models.structvae.decode(z_s.replace(denormalize(z_s.feats, stats_s)), threshold=0.0)
        local = voxels.coords[:, 1:].cpu().numpy().astype(np.int64)
        fresh = local[~col_done[win][local[:, 0] // cell, local[:, 1] // cell]]
        lo = np.array([cell * ox, cell * oy, 0])
        inside = np.all((scene_vox[:, :2] >= lo[:2]) & (scene_vox[:, :2] < lo[:2] + cell * G), axis=1)
        old = scene_vox[inside] - lo if outpaint else np.zeros((0, 3), np.int64)
        structure = np.concatenate([old, fresh])
        # 3. texture on the window's voxels, the earlier ones pinned
        pinned = torch.zeros(len(structure), dtype=torch.bool)
        pinned[: len(old)] = True
        x0 = torch.zeros(len(structure), c_t)
        x0[: len(old)] = torch.from_numpy(scene_tex[inside][: len(old)])
        st = SparseTensor(torch.zeros(len(structure), 1, device=device), batched_coords(structure).to(device), 1)
        use = from_semantic(cond, models.texfm.cfg.condition)
        z_t = generate_texture(models.texfm, st, use, steps, cfg_strength, generator=gen,
                               known=(pinned.to(device), x0.to(device)), resample=resample if len(old) else 0)  # fmt: skip
        g = models.texvae.decode(z_t.replace(denormalize(z_t.feats, stats_t)), voxel_size=voxel_size)
        k = len(g) // max(len(structure), 1)
        new_rows = torch.arange(len(old) * k, len(structure) * k, device=g.means.device)
        g = g.index(new_rows)
        parts.append(Gaussians2D(g.means + torch.as_tensor(lo * voxel_size, dtype=g.means.dtype, device=g.means.device),
                                 g.quats, g.scales, g.opacities, g.sh, g.sh_degree))  # fmt: skip
        # the scene grows by the new columns
        nc = cells[new_cell]
        cell_occ[ox + nc[:, 0], oy + nc[:, 1], nc[:, 2]] = True
        cell_lat[ox + nc[:, 0], oy + nc[:, 1], nc[:, 2]] = z_s.feats[torch.from_numpy(new_cell).to(device)].cpu().numpy()
        owner[win] = np.where(col_done[win], owner[win], len(windows))
        col_done[win] = True
        scene_vox = np.concatenate([scene_vox, fresh + lo])
        scene_tex = np.concatenate([scene_tex, z_t.feats[len(old):].cpu().numpy()])
        windows.append({"x_cells": ox, "y_cells": oy, "new_cells": int(new_cell.sum()),
                        "pinned_cells": len(ix) if known is not None else 0,
                        "new_voxels": len(fresh), "pinned_voxels": len(old),
                        "seconds": round(time.perf_counter() - t0, 2)})  # fmt: skip
    cx, cy, cz = np.nonzero(cell_occ)
    cells = np.stack([cx, cy, cz], 1).astype(np.int64)
    dev = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
    return LargeScene(
        voxels=scene_vox,
        tex_latents=denormalize(dev(scene_tex), stats_t).cpu().numpy(),
        cells=cells,
        struct_latents=denormalize(dev(cell_lat[cx, cy, cz]), stats_s).cpu().numpy(),
        gaussians=_cat(parts),
        voxel_size=float(voxel_size),
        owner=owner,
        windows=windows,
        cell=cell,
    )


def seam_scores(scene: LargeScene) -> dict:
    """How visible the windows' seams are: steps between neighbouring voxel columns across a latent
    cell boundary, where the two columns were decided by different windows (``seam_*``) against
    where one window decided both (``interior_*``) — seams only ever lie on cell boundaries, so
    these are the fair comparison. Per pair of non-empty columns: ground step (lowest voxel) and
    top step in metres, and the colour step of the top voxels' surfels (mean RGB of their DC terms,
    0-1). A seamless scene has ``seam_*`` close to ``interior_*``."""
    from earthcrafter.render.sh import C0

    v, vs, cell = scene.voxels, scene.voxel_size, scene.cell
    X, Y = scene.owner.shape[0] * cell, scene.owner.shape[1] * cell
    low, top = np.full((X, Y), np.iinfo(np.int64).max), np.full((X, Y), -1)
    np.minimum.at(low, (v[:, 0], v[:, 1]), v[:, 2])
    np.maximum.at(top, (v[:, 0], v[:, 1]), v[:, 2])
    k = len(scene.gaussians) // max(len(v), 1)
    rgb = (0.5 + C0 * scene.gaussians.sh[:, 0].detach().cpu().numpy()).reshape(len(v), k, 3).mean(1) if k else np.zeros((len(v), 3))
    colour = np.zeros((X, Y, 3))
    is_top = top[v[:, 0], v[:, 1]] == v[:, 2]
    colour[v[is_top, 0], v[is_top, 1]] = rgb[is_top]
    owner = np.repeat(np.repeat(scene.owner, cell, 0), cell, 1)
    out: dict = {}
    steps: dict = {"seam": [], "interior": []}
    for axis in (0, 1):
        a = [slice(None), slice(None)]
        b = [slice(None), slice(None)]
        a[axis], b[axis] = slice(cell - 1, -1, cell), slice(cell, None, cell)  # pairs across cell boundaries
        a, b = tuple(a), tuple(b)
        both = (top[a] >= 0) & (top[b] >= 0)
        seam = owner[a] != owner[b]
        d = np.stack([np.abs(low[a] - low[b]) * vs, np.abs(top[a] - top[b]) * vs,
                      np.abs(colour[a] - colour[b]).mean(-1)], -1)  # fmt: skip
        steps["seam"].append(d[both & seam])
        steps["interior"].append(d[both & ~seam])
    for kind, parts in steps.items():
        d = np.concatenate(parts)
        out[f"{kind}_pairs"] = len(d)
        for i, name in enumerate(("ground_step_m", "top_step_m", "colour_step")):
            out[f"{kind}_{name}"] = float(d[:, i].mean()) if len(d) else None  # one window: no seams
    return out


def _cat(parts: list[Gaussians2D]) -> Gaussians2D:
    return Gaussians2D(*(torch.cat([getattr(p, f) for p in parts]) for f in ("means", "quats", "scales", "opacities", "sh")),
                       sh_degree=parts[0].sh_degree)  # fmt: skip


# --------------------------------------------------------------------------- files

def top_view(map_cells: tuple[int, int], voxel_size: float, z_ground: float, size: int) -> dict:
    """Keyword arguments of :func:`~earthcrafter.render.render_orbit` (and ``render_mesh``) for a
    view straight down on a map of ``map_cells`` voxel columns, north up, the longer side ``size``
    pixels wide."""
    X, Y = (n * voxel_size for n in map_cells)
    width, height = (size, max(16, round(size * Y / X))) if X >= Y else (max(16, round(size * X / Y)), size)
    fov = 30.0
    half = 0.52 * max(X, Y * width / height)  # the horizontal half-extent the view must hold
    altitude = half / np.tan(np.deg2rad(fov / 2))
    # a hair south of the centre, so "up" in the image is north (a camera exactly overhead has no up)
    return {"center": np.array([X / 2, Y / 2, z_ground]), "radius": 1e-3 * altitude, "altitude": altitude,
            "width": width, "height": height, "fov_deg": fov, "start_deg": -90.0}  # fmt: skip


def _fit(img: np.ndarray, width: int, height: int) -> np.ndarray:
    """``img`` scaled (nearest) into width x height, aspect kept, on white."""
    h, w = img.shape[:2]
    scale = min(width / w, height / h)
    small = np.asarray(Image.fromarray(img).resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.NEAREST))
    out = np.full((height, width, 3), 255, np.uint8)
    y0, x0 = (height - small.shape[0]) // 2, (width - small.shape[1]) // 2
    out[y0 : y0 + small.shape[0], x0 : x0 + small.shape[1]] = small
    return out


def write_large_scene(
    out: str | Path, scene: LargeScene, raster: np.ndarray, meta: dict, frames: int = 24, size: int = 384,
    reference: np.ndarray | None = None, view: bool = True, georef: tuple[dict, np.ndarray] | None = None,
) -> dict:
    """Write ``out/``: layout.png, voxels.ply, structure.parquet, gaussians.ply, view.html (``view``:
    the interactive view, :func:`~earthcrafter.render.html_view.write_scene_view`), preview.png (the
    map, [the reference scene's voxels,] the generated voxels, the surfels from one aerial camera),
    top.png (the map[, the reference] and the surfels straight from above, north up), orbit/ and
    summary.json (with :func:`seam_scores`). ``reference``: voxels [N, 4] (x, y, z, class) of the
    map's own scene in the same frame, coloured by class. ``georef``: (the tiles' georef, the
    frame's corner in their scene's frame) for a map of an imported scene's tiles: georef.json
    (earthcrafter.io.georef). The folder appears whole or not at all (a re-run replaces it at
    once). Returns the summary."""
    final = Path(out)
    with atomic_path(final) as out:
        out.mkdir()
        if georef is not None:
            write_georef(out, georef[0], georef[1], "voxels.ply, gaussians.ply: the map's frame (from its corner; "
                         "z from the lowest tile's bottom, as the reference scene)")  # fmt: skip
        return _write_large_scene(out, final, scene, raster, meta, frames, size, reference, view)


def _write_large_scene(out: Path, final: Path, scene: LargeScene, raster: np.ndarray, meta: dict, frames: int,
                       size: int, reference: np.ndarray | None, view: bool) -> dict:
    xyz, vs = scene.voxels, scene.voxel_size
    extent = int(max(raster.shape[0], raster.shape[1], xyz[:, 2].max() + 1 if len(xyz) else 1))
    layout_rgb = raster_image(raster)
    with atomic_path(out / "layout.png") as tmp:
        Image.fromarray(layout_rgb).save(tmp)
    top = int(xyz[:, 2].max()) + 1 if len(xyz) else 1
    mesh = voxel_mesh(xyz, vs, colors=height_colors(xyz, top))
    write_mesh_ply(out / "voxels.ply", mesh)
    write_structure(out / "structure.parquet", xyz, {"scene_id": meta.get("scene_id", final.name), "L": extent,
                                                      "voxel_size_m": vs, "source": meta})  # fmt: skip
    save_ply(out / "gaussians.ply", scene.gaussians)
    orbit = aerial_orbit(xyz, vs, max(raster.shape[0], raster.shape[1]), size)
    orbit["center"][:2] = np.array(raster.shape[:2]) * vs / 2
    views = render_orbit(scene.gaussians, n_frames=max(frames, 1), **orbit)
    if frames:
        save_frames(views, out / "orbit")
    ref_mesh = voxel_mesh(reference[:, :3], vs, colors=PALETTE[reference[:, 3]]) if reference is not None and len(reference) else None
    panels = [_fit(layout_rgb, size, size)] + ([render_mesh(ref_mesh, orbit)] if ref_mesh else [])
    with atomic_path(out / "preview.png") as tmp:
        Image.fromarray(np.concatenate([*panels, render_mesh(mesh, orbit), views[0]], axis=1)).save(tmp)
    ground = float(np.median(xyz[:, 2]) * vs) if len(xyz) else 0.0
    down = top_view(raster.shape[:2], vs, ground, size)
    panels = [_fit(layout_rgb, down["width"], down["height"])] + ([render_mesh(ref_mesh, down)] if ref_mesh else [])
    panels.append(render_orbit(scene.gaussians, n_frames=1, **down)[0])
    gap = np.full((down["height"], 4, 3), 255, np.uint8)
    with atomic_path(out / "top.png") as tmp:
        Image.fromarray(np.concatenate([x for p in panels for x in (p, gap)][:-1], axis=1)).save(tmp)
    if view:
        write_scene_view(out, f"{meta.get('scene_id', final.name)}: generated voxels and surfels", parent=final.parent)
    summary = {**meta, "voxel_size_m": vs, "map_voxels": list(raster.shape), "voxels": len(xyz),
               "cells": len(scene.cells), "gaussians": len(scene.gaussians), "seams": seam_scores(scene),
               "windows": scene.windows, "seconds": round(sum(w["seconds"] for w in scene.windows), 1),
               "path": str(final)}  # fmt: skip
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


__all__ = [
    "EMPTY", "Generators", "LargeScene", "cell_layout", "class_raster_from_image", "class_raster_from_tiles",
    "generate_large_scene", "map_georef", "raster_image", "scene_voxels_from_tiles", "seam_scores", "top_view",
    "window_starts", "write_large_scene",
]
