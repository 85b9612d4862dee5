"""The analysis report's figures as PNG bytes: loss dynamics, k-mer embedding PCA, attention concentration."""

from __future__ import annotations

from typing import Sequence

from randommask.training.plots import colours, draw_base_losses, draw_floors, plt, save_png, series


def loss_dynamics_png(runs: dict[str, Sequence[dict]], floors: dict | None = None) -> bytes:
    """PNG bytes, five panels over steps, runs in one colour each: training loss on [MASK] inputs
    (with the span boundary, faint, on a second axis), the fixed-mask validation losses on [MASK]
    inputs against the floors, the per-base losses against chance and the best count table,
    accuracy on [MASK] inputs, and the boundary."""
    fig, axes = plt.subplots(2, 3, figsize=(18, 8), dpi=100)
    (a_loss, a_eval, a_base), (a_acc, a_span, a_free) = axes
    a_free.set_visible(False)
    draw_base_losses(a_base, runs, floors)
    span_ax = a_loss.twinx()
    for i, (label, lines) in enumerate(runs.items()):
        c = colours()[i % len(colours())]
        a_loss.plot(*series(lines, "mask_loss"), color=c, lw=1.2, label=label)
        xs, ys = series(lines, "span_max")
        if xs:
            span_ax.step(xs, ys, where="pre", color=c, alpha=0.25, lw=2)
            a_span.step(xs, ys, where="pre", color=c, lw=1.6, label=f"{label} boundary")
            a_span.step(*series(lines, "span_min"), where="pre", color=c, lw=1, ls=":", label=f"{label} shortest")
        for key, style, name in (("eval_span_k_mask_loss", "-", "span k"), ("eval_span_2k_mask_loss", "--", "span 2k")):
            a_eval.plot(*series(lines, key), style, color=c, marker="o", ms=3, label=f"{label} {name}")
        a_acc.plot(*series(lines, "mask_acc"), color=c, lw=1, alpha=0.8, label=f"{label} train")
        for key, style, name in (("eval_span_k_mask_acc", "--", "eval span k"), ("eval_span_2k_mask_acc", ":", "eval span 2k")):
            a_acc.plot(*series(lines, key), style, color=c, marker="o", ms=3, label=f"{label} {name}")
    draw_floors(a_eval, floors, ("span_k", "span_2k"))
    draw_floors(a_loss, floors, ("span_k",))
    for ax, title, ylabel in ((a_loss, "training loss on [MASK] inputs (its own masks; faint: span boundary)", "nats"),
                              (a_eval, "validation loss on [MASK] inputs, fixed masks (comparable across runs)", "nats"),
                              (a_acc, "accuracy on [MASK] inputs", "accuracy"),
                              (a_span, "masked span lengths (tokens)", "tokens")):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    span_ax.set_ylabel("span boundary (tokens)", alpha=0.6)
    return save_png(fig)


def kmer_pca_png(runs: dict[str, tuple]) -> bytes:
    """PNG bytes: per run, the 2-D PCA of its k-mer input embeddings coloured by GC content (top)
    and by central nucleotide (bottom). ``runs`` maps a label to (xy, gc, central, explained)."""
    n = len(runs)
    fig, axes = plt.subplots(2, n, figsize=(5 * n + 1, 9), dpi=100, squeeze=False)
    names = "ATCG"  # tokenizer codes 0..3
    nt_colours = {"A": "#1b9e77", "T": "#d95f02", "C": "#7570b3", "G": "#e7298a"}
    for j, (label, (xy, gc, central, explained)) in enumerate(runs.items()):
        top, bottom = axes[0, j], axes[1, j]
        sc = top.scatter(xy[:, 0], xy[:, 1], c=gc, cmap="viridis", s=4, alpha=0.7, linewidths=0)
        fig.colorbar(sc, ax=top, label="GC fraction")
        for code, nt in enumerate(names):
            sel = central == code
            bottom.scatter(xy[sel, 0], xy[sel, 1], s=4, alpha=0.6, linewidths=0, color=nt_colours[nt], label=nt)
        bottom.legend(title="central nt", markerscale=3, fontsize=8)
        for ax in (top, bottom):
            ax.set_xlabel(f"PC1 ({explained[0]:.1%})")
            ax.set_ylabel(f"PC2 ({explained[1]:.1%})")
            ax.grid(alpha=0.2)
        top.set_title(f"{label}: by GC content", fontsize=10)
        bottom.set_title(f"{label}: by central nucleotide", fontsize=10)
    return save_png(fig)


def attention_png(runs: dict[str, dict]) -> bytes:
    """PNG bytes: layer by layer, mean normalized attention entropy and mean maximum attention
    weight (line: mean over heads; band: min to max head), one colour per run; then, per run, the
    (layer x head) entropy map."""
    n = len(runs)
    fig = plt.figure(figsize=(max(12, 4 * n), 8.5), dpi=100)
    grid = fig.add_gridspec(2, max(2, n))
    a_ent = fig.add_subplot(grid[0, : max(2, n) // 2])
    a_max = fig.add_subplot(grid[0, max(2, n) // 2:])
    for i, (label, att) in enumerate(runs.items()):
        c = colours()[i % len(colours())]
        for ax, key in ((a_ent, "entropy"), (a_max, "max_weight")):
            v = att[key]
            layers = range(1, v.shape[0] + 1)
            ax.plot(layers, v.mean(axis=1), marker="o", color=c, label=label)
            ax.fill_between(layers, v.min(axis=1), v.max(axis=1), color=c, alpha=0.15)
    a_ent.set_title("attention entropy / log(length)  (1 uniform, 0 one token)", fontsize=10)
    a_ent.set_ylim(0, 1.02)
    a_max.set_title("mean maximum attention weight (1/length: uniform; 1: one token)", fontsize=10)
    a_max.set_ylim(0, None)  # near 1/length for uniform attention: a 0-1 axis would hide the differences
    for ax in (a_ent, a_max):
        ax.set_xlabel("layer")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.xaxis.get_major_locator().set_params(integer=True)
    for j, (label, att) in enumerate(runs.items()):
        ax = fig.add_subplot(grid[1, j])
        im = ax.imshow(att["entropy"], vmin=0, vmax=1, cmap="magma", aspect="auto")
        ax.set_title(f"{label}: entropy by layer and head", fontsize=9)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_xticks(range(att["entropy"].shape[1]), [str(h + 1) for h in range(att["entropy"].shape[1])])
        ax.set_yticks(range(att["entropy"].shape[0]), [str(h + 1) for h in range(att["entropy"].shape[0])])
        fig.colorbar(im, ax=ax)
    return save_png(fig)
