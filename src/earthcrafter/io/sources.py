"""One entry point for bringing user data in: ``import_source`` and ``import_to_scenes``.

A source spec (what a config names) is a mapping::

    {"kind": "las" | "mesh" | "frames", "path": "...", "scene_id": "optional", **importer options}

or a list of them, or ``{"sources": [...]}``.

Options are keyword arguments of the kind's importer: ``bind_options`` checks their names
against its signature and converts values to its annotated types (``"1000"`` -> 1000 for
``max_points``); ``check_source`` also runs the importer's cheap checks (files, headers, world
files, units) without reading the data, so a batch can be checked whole before any of it is written.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import typing
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path

from pydantic import ConfigDict, TypeAdapter, ValidationError
from tqdm.auto import tqdm

from earthcrafter.io.frames_import import check_frames, import_frames
from earthcrafter.io.import_common import DataImportError, check_scene_id, scene_id_from_path
from earthcrafter.io.imported_scene import write_imported_scene
from earthcrafter.io.las import check_las, import_las
from earthcrafter.io.mesh_import import check_mesh, import_mesh
from earthcrafter.io.scene import Scene

log = logging.getLogger(__name__)

IMPORTERS: dict[str, Callable[..., Scene]] = {"las": import_las, "mesh": import_mesh, "frames": import_frames}
CHECKS: dict[str, Callable[..., None]] = {"las": check_las, "mesh": check_mesh, "frames": check_frames}
ON_ERROR = ("raise", "skip")


def _check_kind(kind: str) -> None:
    if kind not in IMPORTERS:
        raise ValueError(f"source kind {kind!r}: expected one of {sorted(IMPORTERS)}")


@lru_cache(maxsize=None)
def _option_types(kind: str) -> dict[str, TypeAdapter]:
    """Keyword parameters of the kind's importer -> a pydantic adapter for its annotated type."""
    importer = IMPORTERS[kind]
    hints = typing.get_type_hints(importer)
    params = list(inspect.signature(importer).parameters.values())[1:]  # the first is the path
    config = ConfigDict(arbitrary_types_allowed=True)
    return {p.name: TypeAdapter(hints.get(p.name, typing.Any), config=config) for p in params}


def bind_options(kind: str, path: str | Path, options: Mapping) -> dict:
    """``options`` checked against the ``kind`` importer's keyword arguments and converted to their
    annotated types. ``ValueError`` naming the file and the option otherwise."""
    _check_kind(kind)
    types = _option_types(kind)
    unknown = [k for k in options if k not in types]
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(str(name), list(types), n=1)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ValueError(
            f"{path}: unknown option(s) {', '.join(hints)} for kind {kind!r}; "
            f"the options are {sorted(types)} (see docs/data_import.md)"
        )
    out = {}
    for name, value in options.items():
        try:
            out[name] = types[name].validate_python(value)
        except ValidationError as err:
            reason = "; ".join(e["msg"] for e in err.errors()[:3])
            raise ValueError(f"{path}: option {name}={value!r}: {reason}") from None
    return out


def import_source(kind: str, path: str | Path, **options) -> Scene:
    """Import one source of ``kind`` ("las", "mesh" or "frames"); ``options`` go to its importer.

    The scene id is ``options["scene_id"]`` or derived from the file or folder name.
    """
    options = bind_options(kind, path, options)
    if options.get("scene_id") is None:
        options["scene_id"] = scene_id_from_path(path)
    _checked_scene_id(path, options["scene_id"])
    return IMPORTERS[kind](path, **options)


def check_source(kind: str, path: str | Path, **options) -> None:
    """Everything about one source that can be checked without importing it: the options (as
    ``bind_options``), the scene id, then the kind's checks (``check_las``, ``check_mesh``,
    ``check_frames``: files exist and are readable, headers, world files, units).

    Raises ``DataImportError`` for bad input, ``ValueError`` for bad options, as the import would.
    """
    options = bind_options(kind, path, options)
    if options.get("scene_id") is not None:
        _checked_scene_id(path, options["scene_id"])
    CHECKS[kind](path, **options)


def check_sources(specs: Sequence[Mapping], what: str = "sources") -> None:
    """``check_source`` on every spec (``{"kind", "path", **options}``); one ``DataImportError``
    listing every failing spec (by index and file), or ``ValueError`` if any is an option error."""
    problems, option_errors = [], False
    for i, spec in enumerate(specs):
        options = {k: v for k, v in spec.items() if k not in ("kind", "path")}
        try:
            check_source(spec["kind"], spec["path"], **options)
        except ValueError as err:
            option_errors |= not isinstance(err, DataImportError)
            problems.append(f"{what}[{i}] ({spec['kind']} {spec['path']}): {err}")
    if problems:
        error = ValueError if option_errors else DataImportError
        raise error(f"{what}: {len(problems)} of {len(specs)} cannot be imported:\n  " + "\n  ".join(problems))


def _checked_scene_id(path, scene_id: str) -> str:
    try:
        return check_scene_id(scene_id)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


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

    Every source is checked first (``check_source``), so bad options, missing files, unreadable
    headers or world files and unit conflicts fail before anything is written. ``on_error="skip"``
    instead skips a source that fails its check or its import (``DataImportError``), logs each with
    its reason, and ends with a warning listing every skipped source; option errors always raise.
    Each scene folder appears whole or not at all. Returns the written scene folders.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error={on_error!r}: expected one of {ON_ERROR}")
    specs = _source_list(source_spec)
    for spec in specs:  # option names and types: always an error, before anything is read
        bind_options(spec["kind"], spec["path"], {k: v for k, v in spec.items() if k not in ("kind", "path")})
    if on_error == "raise":
        check_sources(specs)
    written, skipped = [], []
    for spec in tqdm(specs, desc="import sources", unit="source", disable=len(specs) < 2):
        try:
            if on_error == "skip":
                check_source(**spec)
            scene = import_source(**spec)
        except DataImportError as err:
            if on_error == "raise":
                raise
            skipped.append(str(err))
            log.error("skipped source %s: %s", spec["path"], err)
            continue
        written.append(write_imported_scene(out_root, scene))
        log.info("wrote scene %s", written[-1])
    if skipped:
        log.warning(
            "imported %d of %d sources; skipped %d:\n  %s", len(written), len(specs), len(skipped), "\n  ".join(skipped)
        )
    return written
