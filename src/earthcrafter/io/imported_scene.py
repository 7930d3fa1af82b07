"""An imported scene and the optional files it adds to the scene folder.

Beside the standard layout of ``earthcrafter.io.scene``, an imported scene may carry::

    orthophoto.png         uint8 RGB, the orthophoto cropped to the scene (LiDAR sources); RGBA when
                           some pixels hold no image (transparent or nodata in the source): alpha 0

described by ``metadata["orthophoto"]`` (set when the file is written, and dropped when a scene
without an orthophoto is written, so a folder never names a file it lacks)::

    {"file": "orthophoto.png", "width": W, "height": H,
     "affine_local_m": [[A, B, C], [D, E, F]],   # (x, y) local metres of pixel (col, row) centre
     "pixel_size_m": [sx, sy], "source_file": "..."}

Everything is written in one atomic step with the rest of the scene.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from earthcrafter.io.atomic import atomic_path
from earthcrafter.io.orthophoto import Orthophoto
from earthcrafter.io.scene import Scene, read_metadata, read_scene, scene_folder, write_scene

ORTHOPHOTO_FILE = "orthophoto.png"


@dataclass
class ImportedScene(Scene):
    """A ``Scene`` plus the orthophoto crop (local metres) that came with it, if any."""

    orthophoto: Orthophoto | None = None


def orthophoto_metadata(ortho: Orthophoto) -> dict:
    return {
        "file": ORTHOPHOTO_FILE,
        "width": ortho.width,
        "height": ortho.height,
        "affine_local_m": ortho.affine.tolist(),
        "pixel_size_m": list(ortho.pixel_size),
        "convention": "(x, y) = affine @ (col, row, 1) at pixel centres, 0-based, local metres",
        "source_file": ortho.source,
    }


def write_imported_scene(root: str | Path, scene: Scene) -> Path:
    """Write ``scene`` to ``root/<scene_id>`` atomically, with its orthophoto when it has one.

    The scene is staged in a temporary sibling folder by ``write_scene``; the extra file
    joins it there; one rename publishes the lot.
    """
    ortho = getattr(scene, "orthophoto", None)
    if ortho is None:
        # metadata copied from an imported scene (a later stage's output) must not name its file
        meta = {k: v for k, v in scene.metadata.items() if k != "orthophoto"}
        return write_scene(root, replace(scene, metadata=meta))
    scene = replace(scene, metadata={**scene.metadata, "orthophoto": orthophoto_metadata(ortho)})
    out = scene_folder(root, scene.scene_id)
    with atomic_path(out) as tmp:
        staged = write_scene(tmp.parent / ".staging", scene)
        with atomic_path(staged / ORTHOPHOTO_FILE) as png:
            image = ortho.image if ortho.valid is None else np.dstack([ortho.image, ortho.valid * np.uint8(255)])
            Image.fromarray(image).save(png, format="PNG")
        os.replace(staged, tmp)
    return out


def read_imported_scene(scene_dir: str | Path, load_frames: bool = True) -> Scene:
    """``read_scene``, as an :class:`ImportedScene` with its orthophoto when the folder has one."""
    scene = read_scene(scene_dir, load_frames)
    ortho = read_scene_orthophoto(scene_dir)
    if ortho is None:
        return scene
    return ImportedScene(scene.scene_id, scene.metadata, scene.mesh, scene.points, scene.frames, orthophoto=ortho)


def read_scene_orthophoto(scene_dir: str | Path) -> Orthophoto | None:
    """The scene's orthophoto in local metres, or None when it has none."""
    scene_dir = Path(scene_dir)
    info = read_metadata(scene_dir).get("orthophoto")
    if not info:
        return None
    path = scene_dir / info["file"]
    if not path.is_file():
        raise FileNotFoundError(f"{scene_dir}: metadata names orthophoto {info['file']!r} but the file is missing")
    with Image.open(path) as im:
        rgba = np.asarray(im.convert("RGBA"))
    valid = rgba[..., 3] > 0  # all true for an RGB file: Orthophoto keeps None then
    return Orthophoto(rgba[..., :3], np.asarray(info["affine_local_m"]), str(path), valid=valid)
