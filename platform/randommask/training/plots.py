"""Plots as PNG bytes: a run's loss curves (with the span boundary and the floors) and a sweep's
evaluation curves, and the drawing helpers the analysis figures (evaluation.plots) share."""

from __future__ import annotations

import io
from typing import Sequence

import matplotlib

matplotlib.use("Agg")  # no display on workers or CI
import matplotlib.pyplot as plt  # noqa: E402


def titled_png(fig, ax, title: str) -> bytes:
    if title:
        ax.set_title(title)
    return save_png(fig)


def series(lines: Sequence[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(ln["step"], ln[key]) for ln in lines if ln.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def draw_floors(ax, floors: dict | None, eval_sets: Sequence[str] = ("span_k",)) -> None:
    """Horizontal lines for the references in a run's floors.json (randommask.data.floors)."""
    from randommask.data.floors import floor_lines

    seen = set()
    for i, name in enumerate(eval_sets):
        for value, label in floor_lines(floors, name):
            if label in seen:
                continue
            seen.add(label)
            grey = "black" if label.startswith("context-free") else "dimgrey"
            ax.axhline(value, color=grey, lw=1, ls="-." if i else "--", alpha=0.7, label=f"{label}: {value:.2f}")
            lo, hi = ax.get_ylim()  # keep every line inside the frame, with room around it
            ax.set_ylim(min(lo, value - 0.3), max(hi, value + 0.3))


def draw_base_losses(ax, runs: dict[str, Sequence[dict]], floors: dict | None) -> None:
    """The per-base losses (nats per hidden base) of each run, with chance and the best counting line
    of each evaluation set's geometry."""
    from randommask.data.floors import base_lines

    for i, (label, lines) in enumerate(runs.items()):
        prefix = f"{label}: " if len(runs) > 1 else ""
        for key, style, name in (("eval_span_k_base_loss", "--", "span k"), ("eval_span_2k_base_loss", ":", "span 2k")):
            xs, ys = series(lines, key)
            if xs:
                ax.plot(xs, ys, style, color=colours()[i % len(colours())], lw=1.6, marker="o", ms=3,
                        label=f"{prefix}{name} per base")
    for value, label in base_lines(floors):
        # each evaluation's counting line in that evaluation's style (span-k dashed, span-2k dotted)
        style = ":" if "span-2k" in label else "-" if label.startswith("chance") else "--"
        label = label if label.startswith("chance") else f"{label}, the line to beat"
        ax.axhline(value, color="black" if label.startswith("chance") else "tab:green", lw=1.2, ls=style, alpha=0.8,
                   label=f"{label}: {value:.3f}")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("eval loss per hidden base (nats)")
    ax.set_title("what the model knows about hidden bases", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)  # below the axes: off the curves


def loss_curves_png(runs: dict[str, Sequence[dict]], title: str = "", floors: dict | None = None) -> bytes:
    """PNG bytes: losses on [MASK] inputs per step (train solid, eval dashed/dotted), the run's floors
    as horizontal lines, the boundary on a second axis; beside them, when the runs have them, the
    per-base losses against chance and the best counting lines. ``runs`` maps a label to metrics.jsonl lines."""
    per_base = any(series(lines, "eval_span_k_base_loss")[0] for lines in runs.values())
    fig, axes = plt.subplots(1, 2 if per_base else 1, figsize=(15 if per_base else 9, 5), dpi=110,
                             gridspec_kw={"width_ratios": [3, 2]} if per_base else None, squeeze=False)
    ax = axes[0][0]
    if per_base:
        draw_base_losses(axes[0][1], runs, floors)
    span_ax = ax.twinx()
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, lines) in enumerate(runs.items()):
        c = colours[i % len(colours)]
        prefix = f"{label}: " if len(runs) > 1 else ""
        ax.plot(*series(lines, "mask_loss"), color=c, lw=1.2, label=f"{prefix}train [MASK]")
        for key, style, name in (("eval_span_k_mask_loss", "--", "eval [MASK] span k"),
                                 ("eval_span_2k_mask_loss", ":", "eval [MASK] span 2k")):
            xs, ys = series(lines, key)
            if xs:
                ax.plot(xs, ys, style, color=c, lw=1.6, marker="o", ms=3, label=f"{prefix}{name}")
        xs, ys = series(lines, "span_max")
        if len(set(ys)) > 1:  # a curriculum: draw its boundary (a fixed span needs no axis)
            span_ax.step(xs, ys, where="pre", color=c, alpha=0.35, lw=2, label=f"{prefix}span boundary")
    if not span_ax.lines:
        span_ax.set_visible(False)
    draw_floors(ax, floors, ("span_k", "span_2k"))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("MLM loss on [MASK] inputs (nats)")
    span_ax.set_ylabel("span boundary (tokens)")
    ax.grid(alpha=0.3)
    handles = ax.get_legend_handles_labels()
    span_handles = span_ax.get_legend_handles_labels()
    entries = (handles[0] + span_handles[0], handles[1] + span_handles[1])
    if per_base:  # the [MASK] losses fall from the top floor to the bottom lines: the middle is free
        ax.legend(*entries, fontsize=7, loc="center right")
    elif len(entries[0]) > 4:  # keep the legend off the curves
        fig.set_size_inches(fig.get_size_inches()[0] + 4, 5)
        ax.legend(*entries, fontsize=8, loc="upper left", bbox_to_anchor=(1.1, 1.0), borderaxespad=0)
    else:
        ax.legend(*entries, fontsize=8, loc="upper right")
    return titled_png(fig, ax, title)


def eval_curves_png(runs: dict[str, Sequence[dict]], title: str = "", key: str = "eval_span_k_mask_loss",
                    floors: dict | None = None) -> bytes:
    """PNG bytes: one validation curve per run (sweep trials), on the same fixed-mask task."""
    fig, ax = plt.subplots(figsize=(9, 5), dpi=110)
    for label, lines in runs.items():
        xs, ys = series(lines, key)
        ax.plot(xs, ys, marker="o", ms=3, lw=1.4, label=label)
    if key.endswith("_base_loss"):
        from randommask.data.floors import base_lines

        for value, label in base_lines(floors):
            ax.axhline(value, color="dimgrey", lw=1, ls="--", alpha=0.7, label=f"{label}: {value:.3f}")
    elif key.startswith("eval_span_k"):
        draw_floors(ax, floors, ("span_k",))
    elif key.startswith("eval_span_2k"):
        draw_floors(ax, floors, ("span_2k",))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(key.replace("_", " "))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return titled_png(fig, ax, title)


def save_png(fig) -> bytes:
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def colours() -> list[str]:
    return plt.rcParams["axes.prop_cycle"].by_key()["color"]
