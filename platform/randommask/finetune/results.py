"""Aggregated fine-tuning results: per dataset mean ± std over seeds, the protocol each ran under,
and the published baselines beside ours only where the protocol makes them comparable."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import numpy as np

from randommask.common import storage
from randommask.errors import UserError
from randommask.evaluation import gue
from randommask.finetune import search


def load_baselines(path: str) -> dict[str, dict[str, float]]:
    """``dataset,model,metric,value`` -> {dataset: {model: value}} for each dataset's headline metric."""
    text = storage.read_bytes(path).decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows or not {"dataset", "model", "metric", "value"} <= set(rows[0]):
        raise UserError(f"--baselines {path}: expected a CSV with columns dataset,model,metric,value")
    out: dict[str, dict[str, float]] = {}
    for i, r in enumerate(rows, start=2):
        ds = gue.REGISTRY.get(r["dataset"])
        if ds is None or r["metric"] != ds.metric:
            continue
        try:
            out.setdefault(r["dataset"], {})[r["model"]] = float(r["value"])
        except ValueError:
            raise UserError(f"--baselines {path}: line {i}: value {r['value']!r} is not a number") from None
    return out


def comparability(protocol_name: str, max_train: int | None, max_eval: int | None) -> str | None:
    """None when results can stand beside the published numbers, else why not (one sentence)."""
    if protocol_name == "fast":
        return "the fast protocol selects by the dev metric once per epoch, not as the published runs did"
    if protocol_name == "custom":
        return "--epochs/--lr/--batch-size overrides made this a custom protocol"
    if max_train or max_eval:
        return "the data were subsampled (--max-train/--max-eval); the published runs used every row"
    return None


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.array(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def aggregate(trials: list[dict], published: dict | None, checkpoint: str, run: dict[str, Any]) -> dict[str, Any]:
    """``run`` holds the protocol, selection, subsampling and ``not_comparable`` (None or why), and in an
    ``--lr`` search ``lr_search``, the rates: then each dataset's scores are those of the rate chosen on dev."""
    rows = []
    for name in dict.fromkeys(t["dataset"] for t in trials):
        ds = gue.REGISTRY[name]
        ok = [t for t in trials if t["dataset"] == name and t["status"] == "ok"]
        failed = [t for t in trials if t["dataset"] == name and t["status"] != "ok"]
        choice = None
        if run.get("lr_search"):  # test scores of the selected rate only
            choice = search.choose([t for t in trials if t["dataset"] == name], run["lr_search"], run["selection"],
                                   ds.metric, run.get("search_seeds"))
            ok = [t for t in ok if search.rate_of(t) == choice.selected]
        row: dict[str, Any] = {"dataset": name, "task": ds.task, "metric": ds.metric, "seeds_ok": len(ok),
                               "seeds_failed": len(failed), "errors": [t["error"] for t in failed]}
        if choice is not None:
            row["lr_search"] = choice.to_json()
        for m in ("mcc", "f1_macro", "accuracy"):
            if ok:
                row[f"{m}_mean"], row[f"{m}_std"] = _mean_std([t["test"][m] for t in ok])
        if ok:
            ok.sort(key=lambda t: t["seed"])
            row["score_mean"], row["score_std"] = row[f"{ds.metric}_mean"], row[f"{ds.metric}_std"]
            row["per_seed"] = {t["seed"]: t["test"][ds.metric] for t in ok}
            row["hyperparameters"] = ok[0]["hyperparameters"]  # the protocol's values (the same for every seed)
            row["ran"] = {t["seed"]: t["ran"] for t in ok}  # what each seed did: steps, evaluations, best step
            if any(t.get("model") for t in ok):  # --save-models: each seed's selected model, with its card
                row["models"] = {t["seed"]: t["model"] for t in ok if t.get("model")}
        if published and name in published and ok and run["not_comparable"] is None:
            row["baselines"] = published[name]
            better = sum(1 for v in published[name].values() if v > row["score_mean"])
            row["rank"] = better + 1
            row["rank_of"] = len(published[name]) + 1
        rows.append(row)
    scored = [r for r in rows if "score_mean" in r]
    tasks = {}
    for task in dict.fromkeys(r["task"] for r in scored):
        tasks[task] = float(np.mean([r["score_mean"] for r in scored if r["task"] == task]))
    return {"checkpoint": checkpoint, **run, "datasets": rows, "tasks": tasks,
            "overall": float(np.mean([r["score_mean"] for r in scored])) if scored else None,
            "failed_trials": sum(r["seeds_failed"] for r in rows)}


def write_results(out: str, results: dict[str, Any], storage_options: dict | None = None) -> None:
    rows = results["datasets"]
    models = sorted({m for r in rows for m in r.get("baselines", {})})
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["dataset", "task", "metric", "protocol", "score_mean", "score_std", "seeds_ok", "seeds_failed",
                "mcc_mean", "mcc_std", "f1_macro_mean", "f1_macro_std", "accuracy_mean", "accuracy_std", "rank",
                *models])
    for r in rows:
        w.writerow([r["dataset"], r["task"], r["metric"], results["protocol"],
                    *[_fmt(r.get(k)) for k in ("score_mean", "score_std")], r["seeds_ok"], r["seeds_failed"],
                    *[_fmt(r.get(k)) for k in ("mcc_mean", "mcc_std", "f1_macro_mean", "f1_macro_std",
                                               "accuracy_mean", "accuracy_std")],
                    f"{r['rank']}/{r['rank_of']}" if "rank" in r else "",
                    *[_fmt(r.get("baselines", {}).get(m)) for m in models]])
    for name, data in (("results.csv", buf.getvalue()), ("results.json", json.dumps(results, indent=1) + "\n"),
                       ("results.md", markdown(results))):
        storage.write_bytes(storage.join(out, name), data.encode(), storage_options)


def _fmt(v: Any) -> str:
    return "" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


_SELECTION_WORDS = {"dev_loss@eval_steps": "the lowest dev loss, checked every eval_steps (and at epoch ends when "
                                           "a run is shorter than eval_steps), restored for test",
                    "dev_metric@epoch": "the best dev metric at the end of an epoch, kept for test"}


def markdown(results: dict[str, Any]) -> str:
    rows = results["datasets"]
    models = sorted({m for r in rows for m in r.get("baselines", {})})
    lines = [f"# GUE fine-tuning: {results['checkpoint']}", "",
             f"Protocol: **{results['protocol']}**; model selection: {_SELECTION_WORDS[results['selection']]}. "
             f"Precision: {results['precision']} (the published runs: fp16).",
             "Test scores, mean ± sample std over seeds (MCC; macro F1 for virus/covid).", ""]
    if results["not_comparable"]:
        lines += [f"Published numbers are not shown: {results['not_comparable']}, so they are not comparable.", ""]
    if results.get("lr_search"):
        rule = "lowest" if results["selection"] == "dev_loss@eval_steps" else "highest"
        lines += [f"Learning rate chosen per dataset on dev from {', '.join(f'{x:g}' for x in results['lr_search'])}: "
                  f"the {rule} mean over seeds of each seed's selected dev score (ties: the smaller rate); the "
                  "scores below are the chosen rate's (the lr column), every rate's dev scores under "
                  "\"Learning rate on dev\"."
                  + (f" Rates were compared on the first {results['search_seeds']} seed(s); the other seeds ran "
                     "at the chosen rate only." if results.get("search_seeds") else ""), ""]
    head = ["dataset", "metric", "ours", "seeds", "steps", "epochs", "lr", "batch"] + (["rank"] + models if models else [])
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ours = f"{r['score_mean']:.4f} ± {r['score_std']:.4f}" if "score_mean" in r else "failed"
        seeds = f"{r['seeds_ok']}" + (f" ({r['seeds_failed']} failed)" if r["seeds_failed"] else "")
        hp, ran = r.get("hyperparameters", {}), next(iter(r.get("ran", {}).values()), {})
        cells = [r["dataset"], r["metric"], ours, seeds, str(ran.get("steps", "")), str(hp.get("epochs", "")),
                 _fmt(hp.get("lr")) if hp.get("lr") is None else f"{hp['lr']:g}", str(hp.get("batch_size", ""))]
        if models:
            cells += [f"{r['rank']}/{r['rank_of']}" if "rank" in r else ""]
            cells += [_fmt(r.get("baselines", {}).get(m)) for m in models]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| task | mean score |", "|---|---|"]
    lines += [f"| {t} | {v:.4f} |" for t, v in results["tasks"].items()]
    if results["overall"] is not None:
        lines += [f"| **overall (datasets)** | **{results['overall']:.4f}** |"]
    if results.get("lr_search"):
        lines += _lr_table(rows)
    failed = [(r["dataset"], e) for r in rows for e in r["errors"]]
    if failed:
        lines += ["", "## Failed trials", ""] + [f"- {d}: {e}" for d, e in failed]
    saved = [(r["dataset"], seed, uri) for r in rows for seed, uri in r.get("models", {}).items()]
    if saved:
        lines += ["", "## Saved models (each with its model card, README.md)", ""]
        lines += [f"- {d} seed {seed}: `{uri}`" for d, seed, uri in saved]
    return "\n".join(lines) + "\n"


def _lr_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["", "## Learning rate on dev", "", "| dataset | lr | dev score | mean over seeds | per seed | |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        choice = r["lr_search"]
        for rate in choice["rates"]:
            seeds = ", ".join(f"{v:.4f}" for _, v in sorted(rate["dev_per_seed"].items()))
            if rate["seeds_failed"]:
                seeds += f" ({rate['seeds_failed']} failed)"
            mark = "**selected**" if rate["lr"] == choice["selected"] else ""
            lines.append(f"| {r['dataset']} | {rate['lr']:g} | {choice['criterion']} | {_fmt(rate['dev_mean'])} | "
                         f"{seeds} | {mark} |")
    return lines
