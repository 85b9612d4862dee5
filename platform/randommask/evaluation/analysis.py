"""The RandomMask paper's analyses, measured on your runs (``randommask analyze``; docs/analysis.md).

1. Loss dynamics: how fast the training loss collapses, and the fixed-mask validation losses.
2. K-mer embedding structure: the input embeddings' PCA, and how strongly they cluster by a k-mer
   property (silhouette and k-NN agreement on the central nucleotide, k-NN R^2 of GC content).
3. Attention concentration: per layer and head, the mean entropy of attention rows normalized by
   log(length) (1 = uniform, 0 = all weight on one token) and the mean maximum attention weight,
   on fixed validation windows.
4. Optionally, a fine-tuning comparison table (e.g. overlapping vs non-overlapping k-mers).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from randommask.common import rundir, storage
from randommask.data.floors import best_counting, best_table
from randommask.errors import UserError

ProgressFn = Callable[[int], None]


# ---- what is analysed ---------------------------------------------------------------------------
@dataclass
class Source:
    """One run or checkpoint: its label, local model directory, metrics history and config."""

    label: str
    path: str
    model_dir: str
    history: list[dict] = field(default_factory=list)
    config: dict | None = None
    floors: dict | None = None


def _run_candidates(path: str) -> list[str]:
    """``path`` and, for a final/, model/ or step_*/ inside a run directory, its ancestors up to the run."""
    out, parts = [path.rstrip("/")], path.rstrip("/").split("/")
    while len(parts) > 1 and rundir.is_run_part(parts[-1]):
        parts.pop()
        out.append("/".join(parts))
    return out


def _label(path: str) -> str:
    """A run's name: the directory above any final/, model/ or step_*/."""
    return _run_candidates(path)[-1].rsplit("/", 1)[-1] or path


def load_source(path: str, storage_options: dict | None = None) -> Source:
    """A run directory (metrics.jsonl, config.yaml, final/ or step_*/) or a model directory, local or
    s3://. The run of a checkpoint inside a run directory is found too, for its loss history."""
    from randommask.common.checkpoints import node_checkpoint

    run = path.rstrip("/")
    history, config, found, floors = [], None, None, None
    for c in _run_candidates(path):
        candidate = rundir.RunDir(c, storage_options)
        if candidate.exists(rundir.METRICS):
            found = candidate
            history, config, floors = candidate.read_metrics(), candidate.read_config(), candidate.read_floors()
            break
    model_path = path
    if found is not None and found.uri == run and not storage.is_local(run):  # a remote run: fetch only its final model
        model_path = found.final
    try:
        model_dir = node_checkpoint(model_path, storage_options)
    except UserError as e:  # resolve_checkpoint speaks of --checkpoint; here it is the positional argument
        raise UserError(f"{str(e).replace('--checkpoint ', '', 1)} (give a run directory or a model directory)") from None
    return Source(label=_label(path), path=path, model_dir=model_dir, history=history, config=config, floors=floors)


# ---- 1. loss dynamics ---------------------------------------------------------------------------
def loss_dynamics(history: list[dict], floors: dict | None = None) -> dict[str, Any]:
    """Numbers from a metrics.jsonl history (rank-0 log lines, plus evaluation lines), on [MASK]
    inputs where the history has them (older runs: all labelled positions), placed between the
    run's floors (floors.json) when given."""
    key = "mask_loss" if any(x.get("mask_loss") is not None for x in history) else "loss"
    train = [x for x in history if x.get(key) is not None]
    if not train:
        return {}
    steps = np.array([x["step"] for x in train], dtype=float)
    loss = np.array([x[key] for x in train], dtype=float)
    tail = max(1, len(loss) // 10)
    first, last = float(loss[:tail].mean()), float(loss[-tail:].mean())
    # How much of the whole decrease happened in the first tenth of training: near 1 is the paper's
    # "collapse" (the task is solved early and the rest of training learns little).
    early = float(np.interp(steps[0] + 0.1 * (steps[-1] - steps[0]), steps, loss))
    out: dict[str, Any] = {
        "steps": int(steps[-1]), "loss_key": key, "initial_loss": first, "final_loss": last,
        "early_drop_fraction": (first - early) / (first - last) if first - last > 1e-9 else None,
    }
    acc_key = "mask_acc" if key == "mask_loss" else "acc"
    if train[-1].get(acc_key) is not None:
        out["final_masked_accuracy"] = float(np.mean([x[acc_key] for x in train[-tail:] if x.get(acc_key) is not None]))
    # The curriculum's footprint: the change of training loss across each widening of the spans.
    if "span_max" in train[0]:
        spans = np.array([x["span_max"] for x in train])
        jumps = []
        for i in np.flatnonzero(np.diff(spans)) + 1:
            before, after = loss[max(0, i - 3):i], loss[i:i + 3]
            jumps.append({"step": int(steps[i]), "span": int(spans[i]), "loss_change": float(after.mean() - before.mean())})
        out["phase_jumps"] = jumps
    for metric in ("eval_span_k_mask_loss", "eval_span_2k_mask_loss", "eval_span_k_mask_acc", "eval_span_2k_mask_acc",
                   "eval_span_k_loss", "eval_span_2k_loss", "eval_span_k_acc", "eval_span_2k_acc",
                   "eval_span_k_base_loss", "eval_span_2k_base_loss"):
        evals = [x[metric] for x in history if x.get(metric) is not None]
        if evals:
            out[f"final_{metric}"] = float(evals[-1])
            out[f"best_{metric}"] = float(min(evals) if metric.endswith("loss") else max(evals))
    out.update(between_floors(out.get("final_eval_span_k_mask_loss"), floors))
    return out


def between_floors(loss: float | None, floors: dict | None) -> dict[str, Any]:
    """Where a span-k [MASK]-only loss stands: ``floor_context_free``, ``floor_span_k_overlap`` and
    the overlap-only references beside it (with the best counting lines of each evaluation's geometry
    and the plain count table, for the per-base losses), ``below_context_free`` (nats) and ``collapse_progress`` (0 at the context-free floor,
    1 at the overlap reference)."""
    if not floors or floors.get("context_free") is None:
        return {}
    top, ref = floors["context_free"], floors.get("eval_span_k_overlap")
    best = best_table(floors)
    out = {"floor_context_free": top, "floor_span_k_overlap": ref,
           "overlap_only_span_k": floors.get("overlap_only_span_k"), "overlap_only_span_2k": floors.get("overlap_only_span_2k"),
           "best_table_base_loss": best[1] if best else None,
           **{key: (best_counting(floors, name) or (None, None))[1]
              for name, key in (("span_k", "best_counting_span_k"), ("span_2k", "best_counting_span_2k"))}}
    if loss is not None:
        out["below_context_free"] = top - loss
        if ref is not None and top > ref:
            out["collapse_progress"] = (top - loss) / (top - ref)
    return out


# ---- 2. k-mer embeddings ------------------------------------------------------------------------
def kmer_codes(k: int) -> np.ndarray:
    """(4**k, k) base codes (A=0, T=1, C=2, G=3) of the k-mer tokens, in vocabulary order (id - 5)."""
    ids = np.arange(4**k)
    return np.stack([(ids >> (2 * (k - 1 - i))) & 3 for i in range(k)], axis=1)


def kmer_embedding_stats(emb: np.ndarray, k: int, neighbours: int = 10, seed: int = 0) -> dict[str, Any]:
    """How the k-mer embeddings ``emb`` (4**k, hidden; vocabulary order) are organised.

    - ``silhouette_central``: silhouette (cosine) of the clusters by central nucleotide, in [-1, 1];
      about 0 when the embedding ignores it.
    - ``knn_central``: fraction of each k-mer's nearest neighbours (cosine) sharing its central
      nucleotide; chance is 0.25. ``knn_by_position`` is the same for every position in the k-mer.
    - ``knn_gc_r2``: R^2 of predicting a k-mer's GC content by its neighbours' mean; about 0 by chance.
    - ``mean_cosine``: mean pairwise cosine similarity; low means the embeddings are distinct.
    - ``effective_rank``: exp(entropy) of the normalised singular values of the centred embeddings.
    - ``pca``: the 2-D projection, with the variance each component explains.
    """
    from sklearn.metrics import silhouette_score
    from sklearn.neighbors import NearestNeighbors

    emb = np.asarray(emb, dtype=np.float64)
    codes = kmer_codes(k)
    if emb.shape[0] != len(codes):
        raise ValueError(f"expected {len(codes)} k-mer embeddings for k={k}, got {emb.shape[0]}")
    central = codes[:, k // 2]
    gc = (codes >= 2).mean(axis=1)  # C=2, G=3
    unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    nn = NearestNeighbors(n_neighbors=neighbours + 1, metric="cosine").fit(unit)
    idx = nn.kneighbors(unit, return_distance=False)[:, 1:]  # without the point itself
    by_pos = [float((codes[idx, p] == codes[:, p, None]).mean()) for p in range(k)]
    gc_pred = gc[idx].mean(axis=1)
    centred = emb - emb.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    p = s**2 / max((s**2).sum(), 1e-12)
    ps = s / max(s.sum(), 1e-12)
    total = unit.sum(axis=0)
    n = len(unit)
    return {
        "silhouette_central": float(silhouette_score(unit, central, metric="cosine", sample_size=min(n, 4096),
                                                     random_state=seed)),
        "knn_central": by_pos[k // 2],
        "knn_by_position": by_pos,
        "knn_gc_r2": float(1 - ((gc - gc_pred) ** 2).sum() / max(((gc - gc.mean()) ** 2).sum(), 1e-12)),
        "mean_cosine": float((total @ total - n) / (n * (n - 1))),
        "effective_rank": float(np.exp(-(ps[ps > 0] * np.log(ps[ps > 0])).sum())),
        "pca": {"explained_variance": [float(p[0]), float(p[1])], "xy": (centred @ vt[:2].T).astype(np.float32)},
        "central": central, "gc": gc,
    }


def input_embeddings(model_dir: str) -> tuple[np.ndarray, int]:
    """The k-mer rows of a checkpoint's input embedding matrix, and k."""
    from safetensors.torch import load_file

    from randommask.data.tokenizer import KmerTokenizer

    k = KmerTokenizer.from_pretrained(model_dir).k
    weights = Path(model_dir) / "model.safetensors"
    state = load_file(str(weights)) if weights.is_file() else {}
    key = next((x for x in state if x.endswith("embeddings.word_embeddings.weight")), None)
    if key is not None:
        table = state[key]
    else:  # sharded or .bin checkpoints: let transformers find the table
        from transformers import AutoModelForMaskedLM

        table = AutoModelForMaskedLM.from_pretrained(model_dir).get_input_embeddings().weight.detach()
    return table[5:5 + 4**k].float().numpy(), k


# ---- 3. attention concentration ------------------------------------------------------------------
def attention_row_stats(attn: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sums over valid query rows of one layer's attention ``attn`` (B, H, L, L), with ``mask`` (B, L)
    marking real tokens: (normalized entropy sum (H,), max weight sum (H,), number of rows).

    A row's entropy is divided by log(n), n the row's number of real keys: 1 for uniform attention,
    0 for attention on a single token."""
    m = mask.to(attn.dtype)
    n = m.sum(dim=1)  # (B,)
    p = attn * m[:, None, None, :]
    ent = -(p * torch.log(p.clamp_min(1e-30))).sum(dim=-1)  # (B, H, L)
    norm = ent / torch.log(n.clamp_min(2))[:, None, None]
    rows = m[:, None, :]  # valid queries
    return (norm * rows).sum(dim=(0, 2)), (p.amax(dim=-1) * rows).sum(dim=(0, 2)), m.sum()


@torch.no_grad()
def attention_concentration(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                            batch_size: int = 16, device: str | torch.device = "cpu",
                            progress: ProgressFn | None = None) -> dict[str, np.ndarray]:
    """Mean normalized attention entropy and mean maximum attention weight per (layer, head) of a
    BERT encoder (any model whose forward takes ``output_attentions``), over the given windows."""
    encoder = getattr(model, "base_model", model)
    encoder.eval().to(device)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    ent_sum = max_sum = None
    rows = torch.zeros(())
    for i in range(0, len(input_ids), batch_size):
        ids = input_ids[i:i + batch_size].to(device)
        mask = attention_mask[i:i + batch_size].to(device)
        out = encoder(input_ids=ids, attention_mask=mask, output_attentions=True)
        if not out.attentions or out.attentions[0] is None:
            raise RuntimeError("the model returned no attention weights (load it with attn_implementation='eager')")
        stats = [attention_row_stats(a.float(), mask) for a in out.attentions]
        e = torch.stack([s[0] for s in stats]).cpu()
        mx = torch.stack([s[1] for s in stats]).cpu()
        ent_sum = e if ent_sum is None else ent_sum + e
        max_sum = mx if max_sum is None else max_sum + mx
        rows = rows + stats[0][2].cpu()
        if progress:
            progress(len(ids))
    return {"entropy": (ent_sum / rows).numpy(), "max_weight": (max_sum / rows).numpy()}


def analysis_windows(prepared: str, window_bp: int, tok, limit: int, max_positions: int,
                     storage_options: dict | None = None) -> torch.Tensor:
    """The first ``limit`` fixed validation windows, tokenized with ``tok`` (a KmerTokenizer)."""
    from randommask.data.stream import validation_windows

    tokens = tok.num_tokens(window_bp)
    if tokens > max_positions:
        raise UserError(f"--window-bp {window_bp} gives {tokens} tokens, more than the model's {max_positions} "
                        "positions; use a shorter window")
    data = {"prepared": prepared, "window_bp": window_bp, "k": tok.k, "stride": tok.stride,
            "storage_options": storage_options or {}}
    return torch.from_numpy(validation_windows(data, limit)).long()


# ---- 4. fine-tuning comparison --------------------------------------------------------------------
def finetune_comparison(a: str, b: str, storage_options: dict | None = None) -> dict[str, Any]:
    """Per-dataset scores of two ``randommask finetune`` outputs (results.json or its directory)."""
    loaded = []
    for path in (a, b):
        uri = path if path.endswith(".json") else storage.join(path, "results.json")
        try:
            loaded.append(json.loads(storage.read_bytes(uri, storage_options)))
        except UserError:
            raise UserError(f"--finetune-results {path}: no results.json (run randommask finetune --out there)") from None
        except json.JSONDecodeError as e:
            raise UserError(f"--finetune-results {uri}: not JSON ({e.msg}, line {e.lineno})") from None
    labels = [_label(p[:-len("/results.json")] if p.endswith("results.json") else p) for p in (a, b)]
    if labels[0] == labels[1]:
        labels = [f"A: {labels[0]}", f"B: {labels[1]}"]
    by = [{r["dataset"]: r for r in res.get("datasets", [])} for res in loaded]
    rows = []
    for name in [d for d in by[0] if d in by[1]]:
        ra, rb = by[0][name], by[1][name]
        row = {"dataset": name, "metric": ra.get("metric")}
        for lab, r in zip(labels, (ra, rb)):
            row[lab] = {"mean": r.get("score_mean"), "std": r.get("score_std"), "seeds": r.get("seeds_ok")}
        if ra.get("score_mean") is not None and rb.get("score_mean") is not None:
            row["difference"] = ra["score_mean"] - rb["score_mean"]
        rows.append(row)
    if not rows:
        raise UserError(f"--finetune-results: {a} and {b} share no dataset")
    diffs = [r["difference"] for r in rows if "difference" in r]
    return {"labels": labels, "rows": rows, "mean_difference": float(np.mean(diffs)) if diffs else None,
            "a_better": sum(d > 0 for d in diffs), "b_better": sum(d < 0 for d in diffs)}


# ---- the report -----------------------------------------------------------------------------------
def analyze(paths: list[str], out: str, prepared: str | None = None, finetune_results: list[str] | None = None,
            windows: int = 256, window_bp: int | None = None, batch_size: int = 16, device: str = "auto",
            storage_options: dict | None = None, show_progress: bool = True, log=print) -> dict[str, Any]:
    """Analyse one or more runs/checkpoints into ``out``: report.html, report.json and the PNGs."""
    import transformers
    from transformers import AutoModelForMaskedLM

    from randommask.common.progress import progress
    from randommask.data.tokenizer import KmerTokenizer
    from randommask.evaluation import plots
    from randommask.evaluation.report import json_default, render_html

    if windows < 1 or batch_size < 1:
        raise UserError("--windows and --batch-size must be >= 1")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    transformers.logging.disable_progress_bar()  # one bar: ours
    sources = [load_source(p, storage_options) for p in paths]
    labels = [s.label for s in sources]
    for i, lab in enumerate(labels):  # two runs named alike stay apart
        if labels.count(lab) > 1:
            sources[i].label = f"{lab} ({i + 1})"
    ft = finetune_comparison(*finetune_results, storage_options=storage_options) if finetune_results else None

    os.makedirs(out, exist_ok=True)
    report: dict[str, Any] = {"runs": [], "finetune": ft, "windows": None, "prepared": None}
    emb_stats = {}
    attention = {}
    for s in sources:
        entry: dict[str, Any] = {"label": s.label, "path": s.path, "model": s.model_dir,
                                 "loss": loss_dynamics(s.history, s.floors) if s.history else None,
                                 "floors": s.floors}
        emb, k = input_embeddings(s.model_dir)
        stats = kmer_embedding_stats(emb, k)
        emb_stats[s.label] = stats
        entry["embeddings"] = {key: v for key, v in stats.items() if key not in ("pca", "central", "gc")}
        entry["embeddings"]["pca_explained_variance"] = stats["pca"]["explained_variance"]
        report["runs"].append(entry)

    # Attention on the same validation windows for every model (each tokenized its own way).
    data = prepared or next((s.config["data"]["prepared"] for s in sources if s.config), None)
    if data is None:
        log("attention: skipped (no --prepared dataset and no run config to find one)")
    else:
        if storage.is_local(data):
            data = os.path.abspath(data)
        wbp = window_bp or next((s.config["data"].get("window_bp") for s in sources if s.config), None) or 512
        report["prepared"], report["window_bp"] = data, wbp
        models, inputs = [], []
        for s in sources:  # every window set first: the bar's total is what will run
            tok = KmerTokenizer.from_pretrained(s.model_dir)
            models.append(AutoModelForMaskedLM.from_pretrained(s.model_dir, attn_implementation="eager"))
            inputs.append(analysis_windows(data, wbp, tok, windows, models[-1].config.max_position_embeddings,
                                           storage_options))
        report["windows"] = int(min(len(x) for x in inputs))  # fewer than asked when the split is small
        bar = progress(sum(len(x) for x in inputs), "attention", "windows", show_progress)
        for s, entry, model, ids in zip(sources, report["runs"], models, inputs):
            att = attention_concentration(model, ids, batch_size=batch_size, device=device, progress=bar.update)
            attention[s.label] = att
            ent, mx = att["entropy"].astype(np.float64), att["max_weight"].astype(np.float64)  # float32 prints noisily
            entry["attention"] = {
                "entropy": ent.round(4).tolist(), "max_weight": mx.round(4).tolist(),
                "entropy_by_layer": ent.mean(axis=1).round(4).tolist(),
                "max_weight_by_layer": mx.mean(axis=1).round(4).tolist(),
                "windows": int(len(ids)), "tokens_per_window": int(ids.shape[1]),
            }
        bar.close()

    pngs = {}
    if any(s.history for s in sources):
        # The floors of the first run that has them: runs compared side by side share data and windows.
        pngs["loss_dynamics.png"] = plots.loss_dynamics_png({s.label: s.history for s in sources if s.history},
                                                            next((s.floors for s in sources if s.floors), None))
    pngs["kmer_embeddings.png"] = plots.kmer_pca_png({lab: (st["pca"]["xy"], st["gc"], st["central"],
                                                            st["pca"]["explained_variance"])
                                                      for lab, st in emb_stats.items()})
    if attention:
        pngs["attention.png"] = plots.attention_png(attention)
    for name, data_png in pngs.items():
        Path(out, name).write_bytes(data_png)
    report["pngs"] = sorted(pngs)
    Path(out, "report.json").write_text(json.dumps(report, indent=1, default=json_default) + "\n")
    Path(out, "report.html").write_text(render_html(report, pngs))
    return report
