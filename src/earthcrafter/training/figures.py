"""Figures every training writes: the loss curve and validation metrics over steps."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def loss_curve_figure(train: list[dict[str, float]], val: list[dict[str, float]], title: str = ""):
    """Training loss (log scale) and, on a twin axis, validation metrics, against the step.

    ``train`` / ``val``: lists of ``{"step": s, name: value, ...}`` rows as logged.
    """
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        logged = [r for r in train if "loss" in r]  # a window of skipped batches logs none
        ax.plot([r["step"] for r in logged], [r["loss"] for r in logged], color="tab:blue", lw=1.2, label="train loss")
        ax.set_yscale("log")
    if val and "val_loss" in val[-1]:  # flow models validate a loss (the VAEs accuracies, PSNR)
        ax.plot([r["step"] for r in val], [r.get("val_loss", float("nan")) for r in val], "s-", color="tab:orange",
                ms=4, lw=1, label="val loss")  # fmt: skip
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    names = [k for k in val[-1] if k != "step" and isinstance(val[-1][k], float) and 0.0 <= val[-1][k] <= 1.0] if val else []
    if names:
        ax2 = ax.twinx()
        for name in names[:4]:
            ax2.plot([r["step"] for r in val], [r.get(name, float("nan")) for r in val], "o-", ms=3, lw=1, label=f"val {name}")
        ax2.set_ylabel("validation metric")
        ax2.set_ylim(0, 1.02)
        ax2.legend(loc="lower right", fontsize=8)
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    return fig
