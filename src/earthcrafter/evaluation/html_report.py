"""One self-contained HTML page of a project's results: every stage's reported metrics, the
meshing quality and the paper's ablation tables where they were run, loss curves from MLflow, and the generated scenes.

Everything is read from what the stages wrote (``<reports_dir>/<stage>/metrics.json``,
``table{2,3,4}.csv``) and from the MLflow runs those files name, so the page shows the same
numbers as the MLflow UI. Images are embedded (base64 PNG), so the file can be mailed or logged
as one artifact.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from PIL import Image

log = logging.getLogger(__name__)

# Stages whose metrics.json the report shows, in DAG order.
STAGES = ("train_structvae", "train_texvae", "cache_latents", "train_structfm", "train_texfm", "generation")
# Tables the stages write (the paper's as the ablation pipelines write them), and the pipeline that writes each.
TABLES = {
    "Meshing quality per scene (Chamfer distance, F-score against the known mesh)": ("meshing/meshing_report.parquet", "meshing"),
    "Table 2: TexVAE features and network": ("train_texvae/table2.csv", "texvae_ablations"),
    "Table 3: StructVAE": ("train_structvae/table3.csv", "structvae_ablations"),
    "Table 4: StructFM": ("train_structfm/table4.csv", "structfm_ablations"),
}
# Training runs whose loss curves the report draws: label -> (stage, key of the run id).
TRAINING_RUNS = {
    "StructVAE": ("train_structvae", "run_id"),
    "TexVAE": ("train_texvae", "run_id"),
    "StructFM coarse": ("train_structfm", "coarse/run_id"),
    "StructFM fine": ("train_structfm", "fine/run_id"),
    "TexFM": ("train_texfm", "run_id"),
}


def read_stage_metrics(reports_dir: str | Path) -> dict[str, dict]:
    """``{stage: metrics}`` for the stages of :data:`STAGES` that wrote a metrics.json."""
    out = {}
    for stage in STAGES:
        path = Path(reports_dir) / stage / "metrics.json"
        if path.is_file():
            out[stage] = json.loads(path.read_text())
    return out


def read_tables(reports_dir: str | Path) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """The ablation tables present, and one line per table not run (with the command that runs it)."""
    tables, missing = {}, []
    for title, (rel, pipeline) in TABLES.items():
        path = Path(reports_dir) / rel
        if path.is_file():
            tables[title] = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        else:
            missing.append(f"{title}: not run (`kedro run --pipelines={pipeline}`)")
    return tables, missing


def training_run_ids(stage_metrics: dict[str, dict]) -> dict[str, str]:
    return {label: stage_metrics[stage][key] for label, (stage, key) in TRAINING_RUNS.items()
            if stage_metrics.get(stage, {}).get(key)}  # fmt: skip


def loss_curves(run_ids: dict[str, str], key: str = "train/loss"):
    """A figure of ``key`` over steps for each run (one panel per run), or None when the tracking
    store has none of them (runs logged elsewhere, or MLflow off)."""
    from mlflow.tracking import MlflowClient

    client, curves = MlflowClient(), {}
    for label, run_id in run_ids.items():
        try:
            history = client.get_metric_history(run_id, key)
        except Exception as e:  # a run id from another tracking store
            log.info("loss curve of %s (%s) not available: %s", label, run_id, e)
            continue
        if history:
            points = sorted((m.step, m.value) for m in history)
            curves[label] = np.asarray(points, dtype=np.float64)
    if not curves:
        return None
    fig, axes = plt.subplots(1, len(curves), figsize=(3.6 * len(curves), 3.0), dpi=90, squeeze=False)
    for ax, (label, c) in zip(axes[0], curves.items(), strict=True):
        ax.plot(c[:, 0], c[:, 1], lw=1.2)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.set_yscale("log" if (c[:, 1] > 0).all() else "linear")
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel(key, fontsize=8)
    fig.tight_layout()
    return fig


def figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def image_png(image: np.ndarray | str | Path, max_width: int = 1280) -> bytes:
    """PNG bytes of an array or image file, shrunk to ``max_width``."""
    img = Image.open(image).convert("RGB") if isinstance(image, (str, Path)) else Image.fromarray(np.asarray(image))
    if img.width > max_width:
        img = img.resize((max_width, round(img.height * max_width / img.width)), Image.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, dict)):
        return html.escape(json.dumps(v))
    return html.escape(str(v))


def _kv_table(d: dict) -> str:
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{_fmt(v)}</td></tr>" for k, v in d.items())
    return f"<table class='kv'>{rows}</table>"


def _df_table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, na_rep="", float_format=lambda x: f"{x:.4g}", border=0, classes="grid")


CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1300px;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}td,th{padding:.2em .6em;border-bottom:1px solid #eee;text-align:left}
table.kv td:first-child{color:#555}img{max-width:100%;margin:.4em 0}.note{color:#666;font-size:.9em}
details summary{cursor:pointer;color:#335}"""


def write_report(path: str | Path, *, summary: dict, scenes: pd.DataFrame, stage_metrics: dict[str, dict],
                 tables: dict[str, pd.DataFrame], notes: list[str], images: dict[str, bytes], commit: str = "",
                 views: dict[str, str] | None = None) -> Path:  # fmt: skip
    """Write the page atomically. ``images``: title -> PNG bytes, shown in order; ``views``: scene ->
    link (relative to the page) of its interactive view."""
    from earthcrafter.io.atomic import atomic_write_text

    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>earthcrafter evaluation</title>"
             f"<style>{CSS}</style></head><body><h1>earthcrafter evaluation</h1>"
             f"<p class='note'>{html.escape(when)} · commit {html.escape(commit or 'unknown')}</p>",
             "<h2>Generated scenes</h2>", _kv_table(summary), _df_table(scenes)]  # fmt: skip
    if views:
        links = " · ".join(f"<a href='{html.escape(href)}'>{html.escape(name)}</a>" for name, href in views.items())
        parts.append(f"<p>Turn them in the browser (interactive 3D views): {links}</p>")
    for title, png in images.items():
        parts.append(f"<h3>{html.escape(title)}</h3>{_img(png, title)}")
    parts.append("<h2>Tables</h2>")
    for title, df in tables.items():
        parts.append(f"<h3>{html.escape(title)}</h3>{_df_table(df)}")
    parts.extend(f"<p class='note'>{html.escape(n)}</p>" for n in notes)
    parts.append("<h2>Stages</h2>")
    for stage, metrics in stage_metrics.items():
        parts.append(f"<details open><summary><b>{html.escape(stage)}</b></summary>{_kv_table(metrics)}</details>")
    parts.append("</body></html>")
    path = Path(path)
    atomic_write_text(path, "\n".join(parts))
    return path
