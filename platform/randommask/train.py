"""RandomMask pretraining on Ray Train: the driver (``pretrain``) and the per-worker loop.

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

import contextlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from randommask import storage
from randommask.config import PretrainConfig, dump_config
from randommask.errors import UserError
from randommask.masking import make_masker
from randommask.model import STATS, SparseMLM, build_mlm, mlm_forward
from randommask.tokenizer import KmerTokenizer, vocab_size_for

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

    from randommask.ray_runtime import ensure_ray

    cfg = absolute_paths(cfg)
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
        train_loop_config={"config": cfg.model_dump(mode="json"), "floors": floors},
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.scaling.num_workers, use_gpu=cfg.scaling.use_gpu,
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=cfg.run.name, storage_path=storage_path, storage_filesystem=storage_fs,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.run.keep_checkpoints),
            failure_config=ray.train.FailureConfig(max_failures=cfg.run.max_failures), callbacks=callbacks or [],
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


# ---- the worker ---------------------------------------------------------------------------------
def mask_figures(loss_sum: float, correct: float, n: float) -> dict[str, float | None]:
    """``mask_loss`` and ``mask_acc``: over labelled positions whose input is [MASK] (None if there are none)."""
    if n <= 0:
        return {"mask_loss": None, "mask_acc": None}
    return {"mask_loss": round(loss_sum / n, 5), "mask_acc": round(correct / n, 5)}


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1, np.uint64)[0] >> 1)


def lr_factor(step: int, warmup: int, max_steps: int, decay: str, min_ratio: float,
              decay_start: int | None = None) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    start = max(warmup, decay_start or 0)
    if decay == "constant" or step < start:
        return 1.0
    progress = min(1.0, (step - start) / max(1, max_steps - start))
    shape = 1 - progress if decay == "linear" else 0.5 * (1 + math.cos(math.pi * progress))
    return min_ratio + (1 - min_ratio) * shape


def _quiet_worker_logs() -> None:
    import ray.train.v2._internal.execution.context as train_context
    import transformers

    transformers.logging.disable_progress_bar()  # no "Writing model shards" bar at every checkpoint
    # Ray Train logs every report under this file's path, not under the ray.train logger.
    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def autocast(device: torch.device):
    """bf16 autocast on CUDA; fp32 on CPU. One code path for both."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


def train_step(model, opt, sched, masker, data: Iterator[torch.Tensor], step: int, *, seed: int, rank: int,
               world: int, device: torch.device, accum: int = 1, grad_clip: float = 1.0) -> dict[str, float]:
    """One optimizer step: ``accum`` micro-batches masked on the device (the schedule driven by the
    global step), sparse MLM loss, clipping, AdamW. The benchmark runs this same function."""
    model.train()
    wait = loss_sum = 0.0
    stats = torch.zeros(len(STATS), dtype=torch.float64)
    tokens = 0
    crc = 0
    for micro in range(accum):
        t = time.perf_counter()
        ids = next(data)
        wait += time.perf_counter() - t
        crc = zlib.crc32(ids.numpy(), crc)  # reads the buffer in place, no copy
        ids = ids.to(device, non_blocking=True).long()
        # Masks depend only on (seed, step, rank, micro): nothing to checkpoint, exact on resume.
        gen = torch.Generator(device=device).manual_seed(_seed(seed, step, rank, micro))
        inputs, labels = masker(ids, step, gen)
        sync = contextlib.nullcontext() if micro == accum - 1 or world == 1 else model.no_sync()
        with sync:
            with autocast(device):
                # Windows have a fixed length: no padding, so no attention mask (fused kernels apply).
                loss, counts = mlm_forward(model, inputs, labels)
            (loss / accum).backward()
        loss_sum += float(loss.detach())
        stats += counts.cpu().double()
        tokens += ids.numel()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    lr = sched.get_last_lr()[0]
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return {"loss": loss_sum / accum, **dict(zip(STATS, stats.tolist())), "tokens": tokens,
            "wait": wait, "lr": lr, "crc": crc}


def build_optimizer(mlm, o) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (fused on CUDA), no weight decay on biases and LayerNorm; warmup then decay."""
    cuda = next(mlm.parameters()).device.type == "cuda"
    decay = [p for n, p in mlm.named_parameters() if p.ndim > 1 and "LayerNorm" not in n]
    no_decay = [p for n, p in mlm.named_parameters() if not (p.ndim > 1 and "LayerNorm" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=o.lr, betas=o.betas, eps=o.eps, fused=cuda)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, o.warmup_steps, o.max_steps, o.decay, o.min_lr_ratio, o.decay_start))
    return opt, sched


class Worker:
    """State and steps of one training worker; ``run`` is the loop."""

    def __init__(self, cfg: PretrainConfig, rank: int, world: int, device: torch.device,
                 floors: dict | None = None) -> None:
        import ray.train.torch

        self.cfg, self.rank, self.world, self.device = cfg, rank, world, device
        self.floors = floors
        self.base = run_uri(cfg)
        self.cuda = device.type == "cuda"
        self.tok = KmerTokenizer(cfg.data.k, cfg.data.stride)
        torch.manual_seed(cfg.run.seed)  # the same initial weights on every rank
        if cfg.model.init_from:
            from transformers import BertForMaskedLM

            self.mlm = BertForMaskedLM.from_pretrained(cfg.model.init_from, attn_implementation="sdpa")
        else:
            self.mlm = build_mlm(cfg.model.preset, cfg.data.k, **cfg.model.overrides)
        if cfg.scaling.compile and self.cuda:
            self.mlm.bert.compile(dynamic=False)
        self.model = ray.train.torch.prepare_model(SparseMLM(self.mlm))
        self.opt, self.sched = build_optimizer(self.mlm, cfg.optim)
        self.masker = cfg.masker()
        self.step = 0
        self.position = {"epoch": 0, "sample": 0}
        self.history: list[dict] = []
        self.tokens = 0
        torch.manual_seed(_seed(cfg.run.seed, rank, 1))  # dropout differs per rank
        self.resumed_from = self._restore()
        self.eval_sets = self._eval_sets()
        self.metrics = None
        if rank == 0:
            from randommask.observability import TrainMetrics

            ob = cfg.observability
            self.metrics = TrainMetrics(cfg.run.name, ob.ray_metrics, ob.prometheus_port, ob.prometheus_host)
            self.metrics.set_floors(floors)

    # -- checkpoints -------------------------------------------------------------------------------
    def _gather(self, obj: Any) -> list[Any]:
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def _restore(self) -> int | None:
        import ray.train

        ckpt = ray.train.get_checkpoint()
        if ckpt is None:
            return None
        with ckpt.as_directory() as d:
            state = torch.load(os.path.join(d, STATE_FILE), map_location="cpu", weights_only=False)
            from transformers import BertForMaskedLM

            loaded = BertForMaskedLM.from_pretrained(os.path.join(d, "model"))
            self.mlm.load_state_dict(loaded.state_dict())
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.step, self.tokens, self.history = state["step"], state["tokens"], state["history"]
        if len(state["positions"]) == self.world:
            self.position = dict(state["positions"][self.rank])
            torch.set_rng_state(state["rng"][self.rank])
        else:  # a different number of workers: restart the current epoch
            self.position = {"epoch": max(p["epoch"] for p in state["positions"]), "sample": 0}
        return self.step

    def save_checkpoint(self, metrics: dict) -> None:
        import ray.train

        positions = self._gather(dict(self.position))
        rngs = self._gather(torch.get_rng_state())
        name = f"step_{self.step:08d}"
        if self.rank != 0:
            ray.train.report(metrics, checkpoint=None, checkpoint_dir_name=name)
            return
        with tempfile.TemporaryDirectory() as d:
            self.mlm.save_pretrained(os.path.join(d, "model"))
            self.tok.save_pretrained(os.path.join(d, "model"))
            torch.save({"optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(), "step": self.step,
                        "tokens": self.tokens, "positions": positions, "rng": rngs, "history": self.history,
                        "config": self.cfg.model_dump(mode="json")}, os.path.join(d, STATE_FILE))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d), checkpoint_dir_name=name)
        write_jsonl(storage.join(self.base, "metrics.jsonl"), self.history)

    # -- data ------------------------------------------------------------------------------------
    def batches(self) -> Iterator[torch.Tensor]:
        """Training batches from the saved data position on, epoch after epoch."""
        from randommask.data import pretraining_dataset

        d, batch = self.cfg.data, self.cfg.optim.batch_size
        while True:
            epoch, start = self.position["epoch"], self.position["sample"]
            ds = pretraining_dataset(d.prepared, "train", d.window_bp, d.k, d.stride, self.cfg.run.seed, epoch,
                                     d.rc_prob, d.max_n_fraction, start_sample=start, num_shards=self.world,
                                     shard_index=self.rank, storage_options=d.storage_options or None)
            got = 0
            for b in ds.iter_torch_batches(batch_size=batch, drop_last=True, prefetch_batches=4):
                self.position["sample"] += batch
                got += 1
                yield b["input_ids"]
            if got == 0 and start == 0:
                raise UserError(f"{d.prepared}: an epoch holds fewer than optim.batch_size={batch} windows per worker")
            self.position = {"epoch": epoch + 1, "sample": 0}

    def _eval_sets(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        try:
            return eval_sets(self.cfg)
        except UserError:
            return {}  # no validation windows (val_fraction 0 or windows too long)

    # -- steps -----------------------------------------------------------------------------------
    def train_step(self, data: Iterator[torch.Tensor]) -> dict[str, float]:
        o = self.cfg.optim
        out = train_step(self.model, self.opt, self.sched, self.masker, data, self.step, seed=self.cfg.run.seed,
                         rank=self.rank, world=self.world, device=self.device, accum=o.grad_accum,
                         grad_clip=o.grad_clip)
        self.step += 1
        return out

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        # The unwrapped module: evaluation is per-rank work plus one all-reduce of counts, with no
        # DDP forward (no buffer broadcast, and ranks with fewer rows cannot desynchronise it).
        self.mlm.eval()
        out = {}
        bs = self.cfg.optim.batch_size
        for name, (inputs, labels) in self.eval_sets.items():
            mine = torch.arange(self.rank, len(inputs), self.world)  # this rank's rows of the fixed set
            totals = torch.zeros(1 + len(STATS), dtype=torch.float64)  # loss sum, then STATS
            for i in range(0, len(mine), bs):
                rows = mine[i : i + bs]
                with autocast(self.device):
                    loss, counts = mlm_forward(self.mlm, inputs[rows].to(self.device), labels[rows].to(self.device))
                totals += torch.cat([(loss.detach() * counts[1]).reshape(1), counts]).cpu().double()
            t = dict(zip(("loss_sum", *STATS), self._all_reduce(totals).tolist()))
            out[f"eval_{name}_loss"] = round(t["loss_sum"] / max(t["selected"], 1), 5)
            out[f"eval_{name}_acc"] = round(t["correct"] / max(t["selected"], 1), 5)
            out.update({f"eval_{name}_{key}": v for key, v in
                        mask_figures(t["mask_loss_sum"], t["mask_correct"], t["mask_selected"]).items()})
        return out

    def _all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        if self.world == 1:
            return t
        t = t.to(self.device)
        torch.distributed.all_reduce(t)
        return t.cpu()

    # -- the loop ----------------------------------------------------------------------------------
    def run(self) -> None:
        import ray.train

        cfg = self.cfg
        if self.rank == 0:
            self._record_start()
        data = self.batches()
        max_steps = cfg.optim.max_steps
        stop = min(max_steps, cfg.run.stop_after or max_steps)
        keys = ("loss", *STATS, "tokens", "wait", "steps")  # summed over the steps since the last line
        window = torch.zeros(len(keys), dtype=torch.float64)
        t_window = time.perf_counter()
        t_start, step_start = time.perf_counter(), self.step
        crc = 0
        while self.step < stop:
            s = self.train_step(data)
            window += torch.tensor([s.get(key, 1.0) for key in keys], dtype=torch.float64)
            crc = s["crc"]
            last = self.step == stop
            log_now = self.step % cfg.run.log_every == 0 or last
            eval_now = bool(self.eval_sets) and (self.step % cfg.run.eval_every == 0 or last)
            ckpt_now = self.step % cfg.run.checkpoint_every == 0 or last
            if not (log_now or eval_now or ckpt_now):
                continue
            tot = dict(zip(keys, self._all_reduce(window.clone()).tolist()))
            elapsed = time.perf_counter() - t_window
            self.tokens += int(tot["tokens"])
            lo, hi = self.masker.span_bounds(self.step - 1)
            line = {
                "step": self.step, "epoch": self.position["epoch"], "loss": round(tot["loss"] / tot["steps"], 5),
                "acc": round(tot["correct"] / max(tot["selected"], 1), 5),
                **mask_figures(tot["mask_loss_sum"], tot["mask_correct"], tot["mask_selected"]),
                "lr": float(f"{s['lr']:.6g}"),
                "tokens_per_s": round(tot["tokens"] / elapsed, 1), "tokens": self.tokens,
                "span_min": lo, "span_max": hi, "masked_fraction": round(tot["selected"] / max(tot["tokens"], 1), 5),
                "data_wait": round(tot["wait"] / self.world / elapsed, 4), "batch_crc": crc,
                "time": round(time.time(), 1),
            }
            if eval_now:
                line.update(self.evaluate())
            window.zero_()
            t_window = time.perf_counter()
            if self.rank == 0:
                self.history.append(line)
                self.metrics.update(line)
                if cfg.observability.progress:
                    self._progress(line, (time.perf_counter() - t_start) / max(1, self.step - step_start))
            if ckpt_now:
                self.save_checkpoint(line)
            elif eval_now:
                ray.train.report(line)  # intermediate metrics for Tune / the controller
                if self.rank == 0:  # a run stopped from outside (e.g. by ASHA) keeps its curve
                    write_jsonl(storage.join(self.base, "metrics.jsonl"), self.history)
        if self.rank == 0 and self.step >= max_steps:
            self._write_final()
        if self.metrics is not None:
            self.metrics.close()

    def _progress(self, line: dict, sec_per_step: float) -> None:
        eta = (self.cfg.optim.max_steps - self.step) * sec_per_step
        ev = ""
        if line.get("eval_span_k_mask_loss") is not None:
            ev = f" | eval [MASK] span-k {line['eval_span_k_mask_loss']:.3f} span-2k {line['eval_span_2k_mask_loss']:.3f}"
            if self.floors and self.floors.get("context_free") is not None:
                ev += f" (floor {self.floors['context_free']:.2f})"
        mask = f"{line['mask_loss']:.3f}" if line.get("mask_loss") is not None else "-"
        print(f"[{self.cfg.run.name}] step {self.step}/{self.cfg.optim.max_steps} [MASK] loss {mask} "
              f"(all {line['loss']:.3f}){ev} {line['tokens_per_s']:,.0f} tok/s span {line['span_min']}-{line['span_max']} "
              f"lr {line['lr']:.2e} wait {line['data_wait']:.0%} ETA {time.strftime('%H:%M:%S', time.gmtime(eta))}",
              flush=True)

    def _record_start(self) -> None:
        events_uri = storage.join(self.base, "events.jsonl")
        events = read_jsonl(events_uri)
        kind = "resume" if self.resumed_from is not None else "start"
        events.append({"event": kind, "step": self.step, "epoch": self.position["epoch"],
                       "sample": self.position["sample"], "workers": self.world, "time": round(time.time(), 1)})
        write_jsonl(events_uri, events)
        storage.write_bytes(storage.join(self.base, "config.yaml"), dump_config(self.cfg).encode())
        if kind == "resume":
            print(f"[{self.cfg.run.name}] resumed from step {self.step} (epoch {self.position['epoch']}, "
                  f"sample {self.position['sample']})", flush=True)

    def _write_final(self) -> None:
        from randommask.plots import loss_curves_png

        with tempfile.TemporaryDirectory() as d:
            self.mlm.save_pretrained(d)
            self.tok.save_pretrained(d)
            upload_dir(d, storage.join(self.base, "final"))
        write_jsonl(storage.join(self.base, "metrics.jsonl"), self.history)
        storage.write_bytes(storage.join(self.base, "loss.png"),
                            loss_curves_png({self.cfg.run.name: self.history}, title=f"{self.cfg.run.name} "
                                            f"({self.cfg.masking.strategy}, {self.cfg.model.preset})",
                                            floors=self.floors))


def train_loop_per_worker(loop_config: dict) -> None:
    import ray.train
    import ray.train.torch

    _quiet_worker_logs()
    cfg = PretrainConfig.model_validate(loop_config["config"])
    ctx = ray.train.get_context()
    Worker(cfg, ctx.get_world_rank(), ctx.get_world_size(), ray.train.torch.get_device(),
           loop_config.get("floors")).run()
