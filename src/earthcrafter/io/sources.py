"""One entry point for bringing user data in: ``import_source`` and ``import_to_scenes``.

A source spec (what a config names) is a mapping::

    {"kind": "las" | "mesh" | "frames", "path": "...", "scene_id": "optional", **importer options}

or a list of them, or ``{"sources": [...]}``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from tqdm.auto import tqdm

from earthcrafter.io.frames_import import import_frames
from earthcrafter.io.import_common import DataImportError, scene_id_from_path
from earthcrafter.io.imported_scene import write_imported_scene
from earthcrafter.io.las import import_las
from earthcrafter.io.mesh_import import import_mesh
from earthcrafter.io.scene import Scene

log = logging.getLogger(__name__)

IMPORTERS: dict[str, Callable[..., Scene]] = {"las": import_las, "mesh": import_mesh, "frames": import_frames}
ON_ERROR = ("raise", "skip")


def import_source(kind: str, path: str | Path, **options) -> Scene:
    """Import one source of ``kind`` ("las", "mesh" or "frames"); ``options`` go to its importer.

    The scene id is ``options["scene_id"]`` or derived from the file or folder name.
    """
    if kind not in IMPORTERS:
        raise ValueError(f"source kind {kind!r}: expected one of {sorted(IMPORTERS)}")
    options.setdefault("scene_id", scene_id_from_path(path))
    return IMPORTERS[kind](path, **options)


def _source_list(source_spec) -> list[dict]:
    if isinstance(source_spec, Mapping) and "sources" in source_spec:
        source_spec = source_spec["sources"]
    specs = [source_spec] if isinstance(source_spec, Mapping) else source_spec
    if not isinstance(specs, Sequence) or isinstance(specs, str) or not specs:
        raise ValueError(f"source spec must be a mapping or a non-empty list of mappings, got {source_spec!r}")
    out = []
    for i, spec in enumerate(specs):
        if not isinstance(spec, Mapping) or "kind" not in spec or "path" not in spec:
            raise ValueError(f"source #{i}: expected a mapping with 'kind' and 'path', got {spec!r}")
        spec = dict(spec)
        spec.setdefault("scene_id", scene_id_from_path(spec["path"]))
        out.append(spec)
    ids = [s["scene_id"] for s in out]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ValueError(f"sources share scene ids {repeated}; give each a distinct 'scene_id'")
    return out


def import_to_scenes(source_spec, out_root: str | Path, *, on_error: str = "raise") -> list[Path]:
    """Import every source in ``source_spec`` and write each scene atomically under ``out_root``.

    ``on_error="skip"`` logs and counts a source that fails to import (``DataImportError``)
    and goes on; the default raises. Each scene folder appears whole or not at all.
    Returns the written scene folders.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error={on_error!r}: expected one of {ON_ERROR}")
    specs = _source_list(source_spec)
    written, failed = [], []
    for spec in tqdm(specs, desc="import sources", unit="source", disable=len(specs) < 2):
        options = {k: v for k, v in spec.items() if k not in ("kind", "path")}
        try:
            scene = import_source(spec["kind"], spec["path"], **options)
        except DataImportError as err:
            if on_error == "raise":
                raise
            failed.append(str(err))
            log.error("skipped source %s: %s", spec["path"], err)
            continue
        written.append(write_imported_scene(out_root, scene))
        log.info("wrote scene %s", written[-1])
    if failed:
        log.warning("imported %d of %d sources; %d skipped", len(written), len(specs), len(failed))
    return written
