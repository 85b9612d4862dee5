"""``randommask sweep``: Ray Tune over the pretraining config (mask schedules, strategies, lr).

Each trial is a pretraining run (TorchTrainer) that reports its fixed-mask validation metrics to
Tune at every evaluation, so ASHA stops weak schedules early on the same evaluation task for every
trial. Optionally each finished trial is judged downstream by a linear probe on GUE datasets: the
validation loss alone rewards easy masks, which is the paper's point.

Sweep directory ``<storage_path>/<name>/``: ``tune/`` (Tune's state, for resume), ``runs/`` (each
trial's pretraining run), ``trials.csv``, ``best.yaml`` and ``curves.png``.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import os
import posixpath
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from randommask.common import storage
from randommask.common.rundir import RunDir
from randommask.errors import UserError
from randommask.training.config import (
    apply_overrides,
    dump_config,
    format_validation_error,
    read_yaml_mapping,
    validate_config,
)
from randommask.training.masking import STRATEGIES, strategy_params
from randommask.training.metrics import is_eval_line

_DIMENSIONS = ("grid", "choice", "uniform", "loguniform", "randint")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SearchSection(_Strict):
    algorithm: Literal["grid", "random", "optuna"] = "grid"
    num_samples: int = Field(1, ge=1, description="grid: repeats of the grid; random/optuna: trials")
    max_concurrent: int = Field(2, ge=1)
    seed: int = 0
    space: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _dims(self) -> "SearchSection":
        for key, dim in self.space.items():
            if len(dim) != 1 or next(iter(dim)) not in _DIMENSIONS:
                raise ValueError(f"space.{key}: one of {', '.join(_DIMENSIONS)}, e.g. {{choice: [1, 2]}}")
            kind, value = next(iter(dim.items()))
            if kind in ("grid", "choice") and (not isinstance(value, list) or not value):
                raise ValueError(f"space.{key}.{kind}: a non-empty list")
            if kind in ("uniform", "loguniform", "randint") and (not isinstance(value, list) or len(value) != 2):
                raise ValueError(f"space.{key}.{kind}: [low, high]")
            if kind == "grid" and self.algorithm == "optuna":
                raise ValueError(f"space.{key}: grid dimensions need search.algorithm grid or random")
        return self


class AshaSection(_Strict):
    grace_period: int = Field(1, ge=1, description="steps before a trial can be stopped")
    reduction_factor: float = Field(2, gt=1)
    metric: str = "eval_span_k_mask_loss"
    mode: Literal["min", "max"] = "min"


class ProbeSection(_Strict):
    gue_dir: str
    datasets: list[str]
    max_train: int = Field(2000, ge=10)
    max_eval: int = Field(1000, ge=10)
    top: int = Field(3, ge=1, description="finished trials probed after the search, the best by the search metric")


class ObjectiveSection(_Strict):
    metric: str = "eval_span_k_mask_loss"
    mode: Literal["min", "max"] = "min"
    probe: Optional[ProbeSection] = None

    @model_validator(mode="after")
    def _probe(self) -> "ObjectiveSection":
        if self.metric.startswith("probe_") and self.probe is None:
            raise ValueError(f"metric {self.metric} needs a probe section (gue_dir, datasets)")
        return self


class SweepConfig(_Strict):
    name: str = Field("sweep", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    storage_path: str = "outputs/sweeps"
    pretrain: str = Field(description="the base pretraining config, relative to this file")
    set: list[str] = Field(default_factory=list, description="overrides for every trial, key=value")
    search: SearchSection = Field(default_factory=SearchSection)
    scheduler: Optional[dict[Literal["asha"], AshaSection]] = None
    objective: ObjectiveSection = Field(default_factory=ObjectiveSection)


def load_sweep(path: str, overrides: list[str] | None = None) -> tuple[SweepConfig, dict]:
    """The sweep config and the base pretraining config tree (both validated)."""
    p = Path(path)
    tree = apply_overrides(read_yaml_mapping(p, "sweep config"), overrides or [])
    try:
        sweep = SweepConfig.model_validate(tree)
    except ValidationError as e:
        raise UserError(format_validation_error(e, str(p)).replace("invalid config", "invalid sweep config")) from None
    base_path = (p.parent / sweep.pretrain) if not os.path.isabs(sweep.pretrain) else Path(sweep.pretrain)
    if not base_path.is_file():
        raise UserError(f"sweep config {p}: pretrain config {base_path} not found")
    base = apply_overrides(read_yaml_mapping(base_path, "pretrain config"), list(sweep.set))
    validate_config(copy.deepcopy(base), f"{base_path} (with the sweep's set)")
    for key in sweep.search.space:
        if key != "masking.phase_length" and key.split(".")[0] not in base and key.split(".")[0] not in (
                "masking", "model", "optim", "data", "run", "scaling", "observability"):
            raise UserError(f"sweep config {p}: space.{key}: not a pretraining config field")
    return sweep, base


def trial_config(base: dict, params: dict[str, Any], sweep: SweepConfig, trial_id: str, runs_uri: str,
                 num_phases: int = 5):
    """The pretraining config of one trial: base + sampled params, with ``masking.phase_length``
    turned into ``phase_ends`` and masker parameters the chosen strategy does not take dropped."""
    tree = copy.deepcopy(base)
    for key, value in params.items():
        if key == "masking.phase_length":
            tree.setdefault("masking", {})["phase_ends"] = [int(value) * (i + 1) for i in range(num_phases)]
        else:
            apply_overrides(tree, [f"{key}={json.dumps(value)}"])
    masking = tree.setdefault("masking", {})
    strategy = masking.get("strategy", "randommask")
    allowed = strategy_params(strategy) if strategy in STRATEGIES else ()  # an unknown one fails validation below
    for key in [k for k in masking if k != "strategy" and k not in allowed]:
        masking.pop(key)
    run = tree.setdefault("run", {})
    run["name"], run["storage_path"] = f"{sweep.name}-{trial_id}", runs_uri
    return validate_config(tree, f"sweep trial {trial_id}")


def _param_space(search: SearchSection) -> dict[str, Any]:
    from ray import tune

    space = {}
    for key, dim in search.space.items():
        kind, value = next(iter(dim.items()))
        space[key] = {"grid": lambda v: tune.grid_search(v), "choice": lambda v: tune.choice(v),
                      "uniform": lambda v: tune.uniform(*v), "loguniform": lambda v: tune.loguniform(*v),
                      "randint": lambda v: tune.randint(v[0], v[1] + 1)}[kind](value)
    return space


# The evaluation figures a trial reports and the trial table shows; the [MASK]-only ones are the headline.
EVAL_KEYS = ("eval_span_k_mask_loss", "eval_span_2k_mask_loss", "eval_span_k_loss", "eval_span_2k_loss")


def search_metric(cfg: SweepConfig) -> tuple[str, str]:
    """The metric (and mode) the searcher learns from and ASHA stops on: one metric for both, reported
    at every evaluation, so every trial, stopped early or not, teaches the search. With ASHA it is
    ASHA's metric; without, the objective's (``eval_span_k_mask_loss`` for a probe objective, which
    is not reported during training: it judges the top trials after the search instead)."""
    if cfg.scheduler and "asha" in cfg.scheduler:
        return cfg.scheduler["asha"].metric, cfg.scheduler["asha"].mode
    obj = cfg.objective
    if not obj.metric.startswith("probe_"):
        return obj.metric, obj.mode
    return "eval_span_k_mask_loss", "min"


def _trial(config: dict) -> None:
    """One Tune trial: a pretraining run whose evaluations reach Tune."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from randommask.training.driver import pretrain

    sweep = SweepConfig.model_validate(config["sweep"])
    params = {k: v for k, v in config.items() if k not in ("sweep", "base", "runs_uri")}
    trial_id = tune.get_context().get_trial_id()
    cfg = trial_config(config["base"], params, sweep, trial_id, config["runs_uri"])
    summary = pretrain(cfg, callbacks=[TuneReportCallback()])
    tune.report({"step": summary["step"], "trial_complete": True, "train_loss": summary["train_loss"],
                 **{key: summary[key] for key in EVAL_KEYS}})


def sweep(path: str, overrides: list[str] | None = None, log=print, mlflow_uri: str | None = None) -> dict[str, Any]:
    """Run (or resume) a sweep; returns the best trial and where the outputs are. With MLflow
    tracking (``mlflow_uri``, the base config's ``tracking.mlflow_uri`` or MLFLOW_TRACKING_URI) the
    sweep is a parent run and each trial's pretraining a child run of it."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import BasicVariantGenerator
    from ray.tune.search.optuna import OptunaSearch

    from randommask.common.ray_runtime import ensure_ray

    cfg, base = load_sweep(path, overrides)
    root = storage.join(cfg.storage_path, cfg.name)
    if storage.is_local(root):
        root = os.path.abspath(root)
        base = _absolute_data_paths(base)
    runs_uri = storage.join(root, "runs")
    parent = _parent_run(cfg, base, root, mlflow_uri, log)
    ensure_ray()
    # Checkpoint-only reports carry no evaluation: Tune must not demand the metric in every report.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    metric, mode = search_metric(cfg)
    scheduler = None
    if cfg.scheduler and "asha" in cfg.scheduler:
        a = cfg.scheduler["asha"]
        max_steps = int(base.get("optim", {}).get("max_steps", 1000))
        # max_t one past the last step: ASHA stops a trial at max_t, and a finished trial must still
        # report its final metrics itself.
        scheduler = ASHAScheduler(time_attr="step", metric=a.metric, mode=a.mode, max_t=max_steps + 1,
                                  grace_period=a.grace_period, reduction_factor=a.reduction_factor)
    if cfg.search.algorithm == "optuna":
        searcher, limit = OptunaSearch(metric=metric, mode=mode, seed=cfg.search.seed), cfg.search.max_concurrent
    else:  # seeded sampling; it limits its own concurrency (Tune's limit applies to Searchers only)
        searcher = BasicVariantGenerator(random_state=cfg.search.seed, max_concurrent=cfg.search.max_concurrent)
        limit = None
    trainable = tune.with_resources(_trial, {"cpu": 0.01})  # the Train workers reserve their own CPUs
    tune_dir = storage.join(root, "tune")
    # Local or S3 alike: a rerun (or a RayJob retry on a new cluster) restores the experiment.
    tune_path, tune_fs = storage.ray_storage(tune_dir)
    experiment = f"{tune_path}/{cfg.name}"
    if tune.Tuner.can_restore(experiment, storage_filesystem=tune_fs):
        log(f"sweep    resuming {storage.join(tune_dir, cfg.name)}")
        tuner = tune.Tuner.restore(experiment, trainable, resume_unfinished=True, resume_errored=True,
                                   storage_filesystem=tune_fs)
    else:
        space = {**_param_space(cfg.search), "sweep": cfg.model_dump(mode="json"), "base": base, "runs_uri": runs_uri}
        tuner = tune.Tuner(
            trainable, param_space=space,
            # metric/mode live in the searcher and the scheduler; the best trial is picked in
            # _write_outputs (by the probe, when the objective is one).
            tune_config=tune.TuneConfig(num_samples=cfg.search.num_samples,
                                        max_concurrent_trials=limit, scheduler=scheduler,
                                        search_alg=searcher),
            run_config=tune.RunConfig(name=cfg.name, storage_path=tune_path, storage_filesystem=tune_fs, verbose=0,
                                      failure_config=tune.FailureConfig(max_failures=0)),
        )
    results = tuner.fit()
    out = _write_outputs(cfg, base, results, root, runs_uri)
    if parent is not None:
        _close_parent(parent, cfg, out, runs_uri)
    return out


def _parent_run(cfg: SweepConfig, base: dict, root: str, mlflow_uri: str | None, log):
    """The sweep's MLflow run (None without tracking); the trials' configs name it as their parent."""
    from randommask.common.tracking import DEFAULT_EXPERIMENT, OFF, Tracker, tracking_uri

    tracking = base.setdefault("tracking", {})
    asked = mlflow_uri or tracking.get("mlflow_uri")
    uri = tracking_uri(asked)
    if uri is None:
        if asked:  # "none": the trials too, whatever their nodes' MLFLOW_TRACKING_URI
            tracking["mlflow_uri"] = OFF
        return None
    parent = Tracker(uri, tracking.get("experiment") or DEFAULT_EXPERIMENT, f"sweep {cfg.name}", key=root,
                     tags={"randommask.sweep": cfg.name}, warn=log)
    parent.log_params({"sweep.name": cfg.name, "sweep.search": json.dumps(cfg.search.model_dump(mode="json")),
                       "sweep.objective": json.dumps(cfg.objective.model_dump(mode="json"))})
    tracking["mlflow_uri"] = uri
    tracking["parent_run_id"] = parent.run_id  # None while the server is down: the trials are then unnested
    return parent


def end_trial_runs(parent, trials: list[dict[str, Any]], runs_uri: str) -> None:
    """End the MLflow runs of the trials that did not finish (``status`` stopped or error)."""
    from randommask.common.tracking import Tracker, numeric

    for row in trials:
        if row["status"] == "done":
            continue  # its pretraining ended its MLflow run itself
        # A trial ASHA stopped, or one that failed, never reached its own close: end its run here,
        # after the lines it could not send before it was stopped (a slow server's last ones), from
        # its metrics.jsonl; steps the MLflow run holds are skipped.
        run_dir = RunDir.of(runs_uri, row["run"])
        child = Tracker(parent.uri, parent.experiment, row["run"], key=run_dir.uri, parent_run_id=parent.run_id,
                        warn=parent.warn)
        for line in run_dir.read_metrics():
            child.log_metrics(numeric(line), int(line["step"]))
        child.set_tags({"randommask.trial_status": row["status"]})
        child.close("KILLED" if row["status"] == "stopped" else "FAILED")


def _close_parent(parent, cfg: SweepConfig, out: dict[str, Any], runs_uri: str) -> None:
    end_trial_runs(parent, out["trials"], runs_uri)
    for key in ("trials_csv", "best_yaml", "curves"):
        if out.get(key) and storage.exists(out[key]):
            parent.log_bytes(storage.read_bytes(out[key]), posixpath.basename(out[key]))
    best = out.get("best")
    if best is not None:
        parent.set_tags({"randommask.best_trial": str(best["trial"])})
        value = best.get(cfg.objective.metric)
        if isinstance(value, (int, float)):
            parent.log_metrics({f"best_{cfg.objective.metric}": float(value)}, 0)
    parent.close("FINISHED" if best is not None else "FAILED")


def _absolute_data_paths(base: dict) -> dict:
    """Trials run in other directories: a local prepared dataset is resolved from here."""
    data = base.get("data", {})
    if "prepared" in data and storage.is_local(data["prepared"]) and not os.path.isabs(data["prepared"]):
        data["prepared"] = os.path.abspath(data["prepared"])
    return base


def _write_outputs(cfg: SweepConfig, base: dict, results, root: str, runs_uri: str) -> dict[str, Any]:
    from randommask.training.plots import eval_curves_png

    obj = cfg.objective
    params_keys = list(cfg.search.space)
    max_steps = int(base.get("optim", {}).get("max_steps", 1000))
    rows, curves = [], {}
    for r in results:
        metrics = r.metrics or {}
        trial_id = metrics.get("trial_id") or (Path(r.path).name if r.path else "?")
        params = {k: r.config.get(k) for k in params_keys}
        run_name = f"{cfg.name}-{trial_id}"
        history = RunDir.of(runs_uri, run_name).read_metrics()
        evals = [x for x in history if is_eval_line(x)]
        rows.append({"trial": trial_id, "run": run_name, **params,
                     "status": "error" if r.error else ("done" if metrics.get("trial_complete") or (
                         history and history[-1]["step"] >= max_steps) else "stopped"),
                     "steps": history[-1]["step"] if history else 0,
                     **{key: evals[-1].get(key) if evals else None for key in EVAL_KEYS},
                     "error": str(r.error).splitlines()[-1] if r.error else ""})
        if evals:
            label = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in params.items())
            curves[f"{trial_id} ({label})" if label else trial_id] = evals
    if obj.probe is not None:
        _probe_top(rows, cfg, runs_uri)
    scored = [x for x in rows if x.get(obj.metric) is not None and x["status"] == "done"]
    best = (min if obj.mode == "min" else max)(scored, key=lambda x: x[obj.metric]) if scored else None
    keys = list(dict.fromkeys(k for x in rows for k in x))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    storage.write_bytes(storage.join(root, "trials.csv"), buf.getvalue().encode())
    floors = RunDir.of(runs_uri, rows[0]["run"]).read_floors() if rows else None  # trials share data and windows
    out = {"trials": rows, "best": best, "trials_csv": storage.join(root, "trials.csv"),
           "curves": storage.join(root, "curves.png"), "best_yaml": None, "floors": floors}
    if curves:
        storage.write_bytes(out["curves"], eval_curves_png(
            curves, title=f"sweep {cfg.name}: fixed span-k validation loss on [MASK] inputs", floors=floors))
    if best is not None:
        params = {k: best[k] for k in params_keys}
        best_cfg = trial_config(base, params, cfg, best["trial"], "outputs/runs")
        best_cfg.run.name = f"{cfg.name}-best"
        text = (f"# Best trial {best['trial']} of sweep {cfg.name} by {obj.metric} ({obj.mode}) = {best[obj.metric]}\n"
                f"# randommask pretrain --config best.yaml\n" + dump_config(best_cfg))
        out["best_yaml"] = storage.join(root, "best.yaml")
        storage.write_bytes(out["best_yaml"], text.encode())
    return out


def _probe_top(rows: list[dict], cfg: SweepConfig, runs_uri: str) -> None:
    """The linear probe on the ``probe.top`` finished trials that are best by the search metric, as
    Ray tasks in parallel (each fetches its trial's final model to its node); their rows get the
    probe_* columns. The probe is deterministic, so a resumed sweep recomputes the same scores."""
    import ray

    from randommask.evaluation.probe import linear_probe

    probe = cfg.objective.probe
    metric, mode = search_metric(cfg)
    done = [x for x in rows if x["status"] == "done" and x.get(metric) is not None]
    top = sorted(done, key=lambda x: x[metric], reverse=mode == "max")[: probe.top]
    task = ray.remote(num_cpus=1, max_retries=2)(linear_probe)
    refs = [task.remote(RunDir.of(runs_uri, x["run"]).final, probe.gue_dir, probe.datasets, probe.max_train,
                        probe.max_eval) for x in top]
    for row, ref in zip(top, refs):
        try:
            row.update(ray.get(ref))
        except Exception as e:  # the trial's row says why; the sweep then exits non-zero
            lines = [x for x in str(e).splitlines() if x.strip()]
            row["status"], row["error"] = "error", f"probe: {lines[-1] if lines else type(e).__name__}"
