"""The fine-tuning driver: validates everything first, runs the (dataset, seed) trials still to do
(per learning rate, in an ``--lr`` search) through Ray Tune, and aggregates every finished trial
under OUT."""

from __future__ import annotations

import json
import os
import time
from typing import Any, NamedTuple, Sequence

from randommask.common import storage
from randommask.common.checkpoints import node_checkpoint
from randommask.common.tracking import tracking_uri
from randommask.data.tokenizer import KmerTokenizer
from randommask.errors import UserError
from randommask.evaluation import gue
from randommask.finetune import protocol as protocols
from randommask.finetune import search
from randommask.finetune.results import aggregate, comparability, load_baselines, write_results
from randommask.finetune.trial import trial_file, tune_trial
from randommask.finetune.window import check_trained_window

TRIAL_RETRIES = 2  # a trial that fails (lost node, storage fault) runs again from its start


class TrialKey(NamedTuple):
    """One trial: ``lr`` is the rate of an ``--lr`` search, the override, or None (the protocol's)."""

    dataset: str
    lr: float | None
    seed: int


def finetune(checkpoint: str, gue_dir: str, tasks: str, out: str, seeds: int = 3, max_train: int | None = None,
             max_eval: int | None = None, epochs: int | None = None, lr: float | Sequence[float] | None = None,
             batch_size: int | None = None, protocol: str = "published", lora: bool = False, cpus_per_trial: float = 1.0,
             gpus_per_trial: float = 0.0, baselines: str | None = None, storage_options: dict | None = None,
             log=print, mlflow_uri: str | None = None, save_models: bool = False,
             allow_untrained_positions: bool = False, search_seeds: int | None = None) -> dict[str, Any]:
    """Fine-tune ``checkpoint`` on GUE datasets with Ray Tune under ``protocol`` (published, fast;
    overrides make it custom); returns the aggregated results. ``lr``: one rate overrides the protocol's;
    several are searched, each dataset's rate chosen on dev (``finetune.search``); with ``search_seeds`` N,
    on the first N seeds only, the other seeds then run at the chosen rate alone. ``save_models`` keeps
    each trial's selected model, with its card, under ``OUT/models/``. A dataset needing positions the
    checkpoint never trained is refused before any trial unless ``allow_untrained_positions``
    (``finetune.window``)."""
    if protocol not in protocols.PROTOCOLS:
        raise UserError(f"--protocol {protocol!r}: choose one of {', '.join(protocols.PROTOCOLS)}")
    if seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {seeds}")
    for flag, value in (("--max-train", max_train), ("--max-eval", max_eval), ("--epochs", epochs),
                        ("--batch-size", batch_size)):
        if value is not None and value < 1:
            raise UserError(f"{flag} must be >= 1, got {value}")
    rates = search.trial_rates(lr)
    searching = len(rates) > 1
    n_search = search.search_seeds(search_seeds, seeds, searching)
    uri = tracking_uri(mlflow_uri)  # a URI MLflow cannot use is refused now, not after the trials
    if storage.is_local(out):
        out = os.path.abspath(out)
    if storage.is_local(gue_dir):
        gue_dir = os.path.abspath(gue_dir)
    present, _ = gue.select(gue_dir, tasks, storage_options, log)
    plans = {(name, r): protocols.plan(gue.REGISTRY[name], protocol, epochs, r, batch_size)
             for name in present for r in rates}
    cost: dict[str, float] = {}
    for name in present:  # validate every CSV before any trial starts
        for split in gue.SPLITS:
            seqs, _ = gue.read_split(gue_dir, name, split, storage_options)
            if split == "train":  # rows x length x steps: what a trial's time scales with
                rows = min(len(seqs), max_train or len(seqs))
                some_plan = plans[(name, rates[0])]  # the rate does not change a trial's length
                sched = protocols.schedule(some_plan, rows, subsampled=rows < len(seqs))
                cost[name] = sched.total_steps * some_plan["batch_size"] * max(len(x) for x in seqs)
    published = load_baselines(baselines) if baselines else None
    local_ckpt = node_checkpoint(checkpoint, storage_options)  # fails here, before any trial, if unusable
    KmerTokenizer.from_pretrained(local_ckpt)
    check_trained_window(local_ckpt, checkpoint, gue_dir, present, max_train, max_eval, allow_untrained_positions,
                         storage_options, log)
    if lora:
        try:
            import peft  # noqa: F401
        except ImportError:
            raise UserError("--lora needs peft: pip install peft") from None

    # Trials get the checkpoint's own address: a remote one is fetched once on each node.
    trial_ckpt = checkpoint if not storage.is_local(checkpoint) else local_ckpt
    requested = dict(max_train=max_train, max_eval=max_eval, lora=lora, checkpoint=trial_ckpt)
    tune_common = dict(checkpoint=trial_ckpt, gue_dir=gue_dir, out=out, max_train=max_train, max_eval=max_eval,
                       epochs=epochs, batch_size=batch_size, search=searching, protocol=protocol, lora=lora,
                       gpu=gpus_per_trial > 0, save_model=save_models, threads=max(1, int(cpus_per_trial)),
                       storage_options=storage_options)

    def run_round(pairs: list[TrialKey], what: str) -> list[dict[str, Any]]:
        """Runs the trials of ``pairs`` not finished yet; returns every pair's record, failed ones included."""
        finished = {pair: _read_trial(out, pair, searching, storage_options) for pair in pairs}
        finished = {pair: t for pair, t in finished.items() if t is not None}
        for pair, t in finished.items():  # a finished trial counts only if it ran with these settings
            _check_same_settings(t, requested, plans[(pair.dataset, pair.lr)], out)
        unsaved = [pair for pair, t in finished.items() if save_models and not t.get("model")]
        if unsaved:  # its model was not kept: run it again (same settings, same rows, same seed) to keep it
            log(f"{len(unsaved)} finished trial(s) have no saved model: running them again to save it")
            finished = {pair: t for pair, t in finished.items() if pair not in unsaved}
        # The longest trials (covid, EMP) start first, so they do not finish alone at the end of a sweep.
        todo = sorted((pair for pair in pairs if pair not in finished),
                      key=lambda pair: (-cost[pair.dataset], pair.dataset, pair.seed, pair.lr or 0.0))
        log(f"finetune {len(pairs)} trial(s) ({what}); {len(pairs) - len(todo)} already finished, {len(todo)} to run")
        failures = _run_tune(todo, tune_common, cpus_per_trial, gpus_per_trial, log) if todo else {}
        trials = [finished.get(pair) or _read_trial(out, pair, searching, storage_options) for pair in pairs]
        trials = [t for t in trials if t is not None]
        for pair, err in failures.items():
            failed = {"dataset": pair.dataset, "seed": pair.seed, "status": "failed", "error": err}
            trials.append({**failed, "lr": pair.lr, "error": f"lr {pair.lr:g}: {err}"} if searching else failed)
        return trials

    times = f" x {len(rates)} learning rate(s)" if searching else ""
    trials = run_round([TrialKey(n, r, s) for n in present for r in rates for s in range(n_search)],
                       f"{len(present)} dataset(s){times} x {n_search} seed(s)"
                       + (", choosing each dataset's rate on dev" if n_search < seeds else ""))
    some = next(iter(plans.values()))
    if n_search < seeds:  # the other seeds, at each dataset's rate chosen on the search seeds
        chosen = {n: search.choose([t for t in trials if t["dataset"] == n], rates, some.selection,
                                   gue.REGISTRY[n].metric).selected for n in present}
        lost = [n for n, r in chosen.items() if r is None]
        if lost:
            log(f"no rate finished on every search seed for {', '.join(lost)}: its other seed(s) are not run")
        if len(lost) < len(chosen):
            log(f"rate chosen on dev with {n_search} seed(s): "
                + ", ".join(f"{n} {r:g}" for n, r in chosen.items() if r is not None))
        trials += run_round([TrialKey(n, r, s) for n, r in chosen.items() if r is not None
                             for s in range(n_search, seeds)],
                            f"the other {seeds - n_search} seed(s) at each dataset's chosen rate")
    precision = sorted({t["ran"]["precision"] for t in trials if t["status"] == "ok"}) or ["fp32"]
    run = {"protocol": some.protocol, "selection": some.selection, "precision": ", ".join(precision),
           "max_train": max_train, "max_eval": max_eval, "source": gue.PUBLISHED_SOURCE,
           "not_comparable": comparability(some.protocol, max_train, max_eval),
           **({"lr_search": list(rates)} if searching else {}),
           **({"search_seeds": n_search} if n_search < seeds else {})}
    results = aggregate(trials, published, checkpoint, run)
    write_results(out, results, storage_options)
    if uri is not None:  # MLflow is imported only here, with tracking on
        from randommask.finetune.tracking import log_finetune

        log_finetune(uri, out, checkpoint, trials, results, storage_options, log=log)
    return results


def _read_trial(out: str, key: TrialKey, searching: bool, storage_options: dict | None) -> dict[str, Any] | None:
    path = trial_file(out, key.dataset, key.seed, key.lr if searching else None)
    return json.loads(storage.read_bytes(path, storage_options)) if storage.exists(path, storage_options) else None


def _check_same_settings(trial: dict[str, Any], requested: dict[str, Any], plan: protocols.Plan, out: str) -> None:
    """A rerun reuses finished trials: refuse when they were run with other settings, rather than mix them."""
    if "protocol" not in trial:
        raise UserError(f"{out}: trial {trial['dataset']} seed {trial['seed']} was run before fine-tuning protocols "
                        "were recorded; use a new --out")
    want = {**requested, "lora": bool(requested["lora"]), **plan.hyperparameters, "protocol": plan.protocol,
            "selection": plan.selection}
    have = {**trial, **trial["hyperparameters"]}
    for key, value in want.items():
        if have.get(key) != value:
            raise UserError(f"{out}: trial {trial['dataset']} seed {trial['seed']} was run with {key}={have.get(key)}, "
                            f"not {value}; use a new --out (or the same settings) so results are not mixed")


def _run_tune(todo: list[TrialKey], common: dict, cpus: float, gpus: float, log) -> dict[TrialKey, str]:
    from ray import tune

    from randommask.common.ray_runtime import ensure_ray
    from randommask.finetune.progress import TrialLines

    ensure_ray()
    resources = {"cpu": cpus, **({"gpu": gpus} if gpus else {})}
    tune_path, tune_fs = storage.ray_storage(storage.join(common["out"], "tune"), common.get("storage_options"))
    grid = [{**common, "dataset": k.dataset, "seed": k.seed, "lr": k.lr} for k in todo]
    tuner = tune.Tuner(
        tune.with_resources(tune_trial, resources),
        param_space={"trial": tune.grid_search(grid)},
        tune_config=tune.TuneConfig(reuse_actors=False),
        run_config=tune.RunConfig(name=f"finetune-{time.strftime('%Y%m%d-%H%M%S')}",
                                  storage_path=tune_path, storage_filesystem=tune_fs, verbose=0,
                                  callbacks=[TrialLines(len(todo), log)],
                                  # a lost node or a storage fault: run the trial again (it starts over)
                                  failure_config=tune.FailureConfig(max_failures=TRIAL_RETRIES)),
    )
    grid_results = tuner.fit()
    failures = {}
    for r in grid_results:
        trial = r.config["trial"]
        if r.error is not None:
            lines = [x for x in str(r.error).splitlines() if x.strip()]
            key = TrialKey(trial["dataset"], trial["lr"], int(trial["seed"]))
            failures[key] = lines[-1] if lines else type(r.error).__name__
    return failures
