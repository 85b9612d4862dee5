"""Fine-tuning on GUE: one Ray Tune trial per (dataset, seed), results with seed variance and the
published baselines beside ours.

OUT/
    trials/<group>_<dataset>__seed<k>.json   one finished trial (a rerun skips it)
    results.csv  results.json  results.md    per dataset mean ± std over seeds, task and overall means
    tune/                                    Ray Tune's experiment state
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from randommask import gue, storage
from randommask.errors import UserError
from randommask.model import autocast
from randommask.tokenizer import KmerTokenizer

TRIAL_RETRIES = 2  # a trial that fails (lost node, storage fault) runs again from its start


# ---- checkpoints --------------------------------------------------------------------------------
def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "vocab.txt").is_file()


def resolve_checkpoint(ckpt: str, cache_dir: str | None = None, storage_options: dict | None = None) -> str:
    """A local Hugging Face directory for CKPT: a pretraining ``final/``, a Ray checkpoint
    (``step_*/`` with ``model/``), a run directory (its ``final/`` or latest checkpoint), or any
    DNABERT-compatible directory (config.json + vocab.txt). ``s3://`` ones are downloaded first."""
    if not storage.is_local(ckpt):
        fs, path = storage.filesystem(ckpt, storage_options)
        local = Path(cache_dir or tempfile.mkdtemp(prefix="randommask-ckpt-")) / "checkpoint"
        try:
            files = [f for f in fs.find(path) if not f.rstrip("/").endswith("/")]
            if not files:
                raise UserError(f"{ckpt}: no such checkpoint (no objects under it)")
            for f in files:
                rel = f[len(path.rstrip("/")) + 1 :]
                (local / rel).parent.mkdir(parents=True, exist_ok=True)
                fs.get_file(f, str(local / rel))
        except UserError:
            raise
        except Exception as e:
            raise UserError(storage.describe_error(e, ckpt)) from None
        return resolve_checkpoint(str(local))
    p = Path(ckpt)
    if not p.is_dir():
        raise UserError(f"--checkpoint {ckpt}: no such directory")
    for candidate in (p, p / "model", p / "final"):
        if _is_model_dir(candidate):
            return str(candidate.resolve())
    steps = sorted(p.glob("step_*/model"))
    if steps and _is_model_dir(steps[-1]):
        return str(steps[-1].resolve())
    raise UserError(f"--checkpoint {ckpt}: not a model directory (needs config.json and vocab.txt), a run's final/ "
                    "or a checkpoint step_*/")


def node_checkpoint(ckpt: str, storage_options: dict | None = None) -> str:
    """A local copy of a remote checkpoint on this node, downloaded once per node: trials run on
    other pods than the driver and cannot read its disk. Concurrent trials race safely (rename)."""
    if storage.is_local(ckpt):
        return resolve_checkpoint(ckpt)
    fs, path = storage.filesystem(ckpt, storage_options)
    try:  # keyed by the objects' identities too: a checkpoint rewritten under the same URI is fetched anew
        fs.invalidate_cache()  # a fresh listing, not one cached earlier in this process (buckets included)
        listing = sorted((k, v.get("size"), v.get("ETag") or v.get("LastModified") or v.get("mtime"))
                         for k, v in fs.find(path, detail=True).items())
    except Exception as e:
        raise UserError(storage.describe_error(e, ckpt)) from None
    root = Path(tempfile.gettempdir()) / "randommask-checkpoints"
    final = root / hashlib.sha1(repr((ckpt, listing)).encode()).hexdigest()[:16]
    if not final.is_dir():
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=".download-"))
        resolve_checkpoint(ckpt, cache_dir=str(tmp), storage_options=storage_options)
        try:
            tmp.rename(final)
        except OSError:  # another trial on this node got there first
            shutil.rmtree(tmp, ignore_errors=True)
    return resolve_checkpoint(str(final / "checkpoint"))


def _trial_file(out: str, name: str, seed: int) -> str:
    """Where a finished (dataset, seed) trial's result lives: local or on S3, beside results.*."""
    return storage.join(out, "trials", f"{name.replace('/', '_')}__seed{seed}.json")


# ---- one trial ----------------------------------------------------------------------------------
def _metrics(labels: np.ndarray, preds: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    return {"mcc": float(matthews_corrcoef(labels, preds)), "f1_macro": float(f1_score(labels, preds, average="macro")),
            "accuracy": float(accuracy_score(labels, preds))}


@torch.no_grad()
def _predict(model, ids: torch.Tensor, attn: torch.Tensor, device: torch.device, batch: int = 128) -> np.ndarray:
    model.eval()
    preds = []
    for i in range(0, len(ids), batch):
        with autocast(device):
            out = model(input_ids=ids[i : i + batch].to(device), attention_mask=attn[i : i + batch].to(device))
        preds.append(out.logits.argmax(-1).cpu())
    return torch.cat(preds).numpy()


def run_trial(p: dict[str, Any], report=None) -> dict[str, Any]:
    """Fine-tune one (dataset, seed) and write its trial file. ``report`` receives per-epoch metrics."""
    import transformers
    from transformers import BertForSequenceClassification

    transformers.logging.set_verbosity_error()  # the new classifier head is expected, not news
    transformers.logging.disable_progress_bar()
    started = time.time()
    ds = gue.REGISTRY[p["dataset"]]
    seed = int(p["seed"])
    torch.manual_seed(seed)
    if p.get("threads"):
        torch.set_num_threads(int(p["threads"]))
    device = torch.device("cuda" if torch.cuda.is_available() and p.get("gpu") else "cpu")
    ckpt = node_checkpoint(p["checkpoint"], p.get("storage_options"))
    tok = KmerTokenizer.from_pretrained(ckpt)
    t0 = time.time()
    data = {}
    for split in gue.SPLITS:
        seqs, labels = gue.read_split(p["gue_dir"], ds.name, split, p.get("storage_options"))
        limit = p.get("max_train") if split == "train" else p.get("max_eval")
        seqs, labels = gue.subsample(seqs, labels, limit, seed=0)  # the same rows for every seed and model
        data[split] = (seqs, labels)
    model = BertForSequenceClassification.from_pretrained(ckpt, num_labels=ds.classes,
                                                          attn_implementation="sdpa")
    max_len = min(tok.num_tokens(max(len(s) for s in data["train"][0])), model.config.max_position_embeddings)
    enc = {s: tok.encode_batch(data[s][0], max_length=max_len) for s in gue.SPLITS}
    tensors = {s: (torch.from_numpy(enc[s]["input_ids"]), torch.from_numpy(enc[s]["attention_mask"]),
                   torch.from_numpy(data[s][1])) for s in gue.SPLITS}
    if p.get("lora"):
        from peft import LoraConfig, TaskType, get_peft_model

        model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=8, lora_alpha=16, lora_dropout=0.1,
                                                 target_modules=["query", "value"]))
    model.to(device)
    epochs = int(p.get("epochs") or ds.epochs)
    batch = int(p.get("batch_size") or ds.batch_size)
    lr = float(p.get("lr") or ds.lr)
    n_train = len(tensors["train"][0])
    steps_per_epoch = math.ceil(n_train / batch)
    total = epochs * steps_per_epoch
    warmup = min(ds.warmup_steps, total // 10)
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup)))
    ids, attn, labels = tensors["train"]
    best, best_state, history = None, None, []
    for epoch in range(epochs):
        model.train()
        order = torch.from_numpy(np.random.default_rng([seed, epoch]).permutation(n_train))
        for i in range(0, n_train, batch):
            rows = order[i : i + batch]
            with autocast(device):
                out = model(input_ids=ids[rows].to(device), attention_mask=attn[rows].to(device),
                            labels=labels[rows].to(device))
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
        dev = _metrics(tensors["dev"][2].numpy(), _predict(model, *tensors["dev"][:2], device))
        history.append({"epoch": epoch + 1, **{f"dev_{k}": round(v, 5) for k, v in dev.items()}})
        if best is None or dev[ds.metric] > best[ds.metric]:  # select the epoch by the dev metric
            best, best_epoch = dev, epoch + 1
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        if report is not None:
            report(history[-1])
    model.load_state_dict(best_state)
    test = _metrics(tensors["test"][2].numpy(), _predict(model, *tensors["test"][:2], device))
    result = {
        "dataset": ds.name, "task": ds.task, "seed": seed, "metric": ds.metric, "status": "ok",
        "test": {k: round(v, 5) for k, v in test.items()}, "dev_best": {k: round(v, 5) for k, v in best.items()},
        "best_epoch": best_epoch, "epochs": epochs, "lr": lr, "batch_size": batch, "lora": bool(p.get("lora")),
        "max_train": p.get("max_train"), "max_eval": p.get("max_eval"),
        "max_tokens": max_len, "n_train": n_train, "n_dev": len(tensors["dev"][0]), "n_test": len(tensors["test"][0]),
        "history": history, "seconds": round(time.time() - t0, 1), "checkpoint": p["checkpoint"],
        "started": started, "finished": time.time(),
    }
    storage.write_bytes(_trial_file(p["out"], ds.name, seed), (json.dumps(result, indent=1) + "\n").encode(),
                        p.get("storage_options"))
    return result


def _tune_trial(config: dict) -> None:
    from ray import tune

    result = run_trial(config["trial"], report=lambda m: tune.report(m))
    tune.report({"epoch": result["epochs"], "done": True, **{f"test_{k}": v for k, v in result["test"].items()}})


# ---- the driver ---------------------------------------------------------------------------------
def finetune(checkpoint: str, gue_dir: str, tasks: str, out: str, seeds: int = 3, max_train: int | None = None,
             max_eval: int | None = None, epochs: int | None = None, lr: float | None = None,
             batch_size: int | None = None, lora: bool = False, cpus_per_trial: float = 1.0,
             gpus_per_trial: float = 0.0, baselines: str | None = None, storage_options: dict | None = None,
             log=print) -> dict[str, Any]:
    """Fine-tune ``checkpoint`` on GUE datasets with Ray Tune; returns the aggregated results."""
    if seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {seeds}")
    for flag, value in (("--max-train", max_train), ("--max-eval", max_eval), ("--epochs", epochs)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be >= 1, got {value}")
    if storage.is_local(out):
        out = os.path.abspath(out)
    if storage.is_local(gue_dir):
        gue_dir = os.path.abspath(gue_dir)
    names, all_mode = gue.resolve_names(tasks)
    present, missing = gue.available(gue_dir, names, storage_options)
    if missing and not all_mode:
        raise UserError(f"{gue_dir}: missing GUE dataset(s) {', '.join(missing)} (each needs train.csv, dev.csv, test.csv)")
    if missing:
        log(f"skipping {len(missing)} dataset(s) not in {gue_dir}: {', '.join(missing)}")
    if not present:
        raise UserError(f"{gue_dir}: none of the asked GUE datasets is there")
    cost: dict[str, float] = {}
    for name in present:  # validate every CSV before any trial starts
        for split in gue.SPLITS:
            seqs, _ = gue.read_split(gue_dir, name, split, storage_options)
            if split == "train":  # rows x length x epochs: what a trial's time scales with
                ds = gue.REGISTRY[name]
                rows = min(len(seqs), max_train or len(seqs))
                cost[name] = rows * max(len(x) for x in seqs) * (epochs or ds.epochs)
    published = load_baselines(baselines) if baselines else None
    local_ckpt = node_checkpoint(checkpoint, storage_options)  # fails here, before any trial, if unusable
    KmerTokenizer.from_pretrained(local_ckpt)
    if lora:
        try:
            import peft  # noqa: F401
        except ImportError:
            raise UserError("--lora needs peft: pip install peft") from None

    pairs = [(n, s) for n in present for s in range(seeds)]
    # Trials get the checkpoint's own address: a remote one is fetched once on each node.
    trial_ckpt = checkpoint if not storage.is_local(checkpoint) else local_ckpt
    requested = dict(max_train=max_train, max_eval=max_eval, epochs=epochs, lr=lr, batch_size=batch_size, lora=lora,
                     checkpoint=trial_ckpt)
    finished = {pair: _read_trial(out, *pair, storage_options) for pair in pairs}
    finished = {pair: t for pair, t in finished.items() if t is not None}
    for t in finished.values():  # a finished trial counts only if it ran with these settings
        _check_same_settings(t, requested, out)
    # The longest trials (covid, EMP) start first, so they do not finish alone at the end of a sweep.
    todo = sorted((pair for pair in pairs if pair not in finished), key=lambda pair: (-cost[pair[0]], pair))
    log(f"finetune {len(pairs)} trial(s) ({len(present)} dataset(s) x {seeds} seed(s)); "
        f"{len(pairs) - len(todo)} already finished, {len(todo)} to run")
    failures: dict[tuple[str, int], str] = {}
    if todo:
        failures = _run_tune(todo, dict(checkpoint=trial_ckpt, gue_dir=gue_dir, out=out, max_train=max_train,
                                        max_eval=max_eval, epochs=epochs, lr=lr, batch_size=batch_size, lora=lora,
                                        gpu=gpus_per_trial > 0, threads=max(1, int(cpus_per_trial)),
                                        storage_options=storage_options),
                             cpus_per_trial, gpus_per_trial)
    trials = [finished.get(pair) or _read_trial(out, *pair, storage_options) for pair in pairs]
    trials = [t for t in trials if t is not None]
    for (n, s), err in failures.items():
        trials.append({"dataset": n, "seed": s, "status": "failed", "error": err})
    results = aggregate(trials, published, checkpoint)
    write_results(out, results, storage_options)
    return results


def _read_trial(out: str, name: str, seed: int, storage_options: dict | None) -> dict[str, Any] | None:
    path = _trial_file(out, name, seed)
    return json.loads(storage.read_bytes(path, storage_options)) if storage.exists(path, storage_options) else None


def _check_same_settings(trial: dict[str, Any], requested: dict[str, Any], out: str) -> None:
    """A rerun reuses finished trials: refuse when they were run with other settings, rather than mix them."""
    ds = gue.REGISTRY[trial["dataset"]]
    want = {**requested, "epochs": requested["epochs"] or ds.epochs, "lr": float(requested["lr"] or ds.lr),
            "batch_size": requested["batch_size"] or ds.batch_size, "lora": bool(requested["lora"])}
    for key, value in want.items():
        if key in trial and trial[key] != value:
            raise UserError(f"{out}: trial {trial['dataset']} seed {trial['seed']} was run with {key}={trial[key]}, "
                            f"not {value}; use a new --out (or the same settings) so results are not mixed")


def _run_tune(todo: list[tuple[str, int]], common: dict, cpus: float, gpus: float) -> dict[tuple[str, int], str]:
    from ray import tune

    from randommask.ray_runtime import ensure_ray

    ensure_ray()
    resources = {"cpu": cpus, **({"gpu": gpus} if gpus else {})}
    tune_path, tune_fs = storage.ray_storage(storage.join(common["out"], "tune"), common.get("storage_options"))
    grid = [{**common, "dataset": n, "seed": s} for n, s in todo]
    tuner = tune.Tuner(
        tune.with_resources(_tune_trial, resources),
        param_space={"trial": tune.grid_search(grid)},
        tune_config=tune.TuneConfig(reuse_actors=False),
        run_config=tune.RunConfig(name=f"finetune-{time.strftime('%Y%m%d-%H%M%S')}",
                                  storage_path=tune_path, storage_filesystem=tune_fs, verbose=0,
                                  # a lost node or a storage fault: run the trial again (it starts over)
                                  failure_config=tune.FailureConfig(max_failures=TRIAL_RETRIES)),
    )
    grid_results = tuner.fit()
    failures = {}
    for r in grid_results:
        trial = r.config["trial"]
        if r.error is not None:
            lines = [x for x in str(r.error).splitlines() if x.strip()]
            failures[(trial["dataset"], int(trial["seed"]))] = lines[-1] if lines else type(r.error).__name__
    return failures


# ---- results ------------------------------------------------------------------------------------
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


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.array(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def aggregate(trials: list[dict], published: dict | None, checkpoint: str) -> dict[str, Any]:
    rows = []
    for name in dict.fromkeys(t["dataset"] for t in trials):
        ds = gue.REGISTRY[name]
        ok = [t for t in trials if t["dataset"] == name and t["status"] == "ok"]
        failed = [t for t in trials if t["dataset"] == name and t["status"] != "ok"]
        row: dict[str, Any] = {"dataset": name, "task": ds.task, "metric": ds.metric, "seeds_ok": len(ok),
                               "seeds_failed": len(failed), "errors": [t["error"] for t in failed]}
        for m in ("mcc", "f1_macro", "accuracy"):
            if ok:
                row[f"{m}_mean"], row[f"{m}_std"] = _mean_std([t["test"][m] for t in ok])
        if ok:
            row["score_mean"], row["score_std"] = row[f"{ds.metric}_mean"], row[f"{ds.metric}_std"]
            row["per_seed"] = {t["seed"]: t["test"][ds.metric] for t in sorted(ok, key=lambda t: t["seed"])}
        if published and name in published and ok:
            row["baselines"] = published[name]
            better = sum(1 for v in published[name].values() if v > row["score_mean"])
            row["rank"] = better + 1
            row["rank_of"] = len(published[name]) + 1
        rows.append(row)
    scored = [r for r in rows if "score_mean" in r]
    tasks = {}
    for task in dict.fromkeys(r["task"] for r in scored):
        tasks[task] = float(np.mean([r["score_mean"] for r in scored if r["task"] == task]))
    return {"checkpoint": checkpoint, "datasets": rows, "tasks": tasks,
            "overall": float(np.mean([r["score_mean"] for r in scored])) if scored else None,
            "failed_trials": sum(r["seeds_failed"] for r in rows)}


def write_results(out: str, results: dict[str, Any], storage_options: dict | None = None) -> None:
    rows = results["datasets"]
    models = sorted({m for r in rows for m in r.get("baselines", {})})
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["dataset", "task", "metric", "score_mean", "score_std", "seeds_ok", "seeds_failed",
                "mcc_mean", "mcc_std", "f1_macro_mean", "f1_macro_std", "accuracy_mean", "accuracy_std", "rank",
                *models])
    for r in rows:
        w.writerow([r["dataset"], r["task"], r["metric"], *[_fmt(r.get(k)) for k in (
            "score_mean", "score_std")], r["seeds_ok"], r["seeds_failed"],
            *[_fmt(r.get(k)) for k in ("mcc_mean", "mcc_std", "f1_macro_mean", "f1_macro_std", "accuracy_mean",
                                       "accuracy_std")],
            f"{r['rank']}/{r['rank_of']}" if "rank" in r else "", *[_fmt(r.get("baselines", {}).get(m)) for m in models]])
    for name, data in (("results.csv", buf.getvalue()), ("results.json", json.dumps(results, indent=1) + "\n"),
                       ("results.md", markdown(results))):
        storage.write_bytes(storage.join(out, name), data.encode(), storage_options)


def _fmt(v: Any) -> str:
    return "" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def markdown(results: dict[str, Any]) -> str:
    rows = results["datasets"]
    models = sorted({m for r in rows for m in r.get("baselines", {})})
    lines = [f"# GUE fine-tuning: {results['checkpoint']}", "",
             "Test scores, mean ± sample std over seeds (MCC; macro F1 for virus/covid); the epoch is chosen on dev.", ""]
    head = ["dataset", "metric", "ours", "seeds"] + (["rank"] + models if models else [])
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        ours = f"{r['score_mean']:.4f} ± {r['score_std']:.4f}" if "score_mean" in r else "failed"
        seeds = f"{r['seeds_ok']}" + (f" ({r['seeds_failed']} failed)" if r["seeds_failed"] else "")
        cells = [r["dataset"], r["metric"], ours, seeds]
        if models:
            cells += [f"{r['rank']}/{r['rank_of']}" if "rank" in r else ""]
            cells += [_fmt(r.get("baselines", {}).get(m)) for m in models]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| task | mean score |", "|---|---|"]
    lines += [f"| {t} | {v:.4f} |" for t, v in results["tasks"].items()]
    if results["overall"] is not None:
        lines += [f"| **overall (datasets)** | **{results['overall']:.4f}** |"]
    failed = [(r["dataset"], e) for r in rows for e in r["errors"]]
    if failed:
        lines += ["", "## Failed trials", ""] + [f"- {d}: {e}" for d, e in failed]
    return "\n".join(lines) + "\n"


# ---- linear probe (a quick downstream objective for sweeps) --------------------------------------
@torch.no_grad()
def embed(model_dir: str, seqs: list[str], batch: int = 128) -> np.ndarray:
    """Mean-pooled last hidden states of the encoder (padding excluded)."""
    import transformers
    from transformers import BertModel

    transformers.logging.set_verbosity_error()
    tok = KmerTokenizer.from_pretrained(model_dir)
    model = BertModel.from_pretrained(model_dir, add_pooling_layer=False, attn_implementation="sdpa").eval()
    max_len = min(tok.num_tokens(max(len(s) for s in seqs)), model.config.max_position_embeddings)
    out = []
    for i in range(0, len(seqs), batch):
        enc = tok.encode_batch(seqs[i : i + batch], max_length=max_len)
        ids, attn = torch.from_numpy(enc["input_ids"]), torch.from_numpy(enc["attention_mask"])
        hidden = model(input_ids=ids, attention_mask=attn).last_hidden_state
        mask = attn.unsqueeze(-1).float()
        out.append(((hidden * mask).sum(1) / mask.sum(1)).numpy())
    return np.concatenate(out)


def linear_probe(model_dir: str, gue_dir: str, datasets: list[str], max_train: int = 2000, max_eval: int = 1000,
                 storage_options: dict | None = None) -> dict[str, float]:
    """Logistic regression on frozen mean-pooled embeddings: test score per dataset and their mean
    (``probe_score``). Cheap enough to judge every sweep trial downstream, not by its own loss."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model_dir = node_checkpoint(model_dir, storage_options)  # a sweep trial's final may be on S3
    scores = {}
    for name in datasets:
        ds = gue.REGISTRY[name]
        tr = gue.subsample(*gue.read_split(gue_dir, name, "train", storage_options), max_train, seed=0)
        te = gue.subsample(*gue.read_split(gue_dir, name, "test", storage_options), max_eval, seed=0)
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        clf.fit(embed(model_dir, tr[0]), tr[1])
        scores[f"probe_{name}"] = round(_metrics(te[1], clf.predict(embed(model_dir, te[0])))[ds.metric], 5)
    scores["probe_score"] = round(float(np.mean(list(scores.values()))), 5)
    return scores
