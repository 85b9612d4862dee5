"""RandomMask pretraining on Ray Train: the driver (``pretrain``), the run directory and the
evaluation sets. The per-worker loop is ``randommask.worker``.

Run directory ``<storage_path>/<name>/``:
    step_XXXXXXXX/        Ray Train checkpoints: model/ (HF + tokenizer) and trainer_state.pt
    final/                the trained model and tokenizer, a plain Hugging Face directory
    metrics.jsonl         one line per logged step (see docs/pretraining.md)
    events.jsonl          start / resume events
    floors.json           the context-free floor and overlap references the losses are read against
    config.yaml           the resolved config
    loss.png              loss curves with the span boundary
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from randommask import storage
from randommask.config import PretrainConfig
from randommask.errors import UserError
from randommask.masking import make_masker
from randommask.tokenizer import vocab_size_for

EVAL_SEED = 20231013  # the same evaluation masks for every run, schedule and seed
STATE_FILE = "trainer_state.pt"


# ---- run directory ------------------------------------------------------------------------------
def run_uri(cfg: PretrainConfig) -> str:
    return storage.join(cfg.run.storage_path, cfg.run.name)


def read_jsonl(uri: str) -> list[dict]:
    if not storage.exists(uri):
        return []
    return [json.loads(x) for x in storage.read_bytes(uri).decode().splitlines() if x.strip()]


def write_jsonl(uri: str, lines: list[dict]) -> None:
    storage.write_bytes(uri, "".join(json.dumps(x) + "\n" for x in lines).encode())


def upload_dir(local: str, uri: str) -> None:
    """Copy a finished local directory to ``uri``: renamed into place locally, object by object on S3."""
    if storage.is_local(uri):
        dest = storage.split_uri(uri)[1]
        tmp = dest + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(local, tmp)
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
        return
    for f in sorted(Path(local).iterdir()):
        storage.put_file(str(f), storage.join(uri, f.name))


# ---- the driver ---------------------------------------------------------------------------------
def check_storage(cfg: PretrainConfig) -> None:
    """Fail before Ray starts, and before anything is written, when storage cannot be used."""
    from randommask.prepare import read_manifest

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
    if cfg.model.init_from is None:
        return
    from transformers import AutoConfig

    try:
        hf = AutoConfig.from_pretrained(cfg.model.init_from)
    except Exception as e:
        raise UserError(f"model.init_from {cfg.model.init_from}: not a Hugging Face model directory ({e})") from None
    if hf.vocab_size != vocab_size_for(cfg.data.k):
        raise UserError(f"model.init_from {cfg.model.init_from}: vocabulary of {hf.vocab_size} tokens does not match "
                        f"data.k={cfg.data.k} ({vocab_size_for(cfg.data.k)} tokens)")


def pretrain(cfg: PretrainConfig, callbacks: list | None = None) -> dict[str, Any]:
    """Run (or resume, when the run's name already has checkpoints) a pretraining; returns a summary.
    ``callbacks`` are Ray Train ``UserCallback``s (a sweep passes Tune's report callback)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from randommask.observability import ControllerMetrics
    from randommask.ray_runtime import ensure_ray
    from randommask.worker import train_loop_per_worker

    cfg = absolute_paths(cfg)
    with storage.preflight():  # a wrong endpoint, key or path fails in seconds, before anything is written
        check_storage(cfg)
        check_init_from(cfg)
        check_data(cfg)
    floors = run_floors(cfg)
    storage.write_bytes(storage.join(run_uri(cfg), "floors.json"), (json.dumps(floors, indent=1) + "\n").encode())
    ensure_ray()
    storage_path, storage_fs = storage.ray_storage(cfg.run.storage_path)
    resources = {"CPU": cfg.scaling.cpus_per_worker}
    if cfg.scaling.use_gpu:
        resources["GPU"] = cfg.scaling.gpus_per_worker
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": cfg.model_dump(mode="json"), "floors": floors, "launched": time.time()},
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.scaling.num_workers, use_gpu=cfg.scaling.use_gpu,
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=cfg.run.name, storage_path=storage_path, storage_filesystem=storage_fs,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.run.keep_checkpoints),
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
    return cfg


def check_data(cfg: PretrainConfig) -> None:
    """The epoch must hold a batch per worker, and validation windows must fit (else: a clear error now,
    not a traceback from a worker later)."""
    from randommask.data import build_plan

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
    base = run_uri(cfg)
    lines = read_jsonl(storage.join(base, "metrics.jsonl"))
    last = lines[-1] if lines else {}
    evals = [x for x in lines if "eval_span_k_loss" in x]
    floors_uri = storage.join(base, "floors.json")
    done = last.get("step", 0) >= cfg.optim.max_steps
    out = {
        "run": cfg.run.name, "step": last.get("step", 0), "max_steps": cfg.optim.max_steps, "finished": done,
        "tokens": last.get("tokens", 0), "seconds": round(seconds, 1), "train_loss": last.get("loss"),
        "train_mask_loss": last.get("mask_loss"),
        "floors": json.loads(storage.read_bytes(floors_uri)) if storage.exists(floors_uri) else None,
        "final": storage.join(base, "final") if done else None,
        "metrics": storage.join(base, "metrics.jsonl"), "plot": storage.join(base, "loss.png"),
    }
    for key in ("eval_span_k_loss", "eval_span_2k_loss", "eval_span_k_mask_loss", "eval_span_2k_mask_loss",
                "eval_span_k_mask_acc", "eval_span_2k_mask_acc"):
        out[key] = evals[-1].get(key) if evals else None
    return out


# ---- evaluation sets and the floors they are read against --------------------------------------
def eval_sets(cfg: PretrainConfig) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Fixed validation windows under span-k and span-2k masking, identical for every run with the
    same data, window length and ``run.eval_windows``. Raises UserError when there is no window."""
    from randommask.data import validation_windows

    d = cfg.data
    windows = validation_windows(d.prepared, d.window_bp, d.k, d.stride, cfg.run.eval_windows,
                                 d.max_n_fraction, storage_options=d.storage_options or None)
    ids = torch.from_numpy(windows).long()
    return {name: make_masker("span", d.k, span=span)(ids, 0, torch.Generator().manual_seed(EVAL_SEED))
            for name, span in (("span_k", d.k), ("span_2k", 2 * d.k))}


def run_floors(cfg: PretrainConfig) -> dict[str, Any]:
    """The data's floors (randommask.floors) and each evaluation set's overlap reference."""
    from randommask.floors import compute_floors, eval_reference

    d = cfg.data
    floors = compute_floors(d.prepared, d.k, d.stride, storage_options=d.storage_options or None)
    try:
        sets = eval_sets(cfg)
    except UserError:
        sets = {}
    for name, (inputs, labels) in sets.items():
        ref = eval_reference(inputs, labels, d.k, d.stride, floors["overlap_per_base"])
        floors[f"eval_{name}_overlap"] = None if ref is None else round(ref, 4)
    return floors
