"""Encode every voxel tile with the trained VAEs once, for the flow models to train on.

Per tile: the StructVAE posterior at L/8 (c_s channels) and the TexVAE posterior on the tile's
voxels (c_t channels), both mean and log-variance (:mod:`earthcrafter.io.latents`). Then the
per-channel statistics of the training split (the flow models' normalisation) and a check that
the cached structure latents decode back to the tiles (the StructVAE's validation metrics,
computed from the files).

Under ``torchrun`` the tiles are sharded over the ranks (tile i on rank i mod W); the statistics
are all-reduced and every rank returns the same manifest. Files whose weights and source tile are
unchanged are kept (``reuse``), so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from earthcrafter import tracking
from earthcrafter.config import flatten
from earthcrafter.flow.latent_stats import ChannelMoments
from earthcrafter.io.latents import (
    LatentTile,
    conditions_path,
    file_sha256,
    latent_path,
    read_conditions,
    read_latent_meta,
    read_latent_tile,
    write_conditions,
    write_latent_tile,
)
from earthcrafter.io.tiles import read_tile, read_tile_coords, read_tile_meta, read_views, tile_views_path
from earthcrafter.models.struct_vae import StructVAE
from earthcrafter.models.tex_vae import TexVAE, tile_to_sparse
from earthcrafter.sparse.tensor import SparseTensor, batched_coords
from earthcrafter.training import distributed as dist
from earthcrafter.training.conditions import RASTERS_VERSION, tile_rasters
from earthcrafter.training.structvae import level_counts, level_metrics, load_structvae
from earthcrafter.training.tracking import training_run
from earthcrafter.training.voxel_data import check_manifest, evenly_spaced

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ["tile_id", "scene_id", "split", "tile_path", "num_voxels", "struct_path", "struct_voxels",
                    "tex_path", "tex_voxels", "cond_path", "status"]  # fmt: skip


class LatentCacheConfig(BaseModel):
    """``cache_latents`` parameters (conf/<env>/parameters_cache_latents.yml)."""

    model_config = ConfigDict(extra="forbid")
    structvae_path: str = Field("data/06_models/structvae/model.pt", description="exported StructVAE (model.pt)")
    texvae_path: str | None = Field("data/06_models/tex_vae/model.pt", description="exported TexVAE; null: structure only")
    out_dir: str = "data/05_model_input/latents"
    splits: list[str] | None = Field(None, description="splits to encode; null: every split of the manifest")
    stats_split: str = Field("train", description="split whose latents give the normalisation statistics")
    reuse: bool = Field(True, description="keep files written from the same weights and the same tile")
    check_split: str = "val"
    check_tiles: int = Field(0, ge=0, description="tiles of check_split decoded back from the cache; 0: all")
    threshold: float = 0.0
    device: str = Field("auto", pattern=dist.DEVICE_PATTERN, description="auto, cpu, cuda (cuda:LOCAL_RANK) or cuda:N")
    threads: int | None = Field(1, ge=1, description="torch CPU threads (None: torch's default)")
    progress: bool = True
    mlflow: bool = True


def _require(path: str | Path, what: str, pipeline: str, key: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} weights not found: {path} (run `kedro run --pipelines={pipeline}`, or point "
                                f"cache_latents.{key} at an exported model.pt)")  # fmt: skip
    return path


def _rows(manifest: pd.DataFrame, cfg: LatentCacheConfig, root: Path | None) -> pd.DataFrame:
    """The manifest rows to encode (paths resolved, files present), sorted by tile id."""
    if "split" not in manifest.columns:
        raise ValueError(f"voxel manifest lacks column 'split'; has {list(manifest.columns)}")
    splits = cfg.splits or sorted(manifest["split"].unique())
    rows = pd.concat([check_manifest(manifest, s, root) for s in splits], ignore_index=True)
    if cfg.stats_split not in splits:
        raise ValueError(f"cache_latents.stats_split = {cfg.stats_split!r} is not among the encoded splits {splits}")
    return rows.sort_values("tile_id").reset_index(drop=True)


def _stat(path: str) -> dict:
    st = Path(path).stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _source_ref(path: str, recorded: dict | None = None) -> dict:
    """``{"path", "sha256", "size", "mtime_ns"}`` of a voxel tile. When size and modification time
    equal ``recorded``'s, its hash is trusted instead of re-reading the file (as git and DVC do):
    a resumed run over ~450k paper-scale tiles then costs a ``stat`` per tile, not terabytes of reads."""
    now = _stat(path)
    if recorded and all(recorded.get(k) == v for k, v in now.items()) and recorded.get("sha256"):
        return {"path": path, "sha256": recorded["sha256"], **now}
    return {"path": path, "sha256": file_sha256(path), **now}


def _reusable(paths: dict[str, Path], enc: _Encoder, tile_path: str) -> tuple[bool, dict | None]:
    """Whether every latent file of the tile exists and was written from the same weights and the
    same tile bytes, and the tile's source reference (:func:`_source_ref`) when it was computed on
    the way (so a changed tile is hashed once, not again for its encoding)."""
    metas = {}
    for kind, p in paths.items():
        try:
            metas[kind] = read_latent_meta(p)
        except (OSError, ValueError):
            return False, None
        if metas[kind]["model"].get("sha256") != enc.ref(kind)["sha256"]:
            return False, None
    source = _source_ref(tile_path, metas["struct"]["source"])
    return all(m["source"].get("sha256") == source["sha256"] for m in metas.values()), source


def _views_stamp(tile_path: str, tile_id: str) -> list[int]:
    """[size, mtime_ns] of the tile's views file ([] without one): what its RGBD raster came from."""
    views_file = tile_views_path(tile_path, tile_id)
    if not views_file.is_file():
        return []
    st = views_file.stat()
    return [st.st_size, st.st_mtime_ns]


def _conditions_current(path: Path, grid: int, tile_path: str, tile_id: str) -> bool:
    """Whether a tile's cached condition rasters exist, on this grid, from this raster code and
    from the tile's views as they are now (or, like the tile, without views)."""
    try:
        cached_grid, version, _, stamp = read_conditions(path)
    except (OSError, ValueError):
        return False
    return cached_grid == grid and version == RASTERS_VERSION and stamp == _views_stamp(tile_path, tile_id)


def store_conditions(path: Path, tile, tile_path: str, grid: int) -> None:
    """The tile's condition rasters (the semantic layout; the RGBD one too where it has views),
    computed once here so the flows' data loaders do not rebuild them on every draw."""
    stamp = _views_stamp(tile_path, tile.tile_id)
    views = read_views(tile_views_path(tile_path, tile.tile_id)) if stamp else None
    write_conditions(path, grid, RASTERS_VERSION, tile_rasters(tile, views, grid), views_stamp=stamp)


def _latent_tile(kind: str, tile_id: str, mean: SparseTensor, logvar: torch.Tensor, meta: dict) -> LatentTile:
    return LatentTile(tile_id, kind, mean.coords[:, 1:].cpu().numpy(), mean.feats.float().cpu().numpy(),
                      logvar.float().cpu().numpy(), meta)  # fmt: skip


class _Encoder:
    """The two models, their fingerprints, and the encoding of one tile."""

    def __init__(self, cfg: LatentCacheConfig, device: torch.device):
        self.device = device
        # the loaders build the model on the CPU and copy the weights in: move it afterwards
        self.struct = load_structvae(_require(cfg.structvae_path, "StructVAE", "train_structvae", "structvae_path")).to(device)
        self.struct_ref = {"path": str(cfg.structvae_path), "sha256": file_sha256(cfg.structvae_path)}
        self.tex = None
        if cfg.texvae_path:  # null: structure latents only
            self.tex = TexVAE.load(_require(cfg.texvae_path, "TexVAE", "train_texvae", "texvae_path")).to(device)
        self.tex_ref = {"path": str(cfg.texvae_path), "sha256": file_sha256(cfg.texvae_path)} if self.tex else None

    @property
    def kinds(self) -> tuple[str, ...]:
        return ("struct", "tex") if self.tex is not None else ("struct",)

    def ref(self, kind: str) -> dict:
        return self.struct_ref if kind == "struct" else self.tex_ref

    @torch.inference_mode()
    def encode(self, tile) -> dict[str, tuple[SparseTensor, torch.Tensor]]:
        coords = torch.from_numpy(tile.coords).to(self.device)
        voxels = SparseTensor.from_list([torch.ones(len(coords), 1, device=self.device)], [coords])
        out = {"struct": self.struct.encode_posterior(voxels)}
        if self.tex is not None:
            mean, logvar = self.tex.encode_posterior(tile_to_sparse(tile, self.tex.config.features, self.device))
            out["tex"] = (mean, logvar.feats)
        return out


def _check_resolution(rows: pd.DataFrame, enc: _Encoder) -> None:
    """Fail at start when the tiles' L differs from the StructVAE's (names the first tile)."""
    L = enc.struct.config.L
    meta = read_tile_meta(rows["tile_path"].iloc[0])
    if meta["L"] != L:
        raise ValueError(
            f"{rows['tile_path'].iloc[0]}: field 'L': the tile has L={meta['L']}, the StructVAE at "
            f"{enc.struct_ref['path']} was trained for L={L}"
        )


def encode_tiles(
    rows: pd.DataFrame, cfg: LatentCacheConfig, enc: _Encoder, env: dist.DistEnv
) -> tuple[list[dict], list[dict], dict[str, ChannelMoments], dict[str, float]]:
    """Encode this rank's shard: (manifest rows, skipped records, moments of stats_split, timing)."""
    out_dir = Path(cfg.out_dir)
    C = {"struct": enc.struct.config.latent_channels, "tex": enc.tex.config.latent_channels if enc.tex else 0}
    moments = {k: ChannelMoments.zeros(C[k]) for k in enc.kinds}
    mine = rows.iloc[env.rank :: env.world_size]
    done, skipped, n_encoded, t_encode = [], [], 0, 0.0
    for r in tqdm(mine.itertuples(index=False), total=len(mine), desc="cache_latents",
                  disable=not (env.is_main and cfg.progress)):  # fmt: skip
        paths = {k: latent_path(out_dir, k, r.tile_id) for k in enc.kinds}
        reuse, source = _reusable(paths, enc, r.tile_path) if cfg.reuse else (False, None)
        if reuse:
            latents = {k: read_latent_tile(p) for k, p in paths.items()}
            for kind, lt in latents.items():
                if lt.meta["source"] != source:  # the same bytes with a new size/mtime stamp (a copy, a checkout):
                    lt.meta["source"] = source  # record it, so that the next run trusts the stamp, not a re-hash
                    write_latent_tile(paths[kind], lt)
            status = "reused"
        else:
            source = source or _source_ref(r.tile_path)
            tile = read_tile(r.tile_path)
            if len(tile) == 0:
                skipped.append({"tile_id": r.tile_id, "scene_id": r.scene_id, "reason": "tile has zero voxels"})
                log.warning("cache_latents: %s skipped: the tile has zero voxels", r.tile_id)
                continue
            if tile.L != enc.struct.config.L:
                raise ValueError(f"{r.tile_path}: field 'L': the tile has L={tile.L}, the StructVAE expects "
                                 f"L={enc.struct.config.L}")  # fmt: skip
            t0 = time.perf_counter()
            posteriors = enc.encode(tile)
            t_encode += time.perf_counter() - t0
            n_encoded += 1
            latents = {}
            for kind, (mean, logvar) in posteriors.items():
                meta = {"scene_id": tile.meta["scene_id"], "L": tile.L, "stride": mean.stride,
                        "voxel_size_m": tile.voxel_size, "origin_m": tile.origin.tolist(), "model": enc.ref(kind),
                        "source": source}  # fmt: skip
                latents[kind] = _latent_tile(kind, r.tile_id, mean, logvar, meta)
                write_latent_tile(paths[kind], latents[kind])
            status = "encoded"
        struct = latents["struct"]
        grid, cond_file = struct.meta["L"] // struct.meta["stride"], conditions_path(out_dir, r.tile_id)
        if status == "encoded" or not _conditions_current(cond_file, grid, r.tile_path, r.tile_id):
            store_conditions(cond_file, tile if status == "encoded" else read_tile(r.tile_path, features=False),
                              r.tile_path, grid)  # fmt: skip
        if r.split == cfg.stats_split:
            for kind, lt in latents.items():
                moments[kind].update(lt.mean)
        done.append({
            "tile_id": r.tile_id, "scene_id": r.scene_id, "split": r.split, "tile_path": r.tile_path,
            "num_voxels": int(r.num_voxels),
            "struct_path": str(paths["struct"]), "struct_voxels": len(latents["struct"]),
            "tex_path": str(paths.get("tex", "")), "tex_voxels": len(latents["tex"]) if "tex" in latents else 0,
            "cond_path": str(cond_file), "status": status,
        })  # fmt: skip
    return done, skipped, moments, {"encode_s": t_encode, "encoded": n_encoded}


@torch.inference_mode()
def decode_check(manifest: pd.DataFrame, cfg: LatentCacheConfig, model: StructVAE) -> dict[str, float]:
    """Decode cached structure latents of ``check_split`` tiles and score them against the tiles:
    candidate accuracy (the paper's Acc), IoU, precision and recall at L and at L/2, L/4 —
    the StructVAE's validation metrics, recomputed from the files."""
    rows = manifest[manifest["split"] == cfg.check_split]
    if cfg.check_tiles and len(rows) > cfg.check_tiles:
        rows = rows.iloc[evenly_spaced(len(rows), cfg.check_tiles)]
    if rows.empty:
        return {}
    device = next(model.parameters()).device
    stats: dict[str, torch.Tensor] = {}
    for r in rows.itertuples(index=False):
        lt = read_latent_tile(r.struct_path)
        z = SparseTensor.from_list([torch.from_numpy(lt.mean).to(device)], [torch.from_numpy(lt.coords).to(device)],
                                   stride=8)  # fmt: skip
        _, levels = model.decode(z, threshold=cfg.threshold, return_levels=True)
        gt_xyz, _ = read_tile_coords(r.tile_path)
        gt = batched_coords(gt_xyz).to(device)
        for k, v in level_counts(levels, gt, 1).items():
            stats[k] = stats.get(k, 0) + v
    return {"check_tiles": float(len(rows)), **{f"check_{k}": v for k, v in level_metrics(stats).items()}}


def cache_latents(
    manifest: pd.DataFrame, config: LatentCacheConfig | dict, root: str | Path | None = None
) -> tuple[pd.DataFrame, dict, pd.DataFrame, dict]:
    """Encode the tiles of ``manifest`` (the voxelization stage's) with both VAEs.

    Returns (latent manifest, statistics, skipped tiles, summary metrics); the files go to
    ``<out_dir>/{struct,tex}/<tile_id>.parquet``, the tiles' condition rasters to
    ``<out_dir>/conditions/<tile_id>.npz``.
    """
    cfg = config if isinstance(config, LatentCacheConfig) else LatentCacheConfig.model_validate(config)
    env = dist.setup(cfg.device)
    old_threads = torch.get_num_threads()
    if cfg.threads and env.device.type == "cpu":
        torch.set_num_threads(cfg.threads)
    try:
        rows = _rows(manifest, cfg, Path(root) if root is not None else None).rename(columns={"path": "tile_path"})
        enc = _Encoder(cfg, env.device)
        _check_resolution(rows, enc)
        tags = {"stage": "cache_latents", "model": "latents"}
        with training_run("cache_latents", tags, enabled=cfg.mlflow and env.is_main) as run_id:
            t0 = time.perf_counter()
            done, skipped, moments, timing = encode_tiles(rows, cfg, enc, env)
            done = sum(dist.all_gather_object(done, env), [])
            skipped = sum(dist.all_gather_object(skipped, env), [])
            for kind, m in moments.items():
                # NCCL reduces device tensors only: reduce on the rank's device
                moments[kind] = ChannelMoments.from_tensor(dist.all_reduce_sum(m.to_tensor().to(env.device), env))
            encoded = sum(dist.all_gather_object(timing["encoded"], env))
            encode_s = sum(dist.all_gather_object(timing["encode_s"], env))
            wall = max(dist.all_gather_object(time.perf_counter() - t0, env))  # the slowest rank
            if any(m.count == 0 for m in moments.values()):
                raise ValueError(f"cache_latents: no latents in stats_split {cfg.stats_split!r} "
                                 f"({len(skipped)} tile(s) skipped)")  # fmt: skip
            table = pd.DataFrame(done, columns=MANIFEST_COLUMNS).sort_values("tile_id").reset_index(drop=True)
            stats = {"split": cfg.stats_split, **{k: m.as_dict() for k, m in moments.items()},
                     "models": {k: enc.ref(k) for k in enc.kinds}}  # fmt: skip
            metrics: dict[str, Any] = {
                "tiles": len(table), "encoded": encoded, "reused": int((table["status"] == "reused").sum()),
                "skipped": len(skipped), "struct_voxels": int(table["struct_voxels"].sum()),
                "tex_voxels": int(table["tex_voxels"].sum()), "wall_s": wall, "encode_s": encode_s,
                "tiles_per_s": len(table) / max(wall, 1e-9), "world_size": env.world_size,
            }  # fmt: skip
            metrics.update(decode_check(table, cfg, enc.struct))
            log.info("cache_latents: %d tiles (%d encoded, %d reused, %d skipped) in %.1f s; decode check %s",
                     len(table), encoded, metrics["reused"], len(skipped), wall,
                     {k: round(v, 4) for k, v in metrics.items() if k.startswith("check_")})  # fmt: skip
            if run_id:
                _log_run(cfg, env, enc, table, stats, metrics)
            metrics["run_id"] = run_id or ""
    finally:
        torch.set_num_threads(old_threads)
    skipped_df = pd.DataFrame(skipped, columns=["tile_id", "scene_id", "reason"])
    base = Path(root) if root is not None else Path.cwd()
    table["tile_path"] = [_under(p, base) for p in table["tile_path"]]
    return table, stats, skipped_df, metrics


def _under(path: str, base: Path) -> str:
    """``path`` relative to ``base`` when inside it (the manifest stays valid when the project moves,
    like its latent paths), else as it is."""
    try:
        return str(Path(path).resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path)


def _log_run(cfg, env, enc, table: pd.DataFrame, stats: dict, metrics: dict) -> None:
    from earthcrafter.latents.figures import channel_stats_figure, latent_map_figure

    tracking.log_params(flatten(cfg.model_dump(mode="json")))
    tracking.log_params({"world_size": env.world_size, "resolved_device": str(env.device),
                         "git_commit": tracking.git_commit(),
                         **{f"{k}_sha256": enc.ref(k)["sha256"] for k in enc.kinds}})  # fmt: skip
    tracking.log_metrics({k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))})
    tracking.log_dict(stats, "latents_stats.json")
    import matplotlib.pyplot as plt

    fig = channel_stats_figure(stats)
    tracking.log_figure(fig, "figures/latent_channels.png")
    plt.close(fig)
    pick = table[table["split"] == cfg.check_split]
    if len(pick):
        r = pick.iloc[0]
        fig = latent_map_figure(r["tile_path"], r["struct_path"], r["tex_path"] or None, stats)
        tracking.log_figure(fig, f"figures/latent_map_{r['tile_id']}.png")
        plt.close(fig)
