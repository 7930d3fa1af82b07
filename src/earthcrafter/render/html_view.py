"""Interactive views of what the pipelines write: one HTML file per view, opened in any browser.

The file holds a plotly figure (rotate, zoom, pan, toggle layers in the legend) and, by default,
plotly.js itself, so it works offline and can be copied off a headless GPU machine. What it shows:

- mesh PLY files (``voxels.ply`` of generated scenes, ``voxels_*.ply`` of exports, scene meshes):
  triangles in their vertex colours, else their per-face ``semantic`` class colours;
- Gaussian PLY files (``gaussians.ply``): the surfel centres as points in their view-independent
  (SH DC) colour;
- other PLY point clouds, imported LiDAR scenes (``points.npz``) and voxel tiles (``.parquet``,
  drawn as cubes in class colours).

Browsers slow down past a few hundred thousand primitives, so each layer keeps at most a budget of
faces or points, drawn at random (seeded); the figure title and the summary say how many of how
many are shown. Coordinates are shown relative to the centre of all layers: georeferenced data
(UTM, ~10⁶ m) would otherwise lose centimetres to the browser's float32.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from earthcrafter.io.atomic import atomic_path

log = logging.getLogger(__name__)

MAX_FACES = 400_000  # triangles per mesh layer
MAX_POINTS = 300_000  # points per point layer
VIEWABLE = ("*.ply", "points.npz", "*.parquet")  # what a folder is searched for (not recursively)
GREY = np.array([170, 170, 170], np.uint8)


@dataclass
class ViewLayer:
    """One legend entry: a coloured triangle mesh (``faces`` [F, 3]) or coloured points (``faces``
    None). ``rgb`` [V or N, 3] uint8 is per vertex / point; ``total`` counts faces or points before
    the budget."""

    name: str
    xyz: np.ndarray
    rgb: np.ndarray
    faces: np.ndarray | None = None
    total: int = 0

    def __post_init__(self) -> None:
        self.xyz = np.asarray(self.xyz, np.float64).reshape(-1, 3)
        self.rgb = np.asarray(self.rgb, np.uint8).reshape(-1, 3)
        if len(self.rgb) != len(self.xyz):
            raise ValueError(f"layer {self.name}: {len(self.rgb)} colours for {len(self.xyz)} vertices")
        if self.faces is not None:
            self.faces = np.asarray(self.faces, np.int64).reshape(-1, 3)
        self.total = self.total or self.count

    @property
    def count(self) -> int:
        """Faces of a mesh, points of a point layer."""
        return len(self.faces) if self.faces is not None else len(self.xyz)

    @property
    def noun(self) -> str:
        return "faces" if self.faces is not None else "points"


# --------------------------------------------------------------------------- readers

def _ply_layer(path: Path) -> ViewLayer:
    """A Gaussian PLY, a mesh PLY or a point PLY, told apart by its fields (the file is read once)."""
    from plyfile import PlyData

    try:
        ply = PlyData.read(str(path))
    except Exception as e:  # plyfile raises several types for malformed files
        raise ValueError(f"{path}: not a readable PLY file ({e})") from e
    names = {el.name for el in ply.elements}
    if "vertex" not in names:
        raise ValueError(f"{path}: PLY without a 'vertex' element")
    fields = set(ply["vertex"].data.dtype.names or ())
    if {"f_dc_0", "f_dc_1", "f_dc_2", "opacity"} <= fields:
        from earthcrafter.render.ply import gaussians_from_ply

        return gaussian_layer(path.stem, gaussians_from_ply(ply, path))
    if "face" in names and len(ply["face"].data):
        from earthcrafter.io.scene import mesh_from_ply

        mesh = mesh_from_ply(ply, path)
        rgb = mesh.vertex_colors
        if rgb is None and mesh.face_semantic is not None:  # one class colour per face: unshare vertices
            from earthcrafter.semantics import colorize

            rgb = np.repeat(colorize(mesh.face_semantic), 3, axis=0)
            return ViewLayer(path.stem, mesh.vertices[mesh.faces.reshape(-1)], rgb,
                             np.arange(3 * len(mesh.faces)).reshape(-1, 3))  # fmt: skip
        if rgb is None:
            rgb = np.broadcast_to(GREY, mesh.vertices.shape)
        return ViewLayer(path.stem, mesh.vertices, rgb, mesh.faces)
    v = ply["vertex"].data
    xyz = np.stack([v["x"], v["y"], v["z"]], -1)
    rgb = (np.stack([v["red"], v["green"], v["blue"]], -1) if {"red", "green", "blue"} <= fields
           else np.broadcast_to(GREY, xyz.shape))  # fmt: skip
    return ViewLayer(path.stem, xyz, rgb)


def gaussian_layer(name: str, gaussians) -> ViewLayer:
    """Surfels (:class:`~earthcrafter.render.Gaussians2D`) as points in their SH DC colour (what every
    view direction shares)."""
    from earthcrafter.render.sh import C0

    rgb = np.clip(0.5 + C0 * gaussians.sh[:, 0].numpy().astype(np.float64), 0.0, 1.0)
    return ViewLayer(name, gaussians.means.numpy(), np.round(rgb * 255).astype(np.uint8))


def _points_npz_layer(path: Path) -> ViewLayer:
    from earthcrafter.semantics import colorize

    try:
        with np.load(path) as p:
            xyz, rgb, semantic = p["xyz"], p["rgb"], p["semantic"]
    except KeyError as e:
        raise ValueError(f"{path}: a scene's points.npz holds xyz, rgb and semantic; {e} is missing") from None
    except Exception as e:
        raise ValueError(f"{path}: not a readable .npz file ({e})") from e
    if not np.asarray(rgb).any():  # LiDAR without colour: its classes
        rgb = colorize(semantic)
    return ViewLayer(f"{path.parent.name} points", xyz, rgb)


def _is_tile(path: Path) -> bool:
    from earthcrafter.io.tiles import read_tile_meta

    try:
        read_tile_meta(path)
    except ValueError:
        return False
    return True


def _tile_layer(path: Path) -> ViewLayer:
    from earthcrafter.geometry.voxel_mesh import voxel_mesh
    from earthcrafter.io.tiles import read_tile
    from earthcrafter.semantics import colorize

    tile = read_tile(path)
    mesh = voxel_mesh(tile.coords, tile.voxel_size, tile.origin, colorize(tile.semantic))
    return ViewLayer(f"{tile.tile_id} voxels", mesh.vertices, mesh.vertex_colors, mesh.faces)


def layers_of(path: str | Path) -> list[ViewLayer]:
    """The layers of one file (see the module docstring), or of every viewable file directly inside
    a folder (``*.ply``, ``points.npz``, ``*.parquet``). Raises ValueError / FileNotFoundError
    naming the path when there is nothing to show."""
    path = Path(path)
    if path.is_dir():
        files = sorted({f for pattern in VIEWABLE for f in path.glob(pattern) if f.is_file()})
        tables = [f for f in files if f.suffix == ".parquet" and not _is_tile(f)]
        if tables:  # a generated scene's structure and latent tables: voxels.ply draws them
            log.info("%s: not drawing %d table(s) that are not voxel tiles: %s", path, len(tables),
                     ", ".join(f.name for f in tables))  # fmt: skip
        files = [f for f in files if f not in tables]
        if not files:
            raise ValueError(f"{path}: nothing to view (looked for {', '.join(VIEWABLE)} in the folder)")
        return [layer for f in files for layer in layers_of(f)]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.suffix.lower() == ".ply":
        return [_ply_layer(path)]
    if path.suffix.lower() == ".npz":
        return [_points_npz_layer(path)]
    if path.suffix.lower() == ".parquet":
        return [_tile_layer(path)]
    raise ValueError(f"{path}: cannot view a {path.suffix or 'suffix-less'} file (PLY, points.npz or a voxel-tile "
                     f".parquet, or a folder of them)")  # fmt: skip


# --------------------------------------------------------------------------- budget and figure

def within_budget(layer: ViewLayer, max_faces: int = MAX_FACES, max_points: int = MAX_POINTS, seed: int = 0) -> ViewLayer:
    """``layer`` with at most ``max_faces`` faces (unused vertices dropped) or ``max_points`` points,
    drawn uniformly at random; ``total`` keeps the count before."""
    limit = max_faces if layer.faces is not None else max_points
    if limit <= 0:
        raise ValueError(f"the {layer.noun} budget must be positive, got {limit}")
    if layer.count <= limit:
        return layer
    keep = np.sort(np.random.default_rng(seed).choice(layer.count, limit, replace=False))
    log.warning("%s: showing %d of %d %s (the view's budget)", layer.name, limit, layer.count, layer.noun)
    if layer.faces is None:
        return replace(layer, xyz=layer.xyz[keep], rgb=layer.rgb[keep], total=layer.total)
    faces = layer.faces[keep]
    used, inverse = np.unique(faces, return_inverse=True)
    return replace(layer, xyz=layer.xyz[used], rgb=layer.rgb[used], faces=inverse.reshape(-1, 3), total=layer.total)


def _hex(rgb: np.ndarray) -> np.ndarray:
    code = (rgb[:, 0].astype(np.int64) << 16) | (rgb[:, 1].astype(np.int64) << 8) | rgb[:, 2]
    return np.char.add("#", np.char.zfill(np.char.mod("%x", code), 6))


def view_figure(layers: list[ViewLayer], title: str = "", point_size: float = 2.0):
    """A plotly figure of ``layers`` (already within budget) with true metric proportions,
    coordinates relative to the centre of all layers. Returns (figure, centre [3])."""
    import plotly.graph_objects as go

    if not layers:
        raise ValueError("nothing to view: no layers")
    lo = np.min([layer.xyz.min(0) for layer in layers if len(layer.xyz)] or [np.zeros(3)], axis=0)
    hi = np.max([layer.xyz.max(0) for layer in layers if len(layer.xyz)] or [np.zeros(3)], axis=0)
    centre = np.round((lo + hi) / 2, 2)
    traces = []
    for layer in layers:
        x, y, z = (layer.xyz - centre).astype(np.float32).T
        label = f"{layer.name} ({layer.count:,} {layer.noun}" + (f" of {layer.total:,})" if layer.total > layer.count else ")")
        if layer.faces is not None:
            face_rgb = layer.rgb[layer.faces].astype(np.float64).mean(1).round().astype(np.uint8)
            traces.append(go.Mesh3d(x=x, y=y, z=z, i=layer.faces[:, 0], j=layer.faces[:, 1], k=layer.faces[:, 2],
                                    facecolor=_hex(face_rgb), flatshading=True, name=label, showlegend=True,
                                    lighting=dict(ambient=0.55, diffuse=0.6, specular=0.05), hoverinfo="skip"))  # fmt: skip
        else:
            traces.append(go.Scatter3d(x=x, y=y, z=z, mode="markers", name=label, hoverinfo="skip",
                                       marker=dict(size=point_size, color=_hex(layer.rgb), line=dict(width=0))))  # fmt: skip
    shift = f"coordinates in metres relative to ({centre[0]:.2f}, {centre[1]:.2f}, {centre[2]:.2f})"
    fig = go.Figure(traces)
    fig.update_layout(
        title=dict(text=f"{title}<br><sup>{shift}</sup>" if title else shift, x=0.01),
        scene=dict(aspectmode="data", xaxis_title="x (east)", yaxis_title="y (north)", zaxis_title="z (up)",
                   camera=dict(eye=dict(x=0.9, y=-1.3, z=0.9))),  # fmt: skip
        legend=dict(x=0.01, y=0.95, bgcolor="rgba(255,255,255,0.7)"),
        margin=dict(l=0, r=0, t=60, b=0),
        paper_bgcolor="white",
    )
    return fig, centre


def write_view(
    paths: list[str | Path],
    out: str | Path,
    max_faces: int = MAX_FACES,
    max_points: int = MAX_POINTS,
    plotlyjs: str = "inline",
    title: str | None = None,
) -> dict:
    """Write the HTML view of ``paths`` (files or folders) to ``out`` atomically; returns a summary
    (layers with shown / total counts, the coordinate centre, the file size). ``plotlyjs``:
    ``inline`` (self-contained, works offline), ``cdn`` (small file, needs the internet), or the
    path of a shared ``plotly.min.js`` relative to the HTML file (see :func:`write_plotlyjs`)."""
    layers = [within_budget(layer, max_faces, max_points) for p in paths for layer in layers_of(p)]
    title = title if title is not None else ", ".join(Path(p).name or str(p) for p in paths)
    fig, centre = view_figure(layers, title)
    include = True if plotlyjs == "inline" else plotlyjs
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.write_html(tmp, include_plotlyjs=include, full_html=True, config={"displaylogo": False})
    return {
        "path": str(out),
        "bytes": out.stat().st_size,
        "centre": centre.tolist(),
        "layers": [{"name": layer.name, "kind": "mesh" if layer.faces is not None else "points",
                    "shown": layer.count, "total": layer.total} for layer in layers],  # fmt: skip
    }


def write_plotlyjs(folder: str | Path) -> Path:
    """plotly.js once in ``folder`` (``plotly.min.js``), for views that share it."""
    from plotly.offline import get_plotlyjs

    path = Path(folder) / "plotly.min.js"
    with atomic_path(path) as tmp:
        tmp.write_text(get_plotlyjs(), encoding="utf-8")
    return path


def write_scene_view(folder: str | Path, title: str | None = None, parent: str | Path | None = None, **budget) -> dict:
    """``folder/view.html``, the view of a scene folder that loads plotly.js from
    ``folder/../plotly.min.js`` (written once): many scenes of one output folder share it.
    ``parent``: the folder that will hold ``folder``, when it is written somewhere else first (an
    atomic write) — plotly.js goes there; default: ``folder``'s parent."""
    folder = Path(folder)
    parent = Path(parent) if parent is not None else folder.parent
    if not (parent / "plotly.min.js").is_file():
        write_plotlyjs(parent)
    return write_view([folder], folder / "view.html", plotlyjs="../plotly.min.js", title=title or folder.name, **budget)
