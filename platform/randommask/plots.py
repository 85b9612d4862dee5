"""Training curves: train loss and both fixed-mask validation losses, with the span boundary."""

from __future__ import annotations

import io
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # no display on workers or CI
import matplotlib.pyplot as plt  # noqa: E402


def _png(fig, ax, title: str) -> bytes:
    if title:
        ax.set_title(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _series(lines: Sequence[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(ln["step"], ln[key]) for ln in lines if ln.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def loss_curves_png(runs: dict[str, Sequence[dict]], title: str = "") -> bytes:
    """PNG bytes: one panel of losses per step (train solid, eval dashed/dotted), boundary on a
    second axis. ``runs`` maps a label to that run's metrics.jsonl lines."""
    fig, ax = plt.subplots(figsize=(9, 5), dpi=110)
    span_ax = ax.twinx()
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, lines) in enumerate(runs.items()):
        c = colours[i % len(colours)]
        prefix = f"{label}: " if len(runs) > 1 else ""
        ax.plot(*_series(lines, "loss"), color=c, lw=1.2, label=f"{prefix}train")
        for key, style, name in (("eval_span_k_loss", "--", "eval span k"), ("eval_span_2k_loss", ":", "eval span 2k")):
            xs, ys = _series(lines, key)
            if xs:
                ax.plot(xs, ys, style, color=c, lw=1.6, marker="o", ms=3, label=f"{prefix}{name}")
        xs, ys = _series(lines, "span_max")
        if xs:
            span_ax.step(xs, ys, where="pre", color=c, alpha=0.35, lw=2, label=f"{prefix}span boundary")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("MLM loss (nats)")
    span_ax.set_ylabel("span boundary (tokens)")
    ax.grid(alpha=0.3)
    handles = ax.get_legend_handles_labels()
    span_handles = span_ax.get_legend_handles_labels()
    entries = (handles[0] + span_handles[0], handles[1] + span_handles[1])
    if len(entries[0]) > 4:  # several runs: keep the legend off the curves
        fig.set_size_inches(12, 5)
        ax.legend(*entries, fontsize=8, loc="upper left", bbox_to_anchor=(1.1, 1.0), borderaxespad=0)
    else:
        ax.legend(*entries, fontsize=8, loc="upper right")
    return _png(fig, ax, title)


def eval_curves_png(runs: dict[str, Sequence[dict]], title: str = "", key: str = "eval_span_k_loss") -> bytes:
    """PNG bytes: one validation curve per run (sweep trials), on the same fixed-mask task."""
    fig, ax = plt.subplots(figsize=(9, 5), dpi=110)
    for label, lines in runs.items():
        xs, ys = _series(lines, key)
        ax.plot(xs, ys, marker="o", ms=3, lw=1.4, label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(key.replace("_", " "))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _png(fig, ax, title)
