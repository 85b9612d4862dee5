"""The analysis report as one self-contained HTML page (PNGs embedded, numbers from report.json)."""

from __future__ import annotations

import base64
import html
import math
from typing import Any

import numpy as np


def json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o).__name__)


def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{digits}f}" if isinstance(v, float) else html.escape(str(v))


def _table(head: list[str], rows: list[list[Any]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _img(pngs: dict[str, bytes], name: str, alt: str) -> str:
    if name not in pngs:
        return ""
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(pngs[name]).decode()}">'


def render_html(report: dict[str, Any], pngs: dict[str, bytes]) -> str:
    """One self-contained page: the PNGs are embedded, the numbers are report.json's."""
    runs = report["runs"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>randommask analysis</title><style>"
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}img{max-width:100%}"
        "p.note{color:#555;font-size:90%}</style></head><body>",
        "<h1>randommask analysis</h1>",
        "<p>" + ", ".join(f"<b>{html.escape(r['label'])}</b> ({html.escape(r['path'])})" for r in runs) + ". "
        "What each number means: docs/analysis.md.</p>",
        "<h2>1. Loss dynamics</h2>",
    ]
    loss_rows = [[r["label"], r["loss"].get("steps"), r["loss"].get("final_eval_span_k_mask_loss"),
                  r["loss"].get("floor_context_free"), r["loss"].get("floor_span_k_overlap"),
                  r["loss"].get("collapse_progress"), r["loss"].get("final_eval_span_2k_mask_loss"),
                  r["loss"].get("final_eval_span_k_mask_acc"), r["loss"].get("initial_loss"), r["loss"].get("final_loss"),
                  r["loss"].get("early_drop_fraction"), r["loss"].get("overlap_only_span_k"),
                  r["loss"].get("final_eval_span_k_base_loss"), r["loss"].get("final_eval_span_2k_base_loss"),
                  r["loss"].get("best_counting_span_k"), r["loss"].get("best_counting_span_2k"),
                  r["loss"].get("best_table_base_loss")]
                 for r in runs if r.get("loss")]
    if loss_rows:
        parts.append(_table(["run", "steps", "eval span-k [MASK] loss", "context-free floor", "span-k overlap ref.",
                             "collapse progress", "eval span-2k [MASK] loss", "eval span-k [MASK] acc",
                             "initial train loss", "final train loss", "early drop fraction", "span-k overlap only",
                             "eval span-k per base", "eval span-2k per base", "best counting span-k", "best counting span-2k",
                             "plain count table (sees more)"], loss_rows))
        parts.append("<p class='note'>Losses on positions whose input is [MASK] (a kept token shows its own label, "
                     "so all-label losses reward copying). First read each run between its floors: the context-free "
                     "floor is what k-mer frequencies alone score, the overlap reference what reading the hidden base "
                     "off its neighbours scores (approximate); collapse progress is 0 at the first and 1 at the "
                     "second. Early drop fraction: share of the whole training-loss decrease reached in the first "
                     "tenth of the steps. The validation losses use the same windows and masks for every run, so "
                     "they compare across schedules; training losses do not. Overlap only: the [MASK] loss of a "
                     "perfect reader of the visible bases that knows no DNA; a loss above it can all be overlap "
                     "reading. Per base: nats per base no unmasked token shows (chance ln 4 = 1.386, whatever the "
                     "span); below the best counting line (count tables of the bases the model sees, in each evaluation's geometry) is knowledge of DNA beyond counting.</p>")
        parts.append(_img(pngs, "loss_dynamics.png", "loss dynamics"))
    else:
        parts.append("<p>No metrics.jsonl found (checkpoints only).</p>")
    parts.append("<h2>2. K-mer embeddings</h2>")
    parts.append(_table(["run", "silhouette (central nt)", "k-NN agreement (central nt)", "k-NN R² (GC)",
                         "mean cosine", "effective rank", "PC1+PC2 variance"],
                        [[r["label"], r["embeddings"]["silhouette_central"], r["embeddings"]["knn_central"],
                          r["embeddings"]["knn_gc_r2"], r["embeddings"]["mean_cosine"],
                          r["embeddings"]["effective_rank"], sum(r["embeddings"]["pca_explained_variance"])]
                         for r in runs]))
    parts.append("<p class='note'>k-NN agreement: chance is 0.25. Per position in the k-mer (report.json, "
                 "knn_by_position) it shows which bases the embedding is organised by.</p>")
    parts.append(_img(pngs, "kmer_embeddings.png", "k-mer embedding PCA"))
    parts.append("<h2>3. Attention concentration</h2>")
    att = [r for r in runs if r.get("attention")]
    if att:
        layers = len(att[0]["attention"]["entropy_by_layer"])
        parts.append(f"<p>{report['windows']} validation windows of {report['window_bp']} bp from "
                     f"{html.escape(str(report['prepared']))}.</p>")
        parts.append(_table(["run"] + [f"layer {i + 1} entropy" for i in range(layers)] + ["max weight, most concentrated layer"],
                            [[r["label"], *r["attention"]["entropy_by_layer"],
                              max(r["attention"]["max_weight_by_layer"])] for r in att]))
        parts.append("<p class='note'>Entropy of each attention row divided by log(length), averaged over heads: "
                     "1 is uniform attention, 0 is all weight on one token. A layer far below its neighbours "
                     "attends to few tokens.</p>")
        parts.append(_img(pngs, "attention.png", "attention concentration"))
    else:
        parts.append("<p>Skipped: give --prepared DATA (a prepared dataset with validation windows).</p>")
    ft = report.get("finetune")
    if ft:
        a, b = ft["labels"]
        parts.append("<h2>4. Fine-tuning</h2>")
        parts.append(_table(["dataset", "metric", a, b, f"{a} − {b}"],
                            [[r["dataset"], r["metric"],
                              f"{_fmt(r[a]['mean'])} ± {_fmt(r[a]['std'])}", f"{_fmt(r[b]['mean'])} ± {_fmt(r[b]['std'])}",
                              r.get("difference")] for r in ft["rows"]]))
        parts.append(f"<p>Mean difference {_fmt(ft['mean_difference'])}; {a} better on {ft['a_better']}, "
                     f"{b} better on {ft['b_better']} dataset(s).</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
