"""The earthcrafter command line: inspect what the pipelines produced, and generate from the trained models.

    earthcrafter info [--root .]      what each data layer holds, and the MLflow runs
    earthcrafter export TILE_ID       decode a tile's cached latents: voxel meshes, Gaussian PLY, orbit
    earthcrafter generate [--tiles ID ...] [--unconditional] [--seed S] [--cfg 3]
                                      new scenes from the trained flows (voxels, Gaussian PLY, orbit)
    earthcrafter generate-large (--scene ID | --layout MAP.png --voxel-size M) [--stride N]
                                      one scene of a whole semantic map, by sliding windows
    earthcrafter view PATH ...        an interactive HTML view (browser) of scenes, PLY files, tiles
    earthcrafter dry-run [--env paper] [--models ...] [--batch B] [--voxels N]
                                      a few training steps of every model of a configuration on
                                      synthetic tiles: does it build, train and fit (also under torchrun)
    earthcrafter colmap-to-frames MODEL_DIR IMAGES_DIR OUT_DIR [--depth-dir D] [--units U] [--origin X Y Z]
                                      a COLMAP reconstruction as a posed-frames folder (import kind: frames)

Every command logs what it skips or chooses on stderr (-q / --quiet: warnings only). A request that cannot
be done (a bad option, a missing file, models not trained yet) ends with one line saying why, and exit status 2.
"""

# (The module is not named cli.py so Kedro does not mistake it for a project CLI plugin.)

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

# (folder, what its entries are, which entries count: "dirs" or a file pattern; loose files beside scene
# folders, such as a contact sheet or plotly.min.js, and a voxel tile's views file are not entries)
LAYERS = (
    ("01_raw/scenes", "raw scenes", "dirs"),
    ("02_intermediate/meshes", "meshed scenes", "dirs"),
    ("03_primary/featured", "featured scenes", "dirs"),
    ("05_model_input/voxels", "voxel tiles", "*.parquet"),
    ("05_model_input/latents/struct", "structure latents", "*.parquet"),
    ("05_model_input/latents/tex", "texture latents", "*.parquet"),
    ("06_models", "models", "dirs"),
    ("07_model_output/reconstructions", "exported reconstructions", "dirs"),
    ("07_model_output/generated", "generated scenes", "dirs"),
    ("07_model_output/samples", "sampled scenes", "dirs"),  # earthcrafter generate's default
    ("08_reporting", "reports", "dirs"),
)
# generation parameters the generate commands set, by the flag that sets them
FLAGS = {"num_scenes": "--num", "tile_ids": "--tiles", "layouts_split": "--split", "seed": "--seed",
         "cfg_strength": "--cfg", "steps": "--steps", "frames": "--frames", "size": "--size", "large_size": "--size",
         "device": "--device", "out_dir": "--out", "large_stride_cells": "--stride", "large_resample": "--resample",
         "condition": "--condition"}  # fmt: skip


def _count(path: Path, entries: str) -> tuple[int, int]:
    """(entries directly inside: sub-folders for ``entries`` = "dirs", else files matching it; total bytes)."""
    if not path.is_dir():
        return 0, 0
    visible = [p for p in path.iterdir() if not p.name.startswith(".")]  # atomic writes' temporaries are hidden
    n = sum(p.is_dir() for p in visible) if entries == "dirs" else sum(p.match(entries) for p in visible)
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return n, size


def _fail(args: argparse.Namespace, why: str) -> int:
    """A request that cannot be done: one line on stderr naming the command, exit status 2."""
    print(f"earthcrafter {args.command}: {why}", file=sys.stderr)
    return 2


def _env_problem(conf: Path, env: str) -> str | None:
    """Why ``env`` is not a configuration environment under ``conf`` (None: it is). base and local are
    Kedro's own; local may be missing (a fresh checkout) and then changes nothing."""
    if env in ("base", "local") or (conf / env).is_dir():
        return None
    envs = sorted(p.name for p in conf.iterdir() if p.is_dir() and not p.name.startswith(".")) if conf.is_dir() else []
    return f"no environment {conf / env} (environments: {', '.join(envs) or 'none'})"


def _device_problem(device: str, origin: str) -> str | None:
    """Why ``device`` (set by ``origin``: a flag, a configuration key) cannot run here (None: it can),
    asked before any model is loaded: the training code's RuntimeError would end the command in a traceback."""
    import re

    import torch

    from earthcrafter.training.distributed import DEVICE_PATTERN

    if not re.fullmatch(DEVICE_PATTERN, device):
        return f"{origin} must be auto, cpu, cuda or cuda:N, got {device!r}"
    if not device.startswith("cuda"):
        return None
    if not torch.cuda.is_available():
        cuda = torch.version.cuda
        why = "built without CUDA" if cuda is None else f"built for CUDA {cuda}, no driver or GPU found"
        return f"device={device!r} requested by {origin} but CUDA is not available (torch {torch.__version__}, {why})"
    if ":" in device and int(device.split(":")[1]) >= torch.cuda.device_count():
        return f"device={device!r} requested by {origin} but this machine has {torch.cuda.device_count()} GPU(s)"
    return None


def cmd_info(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    root = Path(args.root)
    if not (root / "data").is_dir():
        why = "no such folder" if not root.exists() else "no data/ folder in it"
        return _fail(args, f"{root} is not an earthcrafter project ({why}): run from the project root or pass --root")
    console = Console()
    table = Table(title="earthcrafter data")
    table.add_column("layer")
    table.add_column("path")
    table.add_column("entries", justify="right")
    table.add_column("size", justify="right")
    for rel, label, entries in LAYERS:
        n, size = _count(root / "data" / rel, entries)
        table.add_row(label, f"data/{rel}", str(n), f"{size / 1e6:.1f} MB")
    console.print(table)
    for metrics in sorted((root / "data" / "08_reporting").glob("*/metrics.json")):
        console.print(f"[bold]{metrics.parent.name}[/bold] {json.loads(metrics.read_text())}")
    db = root / "mlflow.db"
    if db.is_file():
        try:
            import mlflow

            mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{db.resolve()}"))
            runs = mlflow.search_runs(search_all_experiments=True, max_results=1000)
            console.print(f"MLflow: {len(runs)} run(s) in {db} — view with `make ui` (mlflow ui --backend-store-uri sqlite:///mlflow.db)")
        except Exception as e:  # a broken store must not hide the data summary
            console.print(f"MLflow store {db}: unreadable ({e})")
    report = root / "data" / "08_reporting" / "evaluation" / "report.html"
    if report.is_file():
        console.print(f"Report of every stage: {report} (open it in a browser)")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import pandas as pd

    from earthcrafter.latents.export import MIN_SIZE, export_tile

    root = Path(args.root)
    for flag, value, least in (("--frames", args.frames, 0), ("--size", args.size, MIN_SIZE)):
        if value < least:  # named by their flags, before any file is read
            return _fail(args, f"{flag} must be at least {least}, got {value}")
    manifest = root / "data" / "05_model_input" / "latents_manifest.parquet"
    if not manifest.is_file():
        return _fail(args, f"no latent manifest at {manifest}: run `kedro run --pipelines=cache_latents` first")
    try:
        table = pd.read_parquet(manifest)
        rows = table[table["tile_id"] == args.tile_id]
        if rows.empty:
            shown = ", ".join(table["tile_id"].head(5))
            return _fail(args, f"tile {args.tile_id!r} is not in {manifest} ({len(table)} tiles, e.g. {shown})")
        out = Path(args.out) if args.out else root / "data" / "07_model_output" / "reconstructions" / args.tile_id
        summary = export_tile(rows.iloc[0], out, root=root, frames=args.frames, size=args.size)
    except (ValueError, FileNotFoundError) as e:  # changed or missing weights, unreadable files, a foreign --out folder
        return _fail(args, str(e))
    print(json.dumps({k: v for k, v in summary.items() if not isinstance(v, dict)}, indent=2))
    print(f"written to {out}")
    return 0


def _generation_inputs(args: argparse.Namespace, overrides: dict):
    """(latent manifest with tile paths under the root, latent statistics, GenerationConfig) of the
    project's generation parameters (conf/base, then ``args.env``) with ``overrides``; or an exit
    code after printing why not."""
    import pandas as pd
    import yaml
    from pydantic import ValidationError

    from earthcrafter.latents.generate import GenerationConfig

    root = Path(args.root)
    latents = root / "data" / "05_model_input"
    manifest, stats = latents / "latents_manifest.parquet", latents / "latents_stats.json"
    for path in (manifest, stats):
        if not path.is_file():
            return _fail(args, f"no {path}: run `kedro run --pipelines=cache_latents` (and the flows' training) first")
    problem = _env_problem(root / "conf", args.env)
    if problem:
        return _fail(args, problem)
    params, sources = {}, {}
    for env in ("base", args.env):  # the project's generation parameters, then the chosen environment's
        path = root / "conf" / env / "parameters_generation.yml"
        if path.is_file():  # an environment without the file keeps the base values
            values = (yaml.safe_load(path.read_text()) or {}).get("generation", {})
            params.update(values)
            sources.update(dict.fromkeys(values, str(path.relative_to(root))))
    set_here = {k: v for k, v in overrides.items() if v is not None}
    params.update(set_here)
    for key in ("structfm_dir", "texfm_dir", "structvae_path", "texvae_path"):  # relative to the project root,
        value = params.get(key, GenerationConfig.model_fields[key].default)  # the defaults too (not to the cwd)
        if not Path(value).is_absolute():
            params[key] = str(root / value)
    try:
        cfg = GenerationConfig.model_validate(params)
    except ValidationError as e:
        return _fail(args, _parameter_errors(e, set_here.keys(), sources))
    origin = lambda key: _origin(key, key in set_here, sources)  # noqa: E731
    problem = _device_problem(cfg.device, origin("device"))  # the seed's range: GenerationConfig checks it
    if problem:
        return _fail(args, problem)
    table = pd.read_parquet(manifest).assign(tile_path=lambda d: [str(root / p) for p in d["tile_path"]])
    return table, json.loads(stats.read_text()), cfg


def _origin(key: str, by_flag: bool, sources: dict[str, str]) -> str:
    """What set a generation parameter: the flag (when the command line did), else its key and file."""
    if by_flag and key in FLAGS:
        return FLAGS[key]
    return f"generation.{key}" + (f" ({sources[key]})" if key in sources else "")


def _parameter_errors(e, set_here, sources: dict[str, str]) -> str:
    """A GenerationConfig validation error as one line, each problem named by what set the value."""
    problems = []
    for err in e.errors():
        msg = err["msg"].removeprefix("Value error, ")
        if not err["loc"]:  # a check across parameters: its message names them
            problems.append(msg)
            continue
        key = str(err["loc"][0])
        field = ".".join(map(str, err["loc"][1:]))  # an item of a list parameter
        origin = _origin(key, key in set_here, sources) + (f" [{field}]" if field else "")
        value = f"={err['input']}" if origin.startswith("--") else f" = {err['input']!r}"  # as typed: --num=0
        problems.append(f"{origin}{value}: {msg}")
    return "; ".join(problems)


def _common_overrides(args: argparse.Namespace) -> dict:
    return {"seed": args.seed, "cfg_strength": args.cfg, "steps": args.steps, "frames": args.frames,
            "mlflow": getattr(args, "mlflow", False), "device": args.device,
            "condition": "none" if args.unconditional else getattr(args, "condition", None)}  # fmt: skip


def cmd_generate(args: argparse.Namespace) -> int:
    from earthcrafter.io.atomic import atomic_path
    from earthcrafter.latents.generate import generate_scenes

    root = Path(args.root)
    inputs = _generation_inputs(args, {**_common_overrides(args), "tile_ids": args.tiles or None,
                                       "layouts_split": args.split, "num_scenes": args.num, "size": args.size,
                                       "large_scenes": [],
                                       "out_dir": args.out or str(root / "data" / "07_model_output" / "samples")})  # fmt: skip
    if isinstance(inputs, int):
        return inputs
    manifest, stats, cfg = inputs
    try:
        table, _ = generate_scenes(manifest, stats, cfg)
    except (ValueError, FileNotFoundError) as e:  # bad tile ids, models not trained yet
        return _fail(args, str(e))
    with atomic_path(Path(cfg.out_dir) / "manifest.parquet") as tmp:
        table.to_parquet(tmp)
    print(table[["scene_id", "layout_tile", "seed", "voxels", "layout_tile_iou"]].to_string(index=False))
    print(f"written to {cfg.out_dir} (per scene: voxels.ply, gaussians.ply, view.html, orbit/, preview.png)")
    return 0


def cmd_generate_large(args: argparse.Namespace) -> int:
    from earthcrafter.latents.generate import generate_large_scenes, load_generators
    from earthcrafter.latents.large_scene import (
        cell_layout,
        class_raster_from_image,
        generate_large_scene,
        write_large_scene,
    )
    from earthcrafter.training.distributed import local_device

    root = Path(args.root)
    if (args.scene is None) == (args.layout is None):
        return _fail(args, "give one of --scene ID or --layout MAP.png")
    if args.layout is not None and not (args.voxel_size and args.voxel_size > 0):
        return _fail(args, "--layout needs --voxel-size (metres per map pixel, the tiles' voxel size)")
    name = f"large_{args.scene}" if args.scene else f"large_{Path(args.layout).stem}"
    out_dir = Path(args.out) if args.out else root / "data" / "07_model_output" / "samples"
    inputs = _generation_inputs(args, {**_common_overrides(args), "condition": "none" if args.unconditional else "layout",
                                       "large_scenes": [args.scene] if args.scene else [],
                                       "large_stride_cells": args.stride, "large_resample": args.resample,
                                       "large_size": args.size, "out_dir": str(out_dir)})  # fmt: skip
    if isinstance(inputs, int):
        return inputs
    manifest, stats, cfg = inputs
    try:
        models = load_generators(cfg, stats, local_device(cfg.device))
        if args.scene:
            summary = generate_large_scenes(models, manifest, cfg)[0]
        else:
            raster = class_raster_from_image(args.layout)
            layout = cell_layout(raster, models.structvae.config.L // models.grid)
            scene = generate_large_scene(models, layout, args.voxel_size, cfg.large_stride_cells, cfg.steps,
                                         cfg.cfg_strength, cfg.seed, cfg.condition == "layout", cfg.large_resample)  # fmt: skip
            meta = {"scene_id": name, "layout_image": str(args.layout), "condition": cfg.condition, "seed": cfg.seed,
                    "stride_cells": cfg.large_stride_cells, "resample": cfg.large_resample, "structfm": cfg.structfm_dir}  # fmt: skip
            summary = write_large_scene(out_dir / name, scene, raster, meta, cfg.frames, cfg.large_size, view=cfg.views)
    except (ValueError, FileNotFoundError) as e:  # unknown scene, bad map, models not trained yet
        return _fail(args, str(e))
    print(f"{summary['scene_id']}: {summary['voxels']} voxels, {summary['gaussians']} surfels, "
          f"{len(summary['windows'])} windows in {summary['seconds']} s")  # fmt: skip
    print(f"written to {summary['path']} (voxels.ply, gaussians.ply, view.html, orbit/, preview.png, layout.png)")
    return 0


def cmd_view(args: argparse.Namespace) -> int:
    import webbrowser

    from earthcrafter.render.html_view import write_view

    first = Path(args.paths[0])
    if args.out:
        out = Path(args.out)
    elif first.is_dir():
        out = first / "view.html"
    else:
        out = first.with_name(f"{first.stem}.view.html")
    try:
        summary = write_view(args.paths, out, args.max_faces, args.max_points, "cdn" if args.cdn else "inline",
                             frame=args.frame)
    except (ValueError, FileNotFoundError) as e:  # nothing viewable, unreadable files, bad budgets
        return _fail(args, str(e))
    for layer in summary["layers"]:
        shown = f"{layer['shown']:,}" + (f" of {layer['total']:,}" if layer["total"] > layer["shown"] else "")
        note = f" ({layer['note']})" if layer.get("note") else ""
        print(f"{layer['name']}: {shown} {'faces' if layer['kind'] == 'mesh' else 'points'}{note}")
    if summary.get("frame"):
        print(f"frame: {summary['frame']}")
    print(f"written to {out} ({summary['bytes'] / 1e6:.1f} MB; open it in a browser)")
    if args.open:
        webbrowser.open(out.resolve().as_uri())
    return 0


def _dry_run_device_problem(args: argparse.Namespace, params: dict) -> str | None:
    """Why --device, or else a chosen model's configured device, cannot run here (None: they can)."""
    from earthcrafter.training import dry_run as dr

    if args.device is not None:
        return _device_problem(args.device, "--device")
    for model in args.models or dr.MODELS:  # unknown models are dry_run's to name
        section = dr.SECTIONS.get(model)
        device = (params.get(section) or {}).get("device", "auto") if section else "auto"
        problem = _device_problem(str(device), f"{section}.device of conf/{args.env} (--device overrides it)")
        if problem:
            return problem
    return None


def cmd_dry_run(args: argparse.Namespace) -> int:
    from earthcrafter.training import dry_run as dr

    conf = Path(args.root) / "conf"
    if not (conf / "base").is_dir():
        return _fail(args, f"no {conf / 'base'}: run from the project root or pass --root")
    problem = _env_problem(conf, args.env)
    if problem:
        return _fail(args, problem)
    try:
        params = dr.load_parameters(conf, args.env)
        problem = _dry_run_device_problem(args, params)
        if problem:
            return _fail(args, problem)
        records = dr.dry_run(params, args.models or dr.MODELS, steps=args.steps,
                             batch=args.batch, voxels=args.voxels, device=args.device, tiles=args.tiles,
                             checkpointing=None if args.checkpointing is None else args.checkpointing == "on")  # fmt: skip
    except ValueError as e:
        return _fail(args, str(e))
    import torch.distributed as tdist

    if tdist.is_initialized() and tdist.get_rank() != 0:
        return 0
    over = "" if args.env == "base" else " over conf/base"
    memory = "rank 0's" if tdist.is_initialized() else "the process's"
    print(f"dry run of conf/{args.env}{over}, {args.steps} steps per model; peak memory: {memory} (on a CPU, "
          f"the resident peak so far, models before included)")
    print(dr.records_table(records))
    if args.json:
        dr.write_records(records, args.json)
    bad = [r for r in records if r["status"] != "ok"]
    for r in bad:
        if "losses" not in r:
            detail = r["status"]
        elif not r["finite"] or r["skipped_steps"]:
            detail = f"losses {r['losses']}, {r['skipped_steps']} update(s) skipped for a non-finite gradient"
        else:
            detail = f"no gradient for {r['no_grad'][:5]}"
        print(f"{r['model']}: {detail}", file=sys.stderr)
    return 1 if bad else 0


def _units(text: str) -> str | float:
    """--units: a unit name ("m", "ft", ...) or metres per unit as a number."""
    try:
        return float(text)
    except ValueError:
        return text


def _shortened(summary: dict, shown: int = 10) -> dict:
    """The summary with long name lists cut to their first ``shown`` names (the log has them all)."""
    skipped = {reason: names[:shown] + ([f"... {len(names) - shown} more"] if len(names) > shown else [])
               for reason, names in summary["skipped"].items()}  # fmt: skip
    return {**summary, "skipped": skipped}


def cmd_colmap_to_frames(args: argparse.Namespace) -> int:
    from earthcrafter.io.colmap import colmap_to_frames

    try:
        summary = colmap_to_frames(args.model_dir, args.images_dir, args.out_dir, depth_dir=args.depth_dir,
                                   depth_kind=args.depth_kind, semantic_dir=args.semantic_dir,
                                   units=_units(args.units), origin=args.origin, up_axis=args.up_axis,
                                   crs=args.crs, link=not args.copy)  # fmt: skip
    except (ValueError, FileNotFoundError) as e:  # bad model, missing folders, distorted cameras, bad options
        return _fail(args, str(e))
    print(json.dumps(_shortened(summary), indent=2))
    print(f"written to {args.out_dir} (import it as a source of kind: frames)")
    return 0


def _sampling_arguments(p: argparse.ArgumentParser, out_help: str) -> None:
    """The options both generate commands share (the sampler, the renders, where, which configuration)."""
    p.add_argument("--seed", type=int, default=None, help="the first scene's seed, 0 to 2**63 - 1 (next: +1 each)")
    p.add_argument("--cfg", type=float, default=None, help="classifier-free guidance strength (paper: 3)")
    p.add_argument("--steps", type=int, default=None, help="Euler steps (paper: 25)")
    p.add_argument("--frames", type=int, default=None, help="orbit frames (0: none)")
    p.add_argument("--size", type=int, default=None, help="orbit / preview size in pixels")
    p.add_argument("--out", default=None, help=out_help)
    p.add_argument("--env", default="local", help="conf/<env>/parameters_generation.yml applied over conf/base")
    p.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default: the configuration's)")
    p.add_argument("--root", default=".", help="project root")


class _StderrHandler(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is when a record comes (tests and callers of main swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _) -> None:  # StreamHandler sets it; the property always answers the current stderr
        pass


def _logging(quiet: bool):
    """Show the earthcrafter loggers' records on stderr, one line each: INFO and up (what a command
    skipped or chose), WARNING and up with --quiet. Returns a function restoring the logger as it was."""
    logger = logging.getLogger("earthcrafter")
    before = (logger.level, logger.propagate)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False  # a handler Kedro or rich put on the root logger would print each line twice

    def restore() -> None:
        logger.removeHandler(handler)
        logger.setLevel(before[0])
        logger.propagate = before[1]

    return restore


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="earthcrafter", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("-q", "--quiet", action="store_true", help="log warnings only (default: INFO lines too)")
    quiet = argparse.ArgumentParser(add_help=False)  # also after the command; SUPPRESS keeps a -q given before it
    quiet.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="log warnings only")
    sub = parser.add_subparsers(dest="command", required=True)
    add = _with_parents(sub.add_parser, [quiet])
    p = add("info", help="summarise the data layers and MLflow runs")
    p.add_argument("--root", default=".", help="project root")
    p.set_defaults(func=cmd_info)
    p = add("export", help="decode a tile's cached latents into voxel meshes, a Gaussian PLY and an orbit")
    p.add_argument("tile_id", help="a tile of data/05_model_input/latents_manifest.parquet")
    p.add_argument("--root", default=".", help="project root")
    p.add_argument("--out", default=None, help="folder (default data/07_model_output/reconstructions/<tile_id>)")
    p.add_argument("--frames", type=int, default=24, help="orbit frames (0: no orbit)")
    p.add_argument("--size", type=int, default=256, help="orbit frame size in pixels")
    p.set_defaults(func=cmd_export)
    p = add("generate", help="generate scenes from tiles' semantic layouts (or unconditionally) with the trained flows")
    p.add_argument("--tiles", nargs="*", default=None, help="tile ids whose layouts condition one scene each (any split)")
    p.add_argument("--split", default=None, help="else: layouts evenly spread over this split (default: conf's, val)")
    p.add_argument("--num", type=int, default=None, help="scenes when no --tiles (default: conf's)")
    p.add_argument("--unconditional", action="store_true", help="no condition (the tiles give only size and L)")
    p.add_argument("--condition", choices=("layout", "rgbd", "rgb"), default=None, help="the tiles' semantic "
                   "layouts (default), their most nadir RGBD views (flows trained with condition rgbd or mixed), or "
                   "those views' colours without depth (flows trained so with height_dropout > 0)")  # fmt: skip
    _sampling_arguments(p, out_help="folder (default data/07_model_output/samples)")
    p.add_argument("--mlflow", action="store_true", default=False, help="log a run to the tracking store")
    p.set_defaults(func=cmd_generate)
    p = add("generate-large", help="one scene of a whole semantic map (a scene's tiles, or an image), "
                       "generated by windows sliding over it")  # fmt: skip
    p.add_argument("--scene", default=None, help="a scene of the latent manifest: the map of all its tiles")
    p.add_argument("--layout", default=None, help="or a map image, north up: class ids (255: no surface) or the class "
                   "colours (white: no surface)")  # fmt: skip
    p.add_argument("--voxel-size", type=float, default=None, help="metres per map pixel (the tiles' voxel size)")
    p.add_argument("--stride", type=int, default=None, help="window stride in latent cells (default 3/4 of a window)")
    p.add_argument("--resample", type=int, default=None, help="RePaint resampling per step (default: conf's, 3)")
    p.add_argument("--unconditional", action="store_true", help="no condition (the map gives only the size)")
    _sampling_arguments(p, out_help="parent folder (default data/07_model_output/samples)")
    p.set_defaults(func=cmd_generate_large)
    p = add("view", help="an interactive HTML view (any browser, offline) of scene folders, PLY files "
                       "(voxel meshes, Gaussians, points), imported points.npz or voxel tiles")  # fmt: skip
    p.add_argument("paths", nargs="+", help="files or folders, drawn together (one legend entry per file)")
    p.add_argument("--out", default=None, help="HTML file (default: view.html in the folder, or <file>.view.html)")
    p.add_argument("--max-faces", type=int, default=400_000, help="triangles kept per mesh (random subset beyond)")
    p.add_argument("--max-points", type=int, default=300_000, help="points kept per point layer")
    p.add_argument("--cdn", action="store_true", help="load plotly.js from its CDN (a small file that needs the "
                   "internet) instead of embedding it")  # fmt: skip
    p.add_argument("--frame", choices=("auto", "tile", "scene"), default="auto",
                   help="the frame every layer is drawn in: auto (a tile's own when all layers belong to one tile, "
                   "else the scene's), tile, or scene")  # fmt: skip
    p.add_argument("--open", action="store_true", help="open the view in the default browser")
    p.set_defaults(func=cmd_view)
    p = add("dry-run", help="a few training steps of every model of a configuration on synthetic tiles: "
                       "parameters, step time, peak memory; under torchrun, on every rank")  # fmt: skip
    p.add_argument("--env", default="local", help="conf/<env> over conf/base, as kedro run --env (e.g. paper)")
    p.add_argument("--models", nargs="+", default=None, help="some of structvae, texvae, structfm_coarse, "
                   "structfm_fine, texfm (default: all)")  # fmt: skip
    p.add_argument("--steps", type=int, default=3, help="training steps per model (the first is timed only when "
                   "it is the only one)")  # fmt: skip
    p.add_argument("--batch", type=int, default=None, help="samples per rank and micro-step (default: the "
                   "configured global batch over the ranks and accumulation steps; the paper's is 2 per GPU)")  # fmt: skip
    p.add_argument("--voxels", type=int, default=None, help="voxel budget per sample (default: the configured "
                   "max_voxels; StructFM's stages take the latent grid or the tile's cells)")  # fmt: skip
    p.add_argument("--device", default=None, help="auto, cpu, cuda (default: the configured device)")
    p.add_argument("--checkpointing", choices=("on", "off"), default=None, help="activation checkpointing "
                   "(default: each trainer's activation_checkpointing)")  # fmt: skip
    p.add_argument("--tiles", type=int, default=2, help="synthetic tiles per L")
    p.add_argument("--json", default=None, help="also write the records to this JSON file")
    p.add_argument("--root", default=".", help="project root")
    p.set_defaults(func=cmd_dry_run)
    p = add("colmap-to-frames", help="a COLMAP sparse model (+ dense depth maps) as a posed-frames "
                       "folder (cameras.json, images, depth); undistort first: colmap image_undistorter")  # fmt: skip
    p.add_argument("model_dir", help="sparse model folder: cameras/images .bin or .txt (e.g. dense/sparse)")
    p.add_argument("images_dir", help="folder the model's image names are relative to (e.g. dense/images)")
    p.add_argument("out_dir", help="the frames folder to write (replaced whole if it is an earlier output)")
    p.add_argument("--depth-dir", default=None, help="COLMAP depth maps folder (dense/stereo/depth_maps)")
    p.add_argument("--depth-kind", choices=("geometric", "photometric"), default="geometric",
                   help="which depth maps: <image>.geometric.bin (default) or .photometric.bin")  # fmt: skip
    p.add_argument("--semantic-dir", default=None, help="class-id PNGs named like the images (<name>.png)")
    p.add_argument("--units", default="m", help="metres per model unit, or a unit name (m, ft, us_ft); an "
                   "unaligned model (no colmap model_aligner) needs a measured scale")  # fmt: skip
    p.add_argument("--origin", nargs=3, type=float, default=None, metavar=("X", "Y", "Z"),
                   help="subtracted from world coordinates, in model units (e.g. a UTM offset)")  # fmt: skip
    p.add_argument("--up-axis", choices=("x", "y", "z"), default="z", help="the model's up axis")
    p.add_argument("--crs", default=None, help="CRS of an aligned model, recorded in metadata (e.g. EPSG:32610)")
    p.add_argument("--copy", action="store_true", help="copy the images instead of symlinking them")
    p.set_defaults(func=cmd_colmap_to_frames)
    args = parser.parse_args(argv)
    restore = _logging(args.quiet)
    try:
        return args.func(args)
    finally:
        restore()


def _with_parents(add_parser, parents: list[argparse.ArgumentParser]):
    """``add_parser`` giving every sub-command the ``parents``' options."""
    return lambda *a, **kw: add_parser(*a, parents=parents, **kw)


if __name__ == "__main__":
    sys.exit(main())
