"""Decode a tile's cached latents into things people open: voxel meshes, a Gaussian PLY, an orbit.

``earthcrafter export <tile_id>`` writes, into ``data/07_model_output/reconstructions/<tile_id>/``:

- ``voxels_gt.ply``: the tile's voxels as cubes, coloured by semantic class;
- ``voxels_decoded.ply``: the StructVAE decoding of the cached structure latents, correct voxels
  in their ground-truth class colour, false positives magenta;
- ``gaussians.ply``: the TexVAE decoding of the cached texture latents (2DGS surfels; opens in
  3DGS / 2DGS viewers, layout in docs/gaussians_ply.md);
- ``orbit/``: a turntable of those surfels (PNG frames, GIF, MP4 when ffmpeg exists);
- ``preview.png``: ground-truth voxels, decoded voxels and the surfels from one oblique camera;
- ``summary.json``: what was decoded and how well the structure matches (IoU, precision, recall);
- ``georef.json`` (tiles of imported scenes): the CRS and the matrix from these files' tile-local
  metres to the source's coordinates (earthcrafter.io.georef).

The latent files name the weights that produced them (path and SHA-256); decoding refuses
weights that changed since, so a reconstruction always pairs latents with their own decoder.
Everything that can be checked (options, the output folder, the tile, both latent files, both
weight files and their hashes) is checked before anything is written, and the folder is written
whole into a temporary sibling and renamed: it appears complete or not at all, and an earlier
export of the same folder is replaced only once the new one is complete.
Generated scenes will go through the same decoding.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from earthcrafter.evaluation import voxel_metrics as vm
from earthcrafter.geometry.voxel_mesh import voxel_mesh
from earthcrafter.geometry.cameras import Camera
from earthcrafter.geometry.raycast import MeshRaycaster
from earthcrafter.io.atomic import atomic_path, replace_problem
from earthcrafter.io.georef import write_georef
from earthcrafter.io.latents import LatentTile, file_sha256, read_latent_tile
from earthcrafter.io.scene import write_mesh_ply
from earthcrafter.io.tiles import read_tile
from earthcrafter.render import Gaussians2D, orbit_cameras, render_orbit, save_frames, save_ply
from earthcrafter.semantics import PALETTE
from earthcrafter.sparse.tensor import SparseTensor, batched_coords

log = logging.getLogger(__name__)

FALSE_POSITIVE = (255, 0, 255)  # magenta: no semantic class uses it
MIN_SIZE = 16  # orbit / preview edge in pixels, as generation's ``size``


def _weights(lt: LatentTile, root: Path) -> Path:
    """The weights a latent file was encoded with; fails if they are gone or changed."""
    ref = lt.meta["model"]
    path = Path(ref["path"]) if Path(ref["path"]).is_absolute() else root / ref["path"]
    if not path.is_file():
        raise FileNotFoundError(f"{lt.kind} latents of {lt.tile_id} were encoded with {path}, which no longer exists")
    if file_sha256(path) != ref["sha256"]:
        raise ValueError(f"{path} changed since the {lt.kind} latents of {lt.tile_id} were cached: "
                         f"re-run `kedro run --pipelines=cache_latents`")  # fmt: skip
    return path


def _sparse(lt: LatentTile) -> SparseTensor:
    return SparseTensor.from_list([torch.from_numpy(lt.mean)], [torch.from_numpy(lt.coords)], stride=lt.stride)


@torch.no_grad()
def decode_structure(lt: LatentTile, root: Path, threshold: float = 0.0) -> np.ndarray:
    """Voxel coords [M, 3] at L decoded from cached structure latents (free-running)."""
    return _decode_structure(lt, _weights(lt, root), threshold)


@torch.no_grad()
def decode_texture(lt: LatentTile, root: Path, structure: np.ndarray | None = None) -> Gaussians2D:
    """2DGS surfels (tile-local metres) decoded from cached texture latents."""
    return _decode_texture(lt, _weights(lt, root), structure)


def _decode_structure(lt: LatentTile, weights: Path, threshold: float) -> np.ndarray:
    """:func:`decode_structure` with weights :func:`_weights` already checked (hashing is a read of the file)."""
    from earthcrafter.training.structvae import load_structvae

    return load_structvae(weights).decode(_sparse(lt), threshold=threshold).coords[:, 1:].numpy()


def _decode_texture(lt: LatentTile, weights: Path, structure: np.ndarray | None) -> Gaussians2D:
    """:func:`decode_texture` with weights already checked."""
    from earthcrafter.models.tex_vae import TexVAE

    fine = batched_coords(structure) if structure is not None else None
    return TexVAE.load(weights).decode(_sparse(lt), voxel_size=float(lt.meta["voxel_size_m"]), structure=fine)


def aerial_orbit(coords: np.ndarray, voxel_size: float, L: int, size: int) -> dict:
    """Keyword arguments of :func:`~earthcrafter.render.render_orbit` for an oblique aerial orbit of
    a tile: circling its centre from above its tallest voxel."""
    extent = L * voxel_size
    z = (coords[:, 2] + 0.5) * voxel_size if len(coords) else np.zeros(1)
    centre = np.array([extent / 2, extent / 2, float(np.median(z))])
    return {"center": centre, "radius": 1.1 * extent, "altitude": float(z.max()) - centre[2] + 0.6 * extent,
            "width": size, "height": size, "fov_deg": 50.0}  # fmt: skip


def render_mesh(mesh, orbit: dict) -> np.ndarray:
    """The first orbit camera's view of a mesh (ray cast, shaded); white when the mesh is empty."""
    if len(mesh.faces) == 0:
        return np.full((orbit["height"], orbit["width"], 3), 255, np.uint8)
    viewmats, Ks = orbit_cameras(n_frames=1, **orbit)
    return MeshRaycaster(mesh).render(Camera(Ks[0], viewmats[0], orbit["width"], orbit["height"])).rgb


def check_options(frames: int, size: int, threshold: float) -> None:
    """Export options, checked before any file is read or written."""
    if not isinstance(frames, int) or frames < 0:
        raise ValueError(f"frames must be a whole number >= 0 (0: no orbit), got {frames!r}")
    if not isinstance(size, int) or size < MIN_SIZE:
        raise ValueError(f"size must be a whole number of pixels >= {MIN_SIZE}, got {size!r}")
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be a finite number, got {threshold!r}")


def check_out_dir(out: Path) -> None:
    """``out`` is new, empty or an earlier export: it is replaced whole, so any other folder is refused."""
    problem = replace_problem(out, "summary.json", "an earlier export")
    if problem:
        raise ValueError(f"{out}: {problem}")


def _present(value) -> bool:
    """A manifest path cell that names a file (not None, NaN or empty)."""
    return isinstance(value, (str, Path)) and str(value) != ""


def export_tile(
    row, out_dir: str | Path, root: str | Path = ".", frames: int = 24, size: int = 256, threshold: float = 0.0
) -> dict:
    """Write the reconstruction files of one latent-manifest ``row`` (see the module docstring):
    checks everything first, then writes the folder atomically (whole or not at all)."""
    root, out = Path(root), Path(out_dir)
    check_options(frames, size, threshold)
    check_out_dir(out)
    resolve = lambda p: Path(p) if Path(p).is_absolute() else root / p  # noqa: E731
    tile = read_tile(resolve(row["tile_path"]))
    struct = read_latent_tile(resolve(row["struct_path"]))
    latents = {"struct": struct}
    if _present(row.get("tex_path")):
        latents["tex"] = read_latent_tile(resolve(row["tex_path"]))
    # both decoders before any decoding: a changed TexVAE must not cost a StructVAE decode first
    weights = {kind: _weights(lt, root) for kind, lt in latents.items()}
    with atomic_path(out) as tmp:
        tmp.mkdir()
        summary = _write_export(tmp, out, tile, latents, weights, frames, size, threshold)
    log.info("exported %s to %s (structure IoU %.3f)", tile.tile_id, out, summary["iou"])
    return summary


@torch.no_grad()
def _write_export(tmp: Path, out: Path, tile, latents: dict[str, LatentTile], weights: dict[str, Path],
                  frames: int, size: int, threshold: float) -> dict:  # fmt: skip
    """Decode ``latents`` (by kind) with the checked ``weights`` and write every file into ``tmp``
    (renamed to ``out`` after); returns the summary."""
    struct, tex = latents["struct"], latents.get("tex")
    vs, L = tile.voxel_size, tile.L
    summary: dict = {"tile_id": tile.tile_id, "scene_id": tile.meta["scene_id"], "L": L, "voxel_size_m": vs,
                     "origin_m": [float(v) for v in tile.meta["origin_m"]],  # where the tile-local files sit
                     "voxels": len(tile)}  # fmt: skip
    gt_mesh = voxel_mesh(tile.coords, vs, colors=PALETTE[tile.semantic])
    write_mesh_ply(tmp / "voxels_gt.ply", gt_mesh)

    decoded = _decode_structure(struct, weights["struct"], threshold)
    L_key = lambda c: (c[:, 0].astype(np.int64) * L + c[:, 1]) * L + c[:, 2]  # noqa: E731
    gt_keys = L_key(tile.coords)
    hit = np.isin(L_key(decoded), gt_keys)
    order = np.argsort(gt_keys)
    cls = np.zeros(len(decoded), np.int64)
    cls[hit] = tile.semantic[order][np.searchsorted(gt_keys[order], L_key(decoded[hit]))]
    colors = np.where(hit[:, None], PALETTE[cls], np.asarray(FALSE_POSITIVE, np.uint8))
    decoded_mesh = voxel_mesh(decoded, vs, colors=colors.astype(np.uint8))
    write_mesh_ply(tmp / "voxels_decoded.ply", decoded_mesh)
    counts = {"tp": int(hit.sum()), "fp": int((~hit).sum()), "fn": len(tile) - int(hit.sum())}
    summary.update(decoded_voxels=len(decoded), **vm.ratios(counts), structvae=struct.meta["model"])

    orbit = aerial_orbit(tile.coords, vs, L, size)
    panels = [render_mesh(m, orbit) for m in (gt_mesh, decoded_mesh)]

    if tex is not None:
        gaussians = _decode_texture(tex, weights["tex"], tile.coords if tex.stride > 1 else None)
        save_ply(tmp / "gaussians.ply", gaussians)
        views = render_orbit(gaussians, n_frames=max(frames, 1), **orbit)
        panels.append(views[0])
        if frames:
            written = save_frames(views, tmp / "orbit")
            # where the files will be once the folder is renamed
            summary["orbit"] = {k: str(out / "orbit" / v.name) for k, v in written.items() if k != "png"}
        summary.update(gaussians=len(gaussians), texvae=tex.meta["model"])
    Image.fromarray(np.concatenate(panels, axis=1)).save(tmp / "preview.png")  # the folder is the atomic unit
    georef = write_georef(tmp, tile.georef, tile.origin,
                          "voxels_gt.ply, voxels_decoded.ply, gaussians.ply: tile-local metres")  # fmt: skip
    if georef is not None:
        summary["georef"] = georef.name
    (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
