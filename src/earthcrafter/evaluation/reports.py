"""Reports: voxel reconstruction figures and the StructVAE ablation table (paper Table 3).

The table is built from MLflow runs (queried by tag), so the numbers in the report and
the ones compared in the MLflow UI are the same numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

# Table 3 rows in the paper's order, the switches that define them, and the paper's numbers
# (Time as printed, Acc in %). "ablation" rows train on a subset of the training tiles
# (``data.train_fraction``), "global" rows on all of them: the paper's two datasets.
_ROW = ("method", "data", "pixshuffle", "cblock", "fullattn", "paper_time", "paper_acc")
TABLE3_ROWS: dict[str, dict] = {name: dict(zip(_ROW, values)) for name, values in {
    "xcube": ("XCube*", "ablation", False, False, False, 29.1, 94.3),
    "naive_upsample": ("naive upsample", "ablation", False, False, False, 14.8, 79.2),
    "pixshuffle": ("+ PixShuffle", "ablation", True, False, False, 15.7, 94.3),
    "cblock": ("+ C-Block", "ablation", True, True, False, 16.8, 95.3),
    "fullattn": ("+ FullAttn", "ablation", True, True, True, 19.5, 94.9),
    "cblock_global": ("+ C-Block", "global", True, True, False, 79.3, 96.6),
    "fullattn_global": ("+ FullAttn", "global", True, True, True, 91.0, 97.1),
    # not in the paper: + FullAttn with this project's latent skip (the main configuration)
    "latent_skip": ("+ FullAttn + latent skip (ours)", "ablation", True, True, True, float("nan"), float("nan")),
}.items()}
OPTIONAL_TABLE3_ROWS = {"latent_skip"}  # left out of the table when not trained
TABLE3_TAGS = {"model": "structvae", "table": "3"}


# --------------------------------------------------------------------------- figures

def _height_map(coords: np.ndarray, L: int) -> np.ndarray:
    h = np.full((L, L), np.nan)
    if len(coords):
        order = np.argsort(coords[:, 2])  # later (higher) writes win: max z per column
        c = coords[order]
        h[c[:, 0], c[:, 1]] = c[:, 2]
    return h


def occupancy_figure(gt: np.ndarray, pred: np.ndarray, L: int, title: str = ""):
    """Ground truth vs reconstruction of one sample: height maps, xy error map, a vertical slice.

    ``gt`` / ``pred``: int voxel coords [N, 3] / [M, 3] in ``[0, L)``. Errors: red = false
    positive (predicted, not in GT), blue = false negative (missed), grey = correct.
    """
    gt, pred = np.asarray(gt, dtype=np.int64).reshape(-1, 3), np.asarray(pred, dtype=np.int64).reshape(-1, 3)
    key = lambda c: (c[:, 0] * L + c[:, 1]) * L + c[:, 2]  # noqa: E731
    kg, kp = key(gt), key(pred)
    fp, fn = pred[~np.isin(kp, kg)], gt[~np.isin(kg, kp)]
    tp = pred[np.isin(kp, kg)]
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.2), dpi=90)
    vmax = max(int(gt[:, 2].max()) if len(gt) else 1, 1)
    for ax, c, name in ((axes[0], gt, "ground truth"), (axes[1], pred, "reconstruction")):
        im = ax.imshow(_height_map(c, L).T, origin="lower", cmap="terrain", vmin=0, vmax=vmax)
        ax.set_title(f"{name}: top z ({len(c)} voxels)", fontsize=9)
    fig.colorbar(im, ax=axes[1], fraction=0.046)
    err = np.ones((L, L, 3))
    for c, channel in ((fp, (1.0, 0.15, 0.15)), (fn, (0.15, 0.3, 1.0))):
        if len(c):
            err[c[:, 0], c[:, 1]] = channel
    axes[2].imshow(err.transpose(1, 0, 2), origin="lower")
    axes[2].set_title(f"xy errors: {len(fp)} FP (red), {len(fn)} FN (blue)", fontsize=9)
    y = int(np.bincount(gt[:, 1], minlength=L).argmax()) if len(gt) else L // 2
    sl = np.ones((L, L, 3))
    for c, colour in ((tp, (0.45, 0.45, 0.45)), (fp, (1.0, 0.15, 0.15)), (fn, (0.15, 0.3, 1.0))):
        s = c[c[:, 1] == y]
        if len(s):
            sl[s[:, 0], s[:, 2]] = colour
    axes[3].imshow(sl.transpose(1, 0, 2), origin="lower")
    axes[3].set_title(f"vertical slice y={y} (x right, z up)", fontsize=9)
    for ax in axes:
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- Table 3

def find_table3_runs(run_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """MLflow runs tagged ``model=structvae, table=3`` (all experiments), newest first.

    With ``run_ids``, only those runs (the ones a sweep just produced) are kept.
    """
    import mlflow

    flt = " and ".join(f"tags.{k} = '{v}'" for k, v in TABLE3_TAGS.items())
    runs = mlflow.search_runs(filter_string=flt, search_all_experiments=True, order_by=["attributes.start_time DESC"])
    if run_ids is not None and len(runs):
        runs = runs[runs["run_id"].isin(list(run_ids))]
    return runs.reset_index(drop=True)


def _col(runs: pd.DataFrame, name: str) -> pd.Series:
    return runs[name] if name in runs.columns else pd.Series([np.nan] * len(runs), index=runs.index)


def _skip_mode(value) -> str:
    """The run's ``model.latent_skip`` param ("off" when absent: runs from before the option)."""
    return "off" if value is None or value != value else str(value)


def _number(value) -> float:
    """An MLflow param (a string) as a number; NaN when absent (runs from before it was logged)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _data_cell(row) -> str:
    tiles = row.get("train_tiles")
    return row["data"] if tiles is None or tiles != tiles else f"{row['data']} ({int(tiles)} tiles)"


def _skip_cell(value) -> str:
    return value if isinstance(value, str) and value != "off" else ""


def table3(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per ablation (paper order) from the newest finished run of each.

    ``runs``: ``mlflow.search_runs`` output (columns ``tags.ablation``,
    ``metrics.final/acc``, ``metrics.final/iou``, ``metrics.final/train_time_s``,
    ``metrics.final/num_params``, ``run_id``, ``start_time``).
    """
    rows = []
    for name, spec in TABLE3_ROWS.items():
        mine = runs[_col(runs, "tags.ablation") == name] if len(runs) else runs
        if "status" in mine.columns:
            mine = mine[mine["status"] == "FINISHED"]
        if not len(mine):
            log.warning("Table 3: no finished MLflow run for row %r; the row is left empty", name)
            if name in OPTIONAL_TABLE3_ROWS:
                continue
            rows.append({"row": name, **spec})
            continue
        if "start_time" in mine.columns:
            mine = mine.sort_values("start_time", ascending=False)
        r = mine.iloc[0]
        rows.append({
            "row": name, **{k: spec[k] for k in ("method", "data", "pixshuffle", "cblock", "fullattn")},
            "train_tiles": _number(_col(mine, "params.data.train_samples").iloc[0]),
            "latent_skip": _skip_mode(_col(mine, "params.model.latent_skip").iloc[0]),
            "train_time_min": float(_col(mine, "metrics.final/train_time_s").iloc[0]) / 60.0,
            "params_M": float(_col(mine, "metrics.final/num_params").iloc[0]) / 1e6,
            "acc_pct": 100.0 * float(_col(mine, "metrics.final/acc").iloc[0]),
            "iou_pct": 100.0 * float(_col(mine, "metrics.final/iou").iloc[0]),
            "paper_time": spec["paper_time"], "paper_acc": spec["paper_acc"],
            "run_id": r.get("run_id", ""),
        })
    df = pd.DataFrame(rows)
    if "train_time_min" in df and "pixshuffle" in df["row"].values:
        ref = df.loc[df["row"] == "pixshuffle", "train_time_min"].iloc[0]
        df["time_vs_pixshuffle"] = df["train_time_min"] / ref if ref and ref == ref else np.nan
    return df


def table3_markdown(df: pd.DataFrame, caption: str = "") -> str:
    """The table as GitHub markdown, paper numbers side by side."""
    tick = lambda b: "✓" if bool(b) else ""  # noqa: E731
    fmt = lambda v, f: "–" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, f)  # noqa: E731
    lines = [
        "| Method | Data | PixShuffle | C-Block | FullAttn | latent skip | Train time (min) | time / PixShuffle | Params (M) | Acc (%) | IoU (%) | paper Time | paper Acc (%) |",
        "|---|---|:-:|:-:|:-:|:-:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for _, r in df.iterrows():
        lines.append(
            f"| {r['method']} | {_data_cell(r)} | {tick(r['pixshuffle'])} | {tick(r['cblock'])} | {tick(r['fullattn'])} "
            f"| {_skip_cell(r.get('latent_skip'))} "
            f"| {fmt(r.get('train_time_min'), '.2f')} | {fmt(r.get('time_vs_pixshuffle'), '.2f')} "
            f"| {fmt(r.get('params_M'), '.3f')} | {fmt(r.get('acc_pct'), '.2f')} | {fmt(r.get('iou_pct'), '.2f')} "
            f"| {fmt(r['paper_time'], '.1f')} | {fmt(r['paper_acc'], '.1f')} |"
        )
    text = "\n".join(lines) + "\n"
    return (caption.strip() + "\n\n" + text) if caption else text
