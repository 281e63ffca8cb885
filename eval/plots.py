"""The report's PNG plots (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from densekit.atomic import write_bytes_atomic


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    write_bytes_atomic(path, buf.getvalue())
    return Path(path)


def plot_roc(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], path: str | Path, title: str) -> Path:
    """One ROC curve per configuration: {name: (fpr, tpr, auc)}."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, lw=1.6, label=f"{name} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], ls=":", c="grey", lw=1)
    ax.set(
        xlabel="false positive rate (retrieved non-relevant)",
        ylabel="true positive rate (relevant)",
        title=title,
        xlim=(0, 1),
        ylim=(0, 1.01),
    )
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_recall(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, title: str) -> Path:
    """Mean Recall@k against k (log scale), one line per configuration."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, (ks, rec) in curves.items():
        ax.plot(ks, rec, lw=1.6, label=name)
    ax.set_xscale("log")
    ax.set(xlabel="k", ylabel="mean Recall@k", title=title, ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return _save(fig, path)


def plot_calibration(panels: list[tuple[str, np.ndarray, np.ndarray, float | None]], path: str | Path, title: str, target: float) -> Path:
    """Side-by-side histograms (densities) of relevant vs non-relevant scores, one panel per
    population (title, relevant scores, non-relevant scores, threshold keeping `target`)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    for ax, (name, pos, neg, threshold) in zip(axes[0], panels):
        both = np.concatenate([pos, neg]) if len(pos) + len(neg) else np.array([0.0, 1.0])
        bins = np.linspace(float(both.min()), float(both.max()) + 1e-9, 60)
        if len(neg):
            ax.hist(neg, bins=bins, density=True, alpha=0.55, color="tab:red", label=f"non-relevant (n={len(neg)})")
        if len(pos):
            ax.hist(pos, bins=bins, density=True, alpha=0.55, color="tab:green", label=f"relevant (n={len(pos)})")
        if threshold is not None:
            ax.axvline(threshold, c="k", ls="--", lw=1.2, label=f"precision >= {target:g} at score >= {threshold:.3f}")
        else:
            ax.plot([], [], " ", label=f"no cut reaches precision {target:g}")
        ax.set(xlabel="score", ylabel="density", title=name)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path)
