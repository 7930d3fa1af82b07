"""One entry point for bringing user data in: ``import_source`` and ``import_to_scenes``.

A source spec (what a config names) is a mapping::

    {"kind": "las" | "mesh" | "frames", "path": "...", "scene_id": "optional", **importer options}

or a list of them, or ``{"sources": [...]}``.

Options are keyword arguments of the kind's importer: ``bind_options`` checks their names
against its signature and converts values to its annotated types (``"1000"`` -> 1000 for
``max_points``); ``check_source`` also runs the importer's cheap checks (files, headers, world
files, units) without reading the data, so a batch can be checked whole before any of it is written.
``check_distinct_sources`` refuses a batch that imports the same file twice and warns about LiDAR
surveys whose header bounds overlap: one survey as two scenes could be split across training and validation.
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import logging
import typing
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import laspy
import numpy as np
from pydantic import ConfigDict, TypeAdapter, ValidationError
from tqdm.auto import tqdm

from earthcrafter.io.frames_import import CAMERAS_FILE, check_frames, import_frames
from earthcrafter.io.import_common import (
    DataImportError,
    check_scene_id,
    close_name_hint,
    record_unlabeled_share,
    scene_id_from_path,
)
from earthcrafter.io.imported_scene import write_imported_scene
from earthcrafter.io.las import check_las, import_las, laspy_log_folded
from earthcrafter.io.mesh_import import check_mesh, import_mesh
from earthcrafter.io.scene import Scene

log = logging.getLogger(__name__)

IMPORTERS: dict[str, Callable[..., Scene]] = {"las": import_las, "mesh": import_mesh, "frames": import_frames}
CHECKS: dict[str, Callable[..., None]] = {"las": check_las, "mesh": check_mesh, "frames": check_frames}
ON_ERROR = ("raise", "skip")
# Keys of a source spec that are not importer options, though the importers take scene_id too.
SPEC_KEYS = ("kind", "path", "scene_id")
# Same-size inputs are compared by a hash of their first block before their whole content:
# LAS files can be GBs, and two different surveys of the same size differ in their header.
HASH_BLOCK_BYTES = 1 << 20


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
        user_options = sorted(k for k in types if k not in SPEC_KEYS)  # scene_id goes next to kind and path
        hints = [close_name_hint(name, user_options) for name in unknown]
        raise ValueError(
            f"{path}: unknown option(s) {', '.join(hints)} for kind {kind!r}; "
            f"the options are {user_options} (see docs/data_import.md)"
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

    The scene id is ``options["scene_id"]`` or derived from the file or folder name. The share of
    unlabeled points (faces, pixels) is recorded as ``metadata["unlabeled_share"]``, with a warning
    when it is over half.
    """
    options = bind_options(kind, path, options)
    if options.get("scene_id") is None:
        options["scene_id"] = scene_id_from_path(path)
    _checked_scene_id(path, options["scene_id"])
    scene = IMPORTERS[kind](path, **options)
    scene.metadata["unlabeled_share"] = record_unlabeled_share(path, scene.scene_id, scene.metadata)
    return scene


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
    listing every failing spec (by index and file), or ``ValueError`` if any is an option error.
    Then ``check_distinct_sources``: the same file imported twice is a ``ValueError``."""
    problems, option_errors = [], False
    for i, spec in enumerate(specs):
        try:
            check_source(spec["kind"], spec["path"], **_options(spec))
        except ValueError as err:
            option_errors |= not isinstance(err, DataImportError)
            problems.append(f"{describe_source(what, i, spec)}: {err}")
    if problems:
        error = ValueError if option_errors else DataImportError
        raise error(f"{what}: {len(problems)} of {len(specs)} cannot be imported:\n  " + "\n  ".join(problems))
    check_distinct_sources(specs, what)


def describe_source(what: str, index: int, spec: Mapping) -> str:
    """``what[index] (kind path, scene id)``: how messages name a source of a batch."""
    scene = spec.get("scene_id")
    if scene is None:
        try:
            scene = scene_id_from_path(spec["path"])
        except ValueError:
            scene = "?"
    return f"{what}[{index}] ({spec['kind']} {spec['path']}, scene {scene})"


def _options(spec: Mapping) -> dict:
    return {k: v for k, v in spec.items() if k not in ("kind", "path")}


# --------------------------------------------------------------------------- one survey, two scenes


def check_distinct_sources(specs: Sequence[Mapping], what: str = "sources") -> None:
    """Refuse sources whose input files are identical; warn about LiDAR sources whose header bounds overlap.

    Scenes are split between training and validation one by one, so one survey imported as two
    scenes (a copy under another name, or the same path twice) can put the same ground on both
    sides. Input files are compared by size, then by content hash among same-size files only; two
    LAS sources reading one file with disjoint ``crop`` boxes are two parts of it, and allowed.
    Files that cannot be read are left to their own checks. ``ValueError`` names every pair.
    """
    files = [_input_file(spec) for spec in specs]
    pairs = [(i, j) for i, j in _identical_files(files) if _boxes_overlap(_crop(specs[i]), _crop(specs[j]))]
    if pairs:
        lines = [
            f"{describe_source(what, i, specs[i])} and {describe_source(what, j, specs[j])}: "
            f"identical {'camera files' if specs[i]['kind'] == 'frames' else 'files'} "
            f"({files[i].stat().st_size:,} bytes)"
            for i, j in pairs
        ]
        raise ValueError(
            f"{what}: {len(pairs)} pair(s) of sources import the same data, which would become two scenes "
            "(one could land in training, the other in validation):\n  " + "\n  ".join(lines)
            + "\nremove one entry of each pair (to import two parts of one survey, give each a crop=, disjoint)"
        )
    _warn_overlapping_surveys(specs, what)


def _input_file(spec: Mapping) -> Path:
    """The file whose content makes the scene: the LAS or mesh file, a frames folder's camera file."""
    path = Path(spec["path"])
    return path / spec.get("cameras_file", CAMERAS_FILE) if spec["kind"] == "frames" else path


def _identical_files(files: Sequence[Path]) -> list[tuple[int, int]]:
    """Index pairs (i < j) of files with the same content. A file is read only when another has its
    size, and read whole only when their first blocks agree; hard links and repeated paths are not read."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, f in enumerate(files):
        try:
            stat = f.stat()
        except OSError:  # missing: its own check says so
            continue
        if f.is_file():
            groups[(stat.st_size,)].append(i)
    digests: dict[tuple, str] = {}

    def digest(i: int, whole: bool) -> str:
        stat = files[i].stat()
        key = (stat.st_dev, stat.st_ino, whole)  # the same file under two names is hashed once
        if key not in digests:
            digests[key] = _file_digest(files[i], whole)
        return digests[key]

    for whole in (False, True):
        refined: dict[tuple, list[int]] = defaultdict(list)
        for key, members in groups.items():
            if len(members) > 1:
                for i in members:
                    try:
                        refined[(*key, digest(i, whole))].append(i)
                    except OSError:  # unreadable: compared with nothing, its own check reports it
                        continue
        groups = refined
    return sorted(pair for members in groups.values() if len(members) > 1
                  for pair in itertools.combinations(members, 2))


def _file_digest(path: Path, whole: bool) -> str:
    h = hashlib.blake2b(digest_size=20)
    with open(path, "rb") as f:
        while block := f.read(HASH_BLOCK_BYTES):
            h.update(block)
            if not whole:
                break
    return h.hexdigest()


def _crop(spec: Mapping) -> np.ndarray | None:
    crop = spec.get("crop") if spec["kind"] == "las" else None
    return None if crop is None else np.asarray(crop, dtype=np.float64)


def _boxes_overlap(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    """Whether two (xmin, ymin, xmax, ymax) boxes share area; None is unbounded."""
    if a is None or b is None:
        return True
    return bool(min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1]))


def _warn_overlapping_surveys(specs: Sequence[Mapping], what: str) -> None:
    """One warning listing LAS sources in the same CRS and units whose header bounds (within their
    crop) overlap. Meshes and frames have no bounds readable without loading them: not compared."""
    extents = {i: _las_extent(spec) for i, spec in enumerate(specs) if spec["kind"] == "las"}
    extents = {i: e for i, e in extents.items() if e is not None}
    lines = []
    for (i, (frame_i, a)), (j, (frame_j, b)) in itertools.combinations(extents.items(), 2):
        if frame_i != frame_j or not _boxes_overlap(a, b):
            continue
        lo, hi = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
        smaller = min(np.prod(a[2:] - a[:2]), np.prod(b[2:] - b[:2]))
        lines.append(
            f"{describe_source(what, i, specs[i])} and {describe_source(what, j, specs[j])}: "
            f"x {lo[0]:.1f}..{hi[0]:.1f}, y {lo[1]:.1f}..{hi[1]:.1f} "
            f"({100 * np.prod(hi - lo) / smaller:.0f} % of the smaller)"
        )
    if lines:
        log.warning(
            "%s: %d pair(s) of LiDAR sources overlap (header bounds, same CRS and units): the same ground in two "
            "scenes can land in training and in validation; crop them apart (crop=) if they are one survey:\n  %s",
            what, len(lines), "\n  ".join(lines),
        )


def _las_extent(spec: Mapping) -> tuple[tuple, np.ndarray] | None:
    """(CRS and units, header box within the crop) of a LAS source: the header alone is read.
    None when the header does not read (its check reports that) or the crop leaves nothing."""
    try:
        with laspy_log_folded(spec["path"]), laspy.open(spec["path"]) as reader:
            header = reader.header
            crs = header.parse_crs()
    except Exception:  # an unreadable header or CRS: compared with nothing
        return None
    frame = (None if crs is None else crs.to_wkt(), spec.get("units"), spec.get("vertical_units"))
    box = np.concatenate([np.asarray(header.mins)[:2], np.asarray(header.maxs)[:2]]).astype(np.float64)
    crop = _crop(spec)
    if crop is not None:
        box = np.concatenate([np.maximum(box[:2], crop[:2]), np.minimum(box[2:], crop[2:])])
    return (frame, box) if (box[2:] > box[:2]).all() else None


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
    its reason, and ends with a warning listing every skipped source (index, kind, file, scene id
    and reason); option errors, and two sources reading identical files (``check_distinct_sources``),
    always raise. Each scene folder appears whole or not at all. Returns the written scene folders.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error={on_error!r}: expected one of {ON_ERROR}")
    specs = _source_list(source_spec)
    for spec in specs:  # option names and types: always an error, before anything is read
        bind_options(spec["kind"], spec["path"], _options(spec))
    if on_error == "raise":
        check_sources(specs)
    else:  # one survey twice is a mistake in the list, not in a source: it raises here too
        check_distinct_sources(specs)
    written, skipped = [], []
    for i, spec in enumerate(tqdm(specs, desc="import sources", unit="source", disable=len(specs) < 2)):
        try:
            if on_error == "skip":
                check_source(**spec)
            scene = import_source(**spec)
        except DataImportError as err:
            if on_error == "raise":
                raise
            # the error names the file that failed, maybe an orthophoto: say which source it was
            skipped.append(f"{describe_source('sources', i, spec)}: {err}")
            log.error("skipped %s", skipped[-1])
            continue
        written.append(write_imported_scene(out_root, scene))
        log.info("wrote scene %s", written[-1])
    if skipped:
        log.warning(
            "imported %d of %d sources; skipped %d:\n  %s", len(written), len(specs), len(skipped), "\n  ".join(skipped)
        )
    return written
