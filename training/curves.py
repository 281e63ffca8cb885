"""Training logs and loss curves from a Hugging Face trainer's `state.log_history`.

Shared by every trainer built on transformers' Trainer (sentence-transformers, CrossEncoder,
plain Trainer): `write_training_log` keeps the per-step records as JSONL and
`plot_loss_curve` draws the training loss (and any eval loss) as a PNG; `plot_learning_curve`
draws a dev metric per step (reranker runs' learning_curve.json).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from densekit.atomic import write_bytes_atomic, write_text_atomic


def loss_points(log_history: Iterable[dict[str, Any]], key: str = "loss") -> list[tuple[int, float]]:
    return [(int(r["step"]), float(r[key])) for r in log_history if key in r and "step" in r]


def write_training_log(log_history: Iterable[dict[str, Any]], path: str | Path) -> Path:
    path = Path(path)
    write_text_atomic(path, "".join(json.dumps(r, default=float) + "\n" for r in log_history))
    return path


def plot_loss_curve(log_history: list[dict[str, Any]], path: str | Path, title: str = "training loss", smooth: int = 0) -> Path | None:
    """PNG of loss per step (raw, plus a moving average of `smooth` steps when > 1).
    Returns None when the history holds no loss."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    train = loss_points(log_history, "loss")
    evals = loss_points(log_history, "eval_loss")
    if not train and not evals:
        return None
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    if train:
        xs, ys = zip(*train)
        ax.plot(xs, ys, lw=0.8, alpha=0.5 if smooth > 1 else 1.0, label="train loss")
        if smooth > 1 and len(ys) >= smooth:
            avg = [sum(ys[i - smooth + 1 : i + 1]) / smooth for i in range(smooth - 1, len(ys))]
            ax.plot(xs[smooth - 1 :], avg, lw=1.6, label=f"train loss ({smooth}-step mean)")
    if evals:
        xs, ys = zip(*evals)
        ax.plot(xs, ys, "o-", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save_png(fig, path)


def plot_learning_curve(curve: dict[str, Any], path: str | Path, title: str = "") -> Path | None:
    """PNG of a dev metric per step: one line per dataset, the pooled value in bold, and each
    dataset's first stage as a dashed line of the same colour (what reranking has to beat).
    `curve` is a learning_curve.json mapping; returns None when it has no point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sorted(curve.get("points", []), key=lambda p: p["step"])
    if not points:
        return None
    metric = curve.get("metric", "ndcg@10")
    steps = [p["step"] for p in points]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    for name, info in curve.get("datasets", {}).items():
        ys = [p["datasets"].get(name) for p in points]
        (line,) = ax.plot(steps, ys, "o-", lw=1.0, ms=3, label=f"{name} ({info.get('queries', '?')} q)")
        if info.get("first_stage") is not None:
            ax.axhline(info["first_stage"], ls="--", lw=0.8, color=line.get_color())
    ax.plot(steps, [p.get("pooled") for p in points], "o-", lw=2.2, color="black", label="pooled")
    if curve.get("first_stage_pooled") is not None:
        ax.axhline(curve["first_stage_pooled"], ls="--", lw=1.2, color="black", label="first stage (dashed)")
    ax.set_xlabel("step")
    ax.set_ylabel(f"dev {metric}")
    ax.set_title(title or f"dev {metric} (top-{curve.get('top_n', '?')} reranked)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save_png(fig, path)


def _save_png(fig, path: str | Path) -> Path:
    """Render `fig` to PNG in memory and write it atomically (a half-written plot never lands)."""
    import io

    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())
    return Path(path)
