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

All layers are drawn in one frame (:func:`in_one_frame`). A tile's files (a voxel tile, an export's
decodings, a scene generated from its layout) are in the tile's local metres, a scene folder's
(``metadata.json`` beside them) in the scene's; what says which lies beside them (a voxel tile's
``origin_m``, an export's ``summary.json``, a generated scene's ``structure.parquet`` or
``summary.json``). Layers of one tile are shown in its frame, others in their scene's, tiles moved
to their corner; the subtitle names the frame, and a layer that cannot be placed is drawn as stored
with the reason in its legend entry. Equal layer names (``gaussians`` of two scenes) are told apart
by the shortest end of their folders' paths (``a/gaussians``, ``b/gaussians``).
"""

from __future__ import annotations

import json
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
FRAMES = ("auto", "tile", "scene")  # see in_one_frame


@dataclass(frozen=True)
class Frame:
    """The metric frame a layer's coordinates are in: scene ``scene``'s own (``local`` None), or one
    inside it (``local``: "tile <id>", or "map of <scene>" for a large scene) whose corner is the
    lowest ``origin_m`` of ``tiles``, at ``corner`` in the scene's frame once that is known."""

    scene: str | None
    local: str | None = None
    tiles: tuple[str, ...] = ()
    corner: tuple[float, float, float] | None = None


@dataclass
class ViewLayer:
    """One legend entry: a coloured triangle mesh (``faces`` [F, 3]) or coloured points (``faces``
    None). ``rgb`` [V or N, 3] uint8 is per vertex / point; ``total`` counts faces or points before
    the budget. ``frame``: what ``xyz`` is relative to (None: unknown); ``folder``: where the file
    lies beyond what ``name`` says, to tell equal names apart; ``note``: for the legend (why the
    layer is not in the view's frame)."""

    name: str
    xyz: np.ndarray
    rgb: np.ndarray
    faces: np.ndarray | None = None
    total: int = 0
    frame: Frame | None = None
    folder: Path | None = None
    note: str = ""

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
    """The tile's cubes in its local frame (as its exports and generated scenes are), placed by its origin."""
    from earthcrafter.geometry.voxel_mesh import voxel_mesh
    from earthcrafter.io.tiles import read_tile
    from earthcrafter.semantics import colorize

    tile = read_tile(path)
    mesh = voxel_mesh(tile.coords, tile.voxel_size, colors=colorize(tile.semantic))
    frame = Frame(str(tile.meta["scene_id"]), f"tile {tile.tile_id}", (tile.tile_id,), tuple(tile.origin.tolist()))
    return ViewLayer(f"{tile.tile_id} voxels", mesh.vertices, mesh.vertex_colors, mesh.faces, frame=frame)


# --------------------------------------------------------------------------- frames

def _json(path: Path) -> dict:
    """A JSON object file; {} when missing or not one (the frame is then unknown: not an error)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _structure_source(path: Path) -> dict:
    """The ``source`` a generated scene's structure.parquet records (layout tile or map); {} without one."""
    from earthcrafter.io.parquet import read_json_meta
    from earthcrafter.io.structure import STRUCTURE_KEYS

    if not path.is_file():
        return {}
    try:
        source = read_json_meta(path, STRUCTURE_KEYS, "voxel structure")["source"]
    except ValueError:  # not a structure: it says nothing of the frame
        return {}
    return source if isinstance(source, dict) else {}


def _tile_frame(tile_id: str, tile_path=None) -> Frame:
    """Tile ``tile_id``'s frame, placed in its scene when ``tile_path`` (as a generation run recorded
    it: from the project root, where commands run) still holds that tile."""
    from earthcrafter.io.tiles import read_tile_meta

    frame = Frame(None, f"tile {tile_id}", (tile_id,))
    if not (isinstance(tile_path, str) and Path(tile_path).is_file()):
        return frame
    try:
        meta = read_tile_meta(tile_path)
    except ValueError:
        return frame
    if meta["tile_id"] != tile_id:
        return frame
    return replace(frame, scene=str(meta["scene_id"]), corner=tuple(float(v) for v in meta["origin_m"]))


def _folder_frame(folder: str | Path) -> Frame | None:
    """The frame of the files a pipeline wrote into ``folder``, from what it wrote beside them; None
    when nothing there says (a PLY from elsewhere, an unconditional sample: its tile gave no place)."""
    folder = Path(folder)
    if (folder / "metadata.json").is_file():  # a scene folder (imported points, a scene mesh)
        return Frame(str(_json(folder / "metadata.json").get("scene_id", folder.name)))
    # structure.parquet too: a generated scene's view.html is written before its summary.json
    info = {**_json(folder / "summary.json"), **_structure_source(folder / "structure.parquet")}
    if isinstance(info.get("layout_tiles"), list):  # a large scene: its map's frame, from its tiles' lowest corner
        scene = str(info.get("layout_scene"))
        return Frame(scene, f"map of {scene}", tuple(str(t) for t in info["layout_tiles"]))
    if "layout_tile" in info:  # a generated scene
        return None if info.get("condition") == "none" else _tile_frame(str(info["layout_tile"]), info.get("tile_path"))
    if "tile_id" in info and "scene_id" in info:  # an export: the tile's decodings (placed by its recorded corner)
        origin = info.get("origin_m")
        corner = tuple(float(v) for v in origin) if isinstance(origin, list) and len(origin) == 3 else None
        return Frame(str(info["scene_id"]), f"tile {info['tile_id']}", (str(info["tile_id"]),), corner)
    return None


def _with_corners(layers: list[ViewLayer]) -> list[ViewLayer]:
    """Frames completed from each other: a voxel tile (or a generated scene's record of its tile)
    places that tile's exports and generated scenes, and a large scene's map once all its tiles are
    in the view."""
    known = {f.tiles[0]: f for f in (layer.frame for layer in layers)
             if f is not None and f.corner is not None and len(f.tiles) == 1}  # fmt: skip
    out = []
    for layer in layers:
        f = layer.frame
        if f is not None and f.corner is None and f.tiles and all(t in known for t in f.tiles):
            from earthcrafter.latents.large_scene import map_corner  # the map frame's definition, one place

            corner = tuple(map_corner([known[t].corner for t in f.tiles]).tolist())
            layer = replace(layer, frame=replace(f, scene=f.scene or known[f.tiles[0]].scene, corner=corner))
        out.append(layer)
    return out


def _moved(layer: ViewLayer, target: Frame | None, mark: bool) -> ViewLayer:
    """``layer`` in ``target``'s frame (None: its scene's), else as stored with the reason as its
    note (``mark`` False: no layer's frame is known; the subtitle says so for all)."""
    f = layer.frame
    if f is None:
        return replace(layer, note="drawn as stored: its frame is unknown") if mark else layer
    if f.local == (target.local if target is not None else None):
        return layer
    to_scene = np.zeros(3) if f.local is None else f.corner
    from_scene = np.zeros(3) if target is None else target.corner
    if to_scene is None or from_scene is None:
        unknown = f.local if to_scene is None else target.local
        return replace(layer, note=f"drawn as stored: where {unknown} lies is unknown")
    if target is not None and f.scene != target.scene:  # each scene has its own frame
        return replace(layer, note=f"drawn as stored: in scene {f.scene}'s frame, not {target.scene}'s")
    shift = np.asarray(to_scene, np.float64) - np.asarray(from_scene, np.float64)
    return replace(layer, xyz=layer.xyz + shift, frame=target or Frame(f.scene))


def _frame_words(target: Frame | None, layers: list[ViewLayer]) -> str:
    """The subtitle's words for the frame the layers are in."""
    if target is not None:
        where = f" (corner at {_xyz(target.corner)} in scene {target.scene})" if target.corner is not None else ""
        words = f"frame: {target.local}, local metres{where}"
    else:
        scenes = sorted({layer.frame.scene for layer in layers if layer.frame is not None and not layer.note})
        if not scenes:  # nothing placed: the files say no frame, or none that two layers share
            noted = any(layer.note for layer in layers)
            return "frame: none shared, each layer as stored" if noted else "frame: as stored (the files do not say)"
        words = (f"frame: scene {scenes[0]}, local metres" if len(scenes) == 1
                 else f"frames: scenes {', '.join(scenes)}, each its own (not aligned)")  # fmt: skip
    if any(layer.note for layer in layers):
        words += "; layers marked 'drawn as stored' are not in it"
    return words


def _xyz(v) -> str:
    return "({:.2f}, {:.2f}, {:.2f})".format(*v)


def in_one_frame(layers: list[ViewLayer], frame: str = "auto") -> tuple[list[ViewLayer], str]:
    """``layers`` moved into one frame, and the words naming it. ``frame``: ``tile``, the local frame
    of the one tile (or large scene's map) the layers belong to, scene-frame layers moved into it;
    ``scene``, their scenes' frames, tile-frame layers moved to their tile's corner; ``auto``
    (default), ``tile`` when every layer whose frame is known is in that tile's frame, else
    ``scene``. A layer that cannot be moved is drawn as stored, and its note says why."""
    if frame not in FRAMES:
        raise ValueError(f"frame must be one of {', '.join(FRAMES)}, got {frame!r}")
    layers = _with_corners(layers)
    frames = [layer.frame for layer in layers if layer.frame is not None]
    local = {f.local for f in frames}
    if frame == "tile" and len(local - {None}) != 1:
        found = ", ".join(sorted(x for x in local if x)) or "none"
        raise ValueError(f"frame 'tile' needs the layers to belong to one tile (tile frames among them: {found})")
    target = None
    if frame == "tile" or (frame == "auto" and len(local) == 1 and None not in local):
        target = max((f for f in frames if f.local is not None), key=lambda f: f.corner is not None)
    moved = [_moved(layer, target, mark=bool(frames)) for layer in layers]
    return moved, _frame_words(target, moved)


# --------------------------------------------------------------------------- names

def _distinct_suffixes(paths: list[Path]) -> list[str]:
    """Each path's shortest end that no other (different) path shares: ``a/gaussians.ply`` and
    ``b/gaussians.ply`` beside ``c/voxels.ply``."""
    parts = [Path(p).resolve().parts for p in paths]
    out = []
    for own in parts:
        others = [q for q in parts if q != own]
        k = next((k for k in range(1, len(own)) if all(q[-k:] != own[-k:] for q in others)), len(own))
        out.append(Path(*own[-k:]).as_posix())
    return out


def _distinct_names(layers: list[ViewLayer]) -> list[ViewLayer]:
    """Layers of equal names (``gaussians`` of two scenes) named with the shortest end of their
    folders that tells them apart (``a/gaussians``, ``b/gaussians``)."""
    groups: dict[str, list[int]] = {}
    for i, layer in enumerate(layers):
        groups.setdefault(layer.name, []).append(i)
    layers = list(layers)
    for name, idx in groups.items():
        folders = [layers[i].folder for i in idx]
        if len(idx) < 2 or any(f is None for f in folders):
            continue
        for i, prefix in zip(idx, _distinct_suffixes(folders)):
            layers[i] = replace(layers[i], name=f"{prefix}/{name}")
    return layers


def layers_of(path: str | Path) -> list[ViewLayer]:
    """The layers of one file (see the module docstring), or of every viewable file directly inside
    a folder (``*.ply``, ``points.npz``, ``*.parquet``), each with its frame as the files beside it
    say (:func:`in_one_frame` brings them into one). Raises ValueError / FileNotFoundError
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
        return [replace(_ply_layer(path), frame=_folder_frame(path.parent), folder=path.parent)]
    if path.suffix.lower() == ".npz":  # the name says its folder already
        return [replace(_points_npz_layer(path), frame=_folder_frame(path.parent), folder=path.parent.parent)]
    if path.suffix.lower() == ".parquet":
        return [replace(_tile_layer(path), folder=path.parent)]
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


def view_figure(layers: list[ViewLayer], title: str = "", point_size: float = 2.0, frame: str = ""):
    """A plotly figure of ``layers`` (already within budget and in one frame, named by ``frame``)
    with true metric proportions, coordinates relative to the centre of all layers. Returns
    (figure, centre [3])."""
    import plotly.graph_objects as go

    if not layers:
        raise ValueError("nothing to view: no layers")
    lo = np.min([layer.xyz.min(0) for layer in layers if len(layer.xyz)] or [np.zeros(3)], axis=0)
    hi = np.max([layer.xyz.max(0) for layer in layers if len(layer.xyz)] or [np.zeros(3)], axis=0)
    centre = np.round((lo + hi) / 2, 2)
    traces = []
    for layer in layers:
        x, y, z = (layer.xyz - centre).astype(np.float32).T
        counted = f"{layer.count:,} {layer.noun}" + (f" of {layer.total:,}" if layer.total > layer.count else "")
        label = f"{layer.name} ({counted})" + (f" [{layer.note}]" if layer.note else "")
        if layer.faces is not None:
            face_rgb = layer.rgb[layer.faces].astype(np.float64).mean(1).round().astype(np.uint8)
            traces.append(go.Mesh3d(x=x, y=y, z=z, i=layer.faces[:, 0], j=layer.faces[:, 1], k=layer.faces[:, 2],
                                    facecolor=_hex(face_rgb), flatshading=True, name=label, showlegend=True,
                                    lighting=dict(ambient=0.55, diffuse=0.6, specular=0.05), hoverinfo="skip"))  # fmt: skip
        else:
            traces.append(go.Scatter3d(x=x, y=y, z=z, mode="markers", name=label, hoverinfo="skip",
                                       marker=dict(size=point_size, color=_hex(layer.rgb), line=dict(width=0))))  # fmt: skip
    shift = f"coordinates in metres relative to {_xyz(centre)}"
    shift = f"{frame}; {shift}" if frame else shift
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
    frame: str = "auto",
) -> dict:
    """Write the HTML view of ``paths`` (files or folders) to ``out`` atomically; returns a summary
    (layers with shown / total counts and a note when one is not in the view's frame, the frame's
    words, the coordinate centre, the file size). ``plotlyjs``: ``inline`` (self-contained, works
    offline), ``cdn`` (small file, needs the internet), or the path of a shared ``plotly.min.js``
    relative to the HTML file (see :func:`write_plotlyjs`). ``frame``: see :func:`in_one_frame`."""
    if frame not in FRAMES:  # before reading the files
        raise ValueError(f"frame must be one of {', '.join(FRAMES)}, got {frame!r}")
    layers = _distinct_names([layer for p in paths for layer in layers_of(p)])
    layers, words = in_one_frame([within_budget(layer, max_faces, max_points) for layer in layers], frame)
    title = title if title is not None else ", ".join(_distinct_suffixes([Path(p) for p in paths]))
    fig, centre = view_figure(layers, title, frame=words)
    include = True if plotlyjs == "inline" else plotlyjs
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.write_html(tmp, include_plotlyjs=include, full_html=True, config={"displaylogo": False})
    return {
        "path": str(out),
        "bytes": out.stat().st_size,
        "frame": words,
        "centre": centre.tolist(),
        "layers": [{"name": layer.name, "kind": "mesh" if layer.faces is not None else "points",
                    "shown": layer.count, "total": layer.total, **({"note": layer.note} if layer.note else {})}
                   for layer in layers],  # fmt: skip
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
