"""RandomMask pretraining on Ray Train: the driver (``pretrain``). It checks storage, data and the
initial model before Ray starts, writes the floors, launches the workers (``training.worker``) and
summarizes the run directory (``common.rundir`` has its layout).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

from randommask.common import rundir, storage
from randommask.common.tracking import OFF, tracking_uri
from randommask.data.prepare import read_manifest
from randommask.data.stream import build_plan
from randommask.data.tokenizer import vocab_size_for
from randommask.errors import UserError
from randommask.training.config import PretrainConfig, resume_conflicts
from randommask.training.metrics import SUMMARY_EVAL_KEYS, is_eval_line


# ---- the driver ---------------------------------------------------------------------------------
def check_storage(cfg: PretrainConfig) -> None:
    """Fail before Ray starts, and before anything is written, when storage cannot be used."""
    read_manifest(cfg.data.prepared, cfg.data.storage_options or None)
    scheme, path = storage.split_uri(cfg.run.storage_path)
    if scheme == "file":
        probe = Path(path)
        while not probe.exists():
            probe = probe.parent
        if not probe.is_dir() or not os.access(probe, os.W_OK):
            raise UserError(f"run.storage_path {cfg.run.storage_path}: {probe} is not a writable directory")
        return
    if scheme not in ("s3", "s3a"):
        raise UserError(f"run.storage_path {cfg.run.storage_path}: use a local path or s3://bucket/prefix")
    fs, _ = storage.filesystem(cfg.run.storage_path)
    bucket = path.split("/")[0]
    try:
        fs.ls(bucket)  # unlike exists(), this raises on a bad endpoint or key instead of saying False
    except FileNotFoundError:
        raise UserError(f"run.storage_path {cfg.run.storage_path}: bucket {bucket!r} does not exist") from None
    except Exception as e:
        raise UserError(storage.describe_error(e, f"run.storage_path {cfg.run.storage_path}")) from None


def check_init_from(cfg: PretrainConfig) -> None:
    """The starting checkpoint exists (local or object storage, fetched once per node) and fits k."""
    if cfg.model.init_from is None:
        return
    from transformers import AutoConfig

    from randommask.common.checkpoints import node_checkpoint

    local = node_checkpoint(cfg.model.init_from, what="model.init_from")  # a missing one is one line
    try:
        hf = AutoConfig.from_pretrained(local)
    except Exception as e:
        raise UserError(f"model.init_from {cfg.model.init_from}: not a Hugging Face model directory "
                        f"({type(e).__name__})") from None
    if hf.vocab_size != vocab_size_for(cfg.data.k):
        raise UserError(f"model.init_from {cfg.model.init_from}: vocabulary of {hf.vocab_size} tokens does not match "
                        f"data.k={cfg.data.k} ({vocab_size_for(cfg.data.k)} tokens)")


def check_resume(cfg: PretrainConfig) -> None:
    """A run continues only with the training settings it was started with: those in its own
    config.yaml once it has started, else those of the checkpoint ``run.resume_from`` names."""
    current = cfg.model_dump(mode="json")
    started = cfg.run_dir().read_config()
    if started is not None:
        conflicts = resume_conflicts(started, current)
        if conflicts:
            raise UserError(f"run {cfg.run.name} in {cfg.run.storage_path} was started with other settings "
                            f"({'; '.join(conflicts)}); rerun with those to continue it, or choose a new run.name")
        return
    src = cfg.run.resume_from
    if src is None:
        return
    from randommask.training.checkpointer import load_state

    state = storage.join(src, rundir.STATE_FILE)
    if not storage.exists(state):
        raise UserError(f"run.resume_from {src}: no {rundir.STATE_FILE} there; name a step_* checkpoint "
                        "directory of a pretraining run")
    saved = load_state(storage.read_bytes(state), f"run.resume_from {src}")  # a storage failure is one line already
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
        raise UserError(f"run.resume_from {src}: {rundir.STATE_FILE} holds no training config; name a step_* "
                        "checkpoint directory of a pretraining run")
    saved = saved["config"]
    conflicts = resume_conflicts(saved, current)
    if conflicts:
        raise UserError(f"run.resume_from {src}: trained with other settings ({'; '.join(conflicts)}); "
                        "continue it with its own settings, or start a new run")


def pretrain(cfg: PretrainConfig, callbacks: list | None = None) -> dict[str, Any]:
    """Run (or resume, when the run's name already has checkpoints) a pretraining; returns a summary.
    ``callbacks`` are Ray Train ``UserCallback``s (a sweep passes Tune's report callback)."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from randommask.common.ray_runtime import ensure_ray
    from randommask.training.checkpointer import retention
    from randommask.training.observability import ControllerMetrics
    from randommask.training.worker import train_loop_per_worker

    cfg = absolute_paths(cfg)
    # MLFLOW_TRACKING_URI is read here, where the user set it: workers on other nodes get it in the config
    cfg.tracking.mlflow_uri = tracking_uri(cfg.tracking.mlflow_uri) or OFF  # off stays off on every worker
    with storage.preflight():  # a wrong endpoint, key or path fails in seconds, before anything is written
        check_storage(cfg)
        check_init_from(cfg)
        check_resume(cfg)
        check_data(cfg)
    floors = run_floors(cfg)
    cfg.run_dir().write_floors(floors)
    ensure_ray()
    missing = sorted(set(cfg.scaling.resources_per_worker) - set(ray.cluster_resources()))
    if missing:  # an autoscaler may still add such nodes: say why the workers wait, do not fail
        print(f"[{cfg.run.name}] warning: no node has resource(s) {', '.join(missing)} "
              "(scaling.resources_per_worker); the workers wait until one joins", flush=True)
    storage_path, storage_fs = storage.ray_storage(cfg.run.storage_path)
    resources = {**cfg.scaling.resources_per_worker, "CPU": cfg.scaling.cpus_per_worker}
    if cfg.scaling.use_gpu:
        resources["GPU"] = cfg.scaling.gpus_per_worker
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": cfg.model_dump(mode="json"), "floors": floors, "launched": time.time()},
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.scaling.num_workers, use_gpu=cfg.scaling.use_gpu,
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=cfg.run.name, storage_path=storage_path, storage_filesystem=storage_fs,
            checkpoint_config=retention(cfg.run),
            failure_config=ray.train.FailureConfig(max_failures=cfg.run.max_failures),
            # the controller outlives worker restarts: the per-rank and run-level series come from it
            callbacks=([ControllerMetrics(cfg.run.name)] if cfg.observability.ray_metrics else []) + (callbacks or []),
            logging_config=ray.train.LoggingConfig(log_level="WARNING")),
    )
    t0 = time.time()
    try:
        trainer.fit()
    except ray.train.TrainingFailedError as e:
        failures = list((getattr(e, "worker_failures", None) or {}).values())
        for exc in failures:
            root = getattr(exc, "cause", None) or exc
            if isinstance(root, UserError):
                raise UserError(str(root)) from None
        lines = [x for x in str(failures[0] if failures else e).splitlines() if x.strip()]
        raise TrainingFailed(f"training failed ({cfg.run.max_failures} failure(s) allowed): "
                             f"{lines[-1] if lines else type(e).__name__}") from None
    return summarize(cfg, time.time() - t0)


def absolute_paths(cfg: PretrainConfig) -> PretrainConfig:
    """Workers run in other directories: local paths are made absolute in the driver."""
    cfg = cfg.model_copy(deep=True)
    if storage.is_local(cfg.data.prepared):
        cfg.data.prepared = os.path.abspath(cfg.data.prepared)
    if storage.is_local(cfg.run.storage_path):
        cfg.run.storage_path = os.path.abspath(cfg.run.storage_path)
    if cfg.model.init_from and os.path.exists(cfg.model.init_from):
        cfg.model.init_from = os.path.abspath(cfg.model.init_from)
    if cfg.run.resume_from and storage.is_local(cfg.run.resume_from):
        cfg.run.resume_from = os.path.abspath(cfg.run.resume_from)
    return cfg


def check_data(cfg: PretrainConfig) -> None:
    """The epoch must hold a batch per worker, and validation windows must fit (else: a clear error now,
    not a traceback from a worker later)."""
    d = cfg.data
    opts = d.storage_options or None
    for rank in range(cfg.scaling.num_workers):
        plan = build_plan(d.prepared, "train", d.window_bp, cfg.run.seed, 0, d.max_n_fraction,
                          cfg.scaling.num_workers, rank, storage_options=opts)
        if plan.num_samples < cfg.optim.batch_size:
            raise UserError(f"data.prepared {d.prepared}: worker {rank} gets {plan.num_samples} training windows "
                            f"per epoch, fewer than optim.batch_size={cfg.optim.batch_size}; use fewer workers, "
                            "a smaller batch or shorter windows")


class TrainingFailed(RuntimeError):
    """The workers failed more often than ``run.max_failures`` allows."""


def summarize(cfg: PretrainConfig, seconds: float) -> dict[str, Any]:
    run = cfg.run_dir()
    lines = run.read_metrics()
    last = lines[-1] if lines else {}
    evals = [x for x in lines if is_eval_line(x)]
    done = last.get("step", 0) >= cfg.optim.max_steps
    out = {
        "run": cfg.run.name, "step": last.get("step", 0), "max_steps": cfg.optim.max_steps, "finished": done,
        "tokens": last.get("tokens", 0), "seconds": round(seconds, 1), "train_loss": last.get("loss"),
        "train_mask_loss": last.get("mask_loss"), "floors": run.read_floors(),
        "final": run.final if done else None, "metrics": run.metrics, "plot": run.loss_plot,
    }
    for key in SUMMARY_EVAL_KEYS:
        out[key] = evals[-1].get(key) if evals else None
    tracked = [e for e in run.read_events() if e.get("event") == "tracking"]
    out["tracking"] = tracked[-1] if tracked and tracking_uri(cfg.tracking.mlflow_uri) else None
    return out


# ---- the floors the losses are read against -----------------------------------------------------
FLOORS_VERSION = 2  # bump when what run_floors computes changes: cached floors of older versions are not reused


def floors_key(cfg: PretrainConfig, manifest: dict[str, Any]) -> str:
    """What the floors depend on, hashed: the prepared data's content (its shards' SHA-256 and the
    validation intervals, so a copy of the same data on S3, or the same genome prepared again with
    the same options, shares the key) and the evaluation settings."""
    import hashlib
    import json

    d = cfg.data
    identity = {"version": FLOORS_VERSION, "shards": [s["sha256"] for s in manifest.get("shards", [])],
                "validation": manifest.get("validation"), "k": d.k, "stride": d.stride, "window_bp": d.window_bp,
                "max_n_fraction": d.max_n_fraction, "eval_windows": cfg.run.eval_windows}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]


def run_floors(cfg: PretrainConfig) -> dict[str, Any]:
    """The data's floors (randommask.data.floors), each evaluation set's overlap and overlap-only
    references and its count tables in its own geometry. They depend only on the prepared data and
    the evaluation settings, so they are cached on the node (``common.cache``) by those: a resumed
    run, or another run on the same data, does not count them again."""
    from randommask.common import cache
    from randommask.data.floors import compute_floors, eval_reference
    from randommask.training.validation import eval_sets

    d = cfg.data
    key = floors_key(cfg, read_manifest(d.prepared, d.storage_options or None))
    cached = cache.read_json("floors", key)
    if cached is not None:
        return cached
    print(f"[{cfg.run.name}] floors: counting the references of {d.prepared} (cached for later runs on it)",
          flush=True)
    try:
        sets = eval_sets(cfg)
    except UserError:
        sets = {}
    floors = compute_floors(d.prepared, d.k, d.stride, storage_options=d.storage_options or None, eval_sets=sets)
    for name, (inputs, labels) in sets.items():
        ref = eval_reference(inputs, labels, d.k, d.stride, floors["overlap_per_base"])
        floors[f"eval_{name}_overlap"] = None if ref is None else round(ref, 4)
        blind = eval_reference(inputs, labels, d.k, d.stride, math.log(4))  # reads every visible base, knows no DNA
        floors[f"overlap_only_{name}"] = None if blind is None else round(blind, 4)
    cache.write_json("floors", key, floors)
    return floors
