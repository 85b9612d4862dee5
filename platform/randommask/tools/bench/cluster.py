"""Benchmarks through Ray: the data pipeline from S3, the train step in a Ray Train worker and a
whole pretraining (batch inference is in ``inference``)."""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from randommask.data.genome import cut_windows, genome_codes
from randommask.data.tokenizer import KmerTokenizer
from randommask.tools.bench.common import dnabert_style_mask, hf_tokenizer, resolve_genome, windows_as_str
from randommask.training.masking import make_masker
from randommask.training.model import build_mlm


# ---- pipeline ----------------------------------------------------------------------------------
def bench_pipeline(genome: str | None = None, epochs: int = 3, batch: int = 256, window_bp: int = 512, k: int = 6,
                   seed: int = 0, baseline_windows: int = 2000) -> dict:
    """Tokens/s that ``pretraining_dataset`` delivers to a consumer iterating torch batches, reading
    the genome from a local S3 server (rclone), against DNABERT's data path on the same windows."""
    import shutil

    from randommask.common.ray_runtime import ensure_ray
    from randommask.data.prepare import prepare
    from randommask.data.stream import ReadChunk, build_plan, data_section, pretraining_dataset
    from randommask.tools.s3server import local_s3

    path = resolve_genome(genome)
    with tempfile.TemporaryDirectory() as tmp, local_s3(Path(tmp) / "s3", "bench-key-0001", "bench-secret-0001") as s3:
        shutil.copy(path, s3.bucket("genomes") / path.name)
        s3.bucket("prepared")
        os.environ.update(s3.env())  # before Ray starts: its workers read the same variables
        ensure_ray()
        t0 = time.perf_counter()
        manifest = prepare([f"s3://genomes/{path.name}"], "s3://prepared/bench", seed=seed, show_progress=False)
        prepare_s = time.perf_counter() - t0
        uri = "s3://prepared/bench"
        data = data_section({"prepared": uri, "window_bp": window_bp, "k": k})
        per_epoch, waits, first_batch = [], [], []
        for epoch in range(epochs + 1):  # epoch 0 warms up Ray's worker processes
            ds = pretraining_dataset(data, seed=seed, epoch=epoch)
            n_tokens, wait, t_start = 0, 0.0, time.perf_counter()
            it = iter(ds.iter_torch_batches(batch_size=batch))
            while True:
                t = time.perf_counter()
                b = next(it, None)
                wait += time.perf_counter() - t
                if b is None:
                    break
                if n_tokens == 0:
                    first_batch.append(time.perf_counter() - t_start)
                n_tokens += b["input_ids"].numel()
            if epoch:
                per_epoch.append((n_tokens, time.perf_counter() - t_start))
                waits.append(wait)
        tokens = sum(n for n, _ in per_epoch)
        seconds = sum(t for _, t in per_epoch)
        # Where the time goes: the same per-chunk work, serially in this process.
        plan = build_plan(uri, window_bp=window_bp, seed=seed, epoch=1)
        udf = ReadChunk(data, seed, 1, train=True)
        stages: dict[str, float] = {}
        for row in plan.chunks:
            udf.read(row, stages)
        stage_tokens = plan.num_samples * KmerTokenizer(k).num_tokens(window_bp)
    # DNABERT's path on the same kind of windows: Python strings, k-mer text, a BERT tokenizer.
    seqs = windows_as_str(str(path), baseline_windows, window_bp, seed)
    hf = hf_tokenizer(k)
    t = time.perf_counter()
    hf([" ".join(s[i : i + k] for i in range(len(s) - k + 1)) for s in seqs])
    base_tps = baseline_windows * KmerTokenizer(k).num_tokens(window_bp) / (time.perf_counter() - t)
    return {
        "bench": "pipeline", "source": "s3 (rclone serve s3 on 127.0.0.1)", "genome": path.name,
        "bases": manifest["totals"]["bases"], "epochs_timed": epochs, "batch": batch, "window_bp": window_bp,
        "tokens_per_s": round(tokens / seconds), "baseline_tokens_per_s": round(base_tps),
        "ratio": round(tokens / seconds / base_tps, 1),
        "baseline": "python windows + k-mer text + BertTokenizerFast (tokenizing only, no I/O)",
        "first_batch_s": round(float(np.mean(first_batch[1:])), 3),
        "consumer_wait_fraction": round(sum(waits) / seconds, 3),
        "prepare_bp_per_s": round(manifest["totals"]["bases"] / prepare_s),
        "per_chunk_stage_tokens_per_s": {key: round(stage_tokens / v) for key, v in stages.items()},
    }


# ---- train-overhead ----------------------------------------------------------------------------
def _overhead_loop(config: dict) -> float:
    """Steady-state tokens/s of the pretraining step (step.train_step) on in-memory batches. Runs in
    this process, or inside a Ray Train worker when ``config["in_ray"]``."""
    from randommask.training.config import OptimSection
    from randommask.training.model import SparseMLM
    from randommask.training.step import build_optimizer, train_step

    torch.manual_seed(0)
    batches = torch.from_numpy(config["batches"])
    model = SparseMLM(build_mlm(config["preset"], 6))
    if config["in_ray"]:
        import ray.train.torch

        model = ray.train.torch.prepare_model(model)
        device = ray.train.torch.get_device()
    else:
        device = torch.device("cpu")
    opt, sched = build_optimizer(model.module if hasattr(model, "module") else model,
                                 OptimSection(max_steps=len(batches)))
    masker = make_masker("randommask", 6, phase_ends=[10, 20, 30, 40, 50])
    data = iter(batches)
    warmup = config["warmup"]
    for step in range(len(batches)):
        if step == warmup:
            t0 = time.perf_counter()
        train_step(model, opt, sched, masker, data, step, seed=0, rank=0, world=1, device=device)
    return {"tokens_per_s": (len(batches) - warmup) * batches[0].numel() / (time.perf_counter() - t0),
            "torch_threads": torch.get_num_threads()}


def bench_train_overhead(genome: str | None = None, preset: str = "tiny", batch: int = 32, window_bp: int = 128,
                         steps: int = 40, warmup: int = 5, k: int = 6, seed: int = 0) -> dict:
    """The same training step and data, in a plain process and in a Ray Train worker."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from randommask.common.ray_runtime import ensure_ray

    codes = cut_windows(genome_codes(resolve_genome(genome)), window_bp, batch * (steps + warmup), seed)
    batches = KmerTokenizer(k).encode_windows(codes).reshape(steps + warmup, batch, -1)
    config = {"batches": batches, "preset": preset, "warmup": warmup, "in_ray": False}
    plain = _overhead_loop(config)
    ensure_ray()
    # The worker gets every CPU of the machine, as the plain process has (Ray sets the worker's
    # torch threads from its CPU reservation).
    cpus = ray.cluster_resources().get("CPU", 1)
    result = TorchTrainer(
        lambda cfg: _overhead_loop(cfg), train_loop_config={**config, "in_ray": True},
        scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": cpus}),
        run_config=ray.train.RunConfig(name=f"bench-overhead-{int(time.time())}",
                                       storage_path=tempfile.mkdtemp(prefix="randommask-bench-")),
    ).fit()
    in_ray = result.return_value
    ratio = in_ray["tokens_per_s"] / plain["tokens_per_s"]
    return {
        "bench": "train-overhead", "preset": preset, "batch": batch, "seq_len": int(batches.shape[-1]),
        "timed_steps": steps, "plain_tokens_per_s": round(plain["tokens_per_s"]),
        "ray_train_tokens_per_s": round(in_ray["tokens_per_s"]), "ratio": round(ratio, 3),
        "ray_overhead": round(1 - ratio, 3),
        "torch_threads": {"plain": plain["torch_threads"], "ray_worker": in_ray["torch_threads"]},
        "baseline": "the same train_step in a plain process",
    }


# ---- e2e ---------------------------------------------------------------------------------------
def _dnabert_loop(seqs: list[str], preset: str, batch: int, steps: int, warmup: int, k: int, seed: int) -> dict:
    """What a DNABERT user runs: k-mer text tokenized up front by a BERT tokenizer, a shuffled torch
    DataLoader, DNABERT's per-row Python span masking, the full-vocabulary MLM loss, AdamW."""
    from torch.utils.data import DataLoader, TensorDataset

    hf = hf_tokenizer(k)
    t0 = time.perf_counter()
    enc = hf([" ".join(s[i : i + k] for i in range(len(s) - k + 1)) for s in seqs], return_tensors="pt")
    tokenize_s = time.perf_counter() - t0
    torch.manual_seed(seed)
    model = build_mlm(preset, k).train()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.01)
    loader = DataLoader(TensorDataset(enc["input_ids"], enc["attention_mask"]), batch_size=batch, shuffle=True,
                        drop_last=True, generator=torch.Generator().manual_seed(seed))
    rng = random.Random(seed)
    done, tokens = 0, 0
    while done < steps:
        for ids, attn in loader:
            if done == warmup:
                t0 = time.perf_counter()
            inputs, labels = dnabert_style_mask(ids, hf, 0.025, k, k, rng)
            loss = model(input_ids=inputs, attention_mask=attn, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            done += 1
            tokens += ids.numel() if done > warmup else 0
            if done == steps:
                break
    return {"tokens_per_s": tokens / (time.perf_counter() - t0), "tokenize_s": tokenize_s,
            "torch_threads": torch.get_num_threads(), "loss": float(loss.detach())}


def bench_e2e(genome: str | None = None, preset: str = "tiny", batch: int = 32, window_bp: int = 128,
              steps: int = 300, warmup: int = 30, k: int = 6, seed: int = 0) -> dict:
    """Tokens/s of a whole pretraining: ours through Ray Train (Ray Data stream from prepared
    shards, masking on the device, sparse loss, AdamW, metrics and a final checkpoint), against a
    DNABERT-style loop on the same model, genome, window and batch size, on this machine. Steady
    state after ``warmup`` steps for both; our whole-command figure (Ray start-up included) too."""
    from randommask.data.prepare import prepare
    from randommask.training.config import PretrainConfig
    from randommask.training.driver import pretrain

    path = resolve_genome(genome)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        prepare([str(path)], f"{tmp}/prepared", seed=seed, show_progress=False)
        prepare_s = time.perf_counter() - t0
        cfg = PretrainConfig.model_validate({
            "data": {"prepared": f"{tmp}/prepared", "window_bp": window_bp, "k": k},
            "masking": {"strategy": "randommask", "phase_ends": [steps // 5 * (i + 1) for i in range(4)] + [steps]},
            "model": {"preset": preset},
            "optim": {"lr": 5e-3, "warmup_steps": 10, "batch_size": batch, "max_steps": steps},
            "run": {"name": "bench-e2e", "storage_path": f"{tmp}/runs", "log_every": 10, "eval_every": steps,
                    "checkpoint_every": steps, "eval_windows": 64, "seed": seed},
            "observability": {"progress": False, "ray_metrics": False},
        })
        t0 = time.perf_counter()
        summary = pretrain(cfg)
        wall_s = time.perf_counter() - t0
        lines = [json.loads(x) for x in Path(tmp, "runs", "bench-e2e", "metrics.jsonl").read_text().splitlines()]
    start = next(x for x in lines if x["step"] >= warmup)
    # The last line's own window only: its time stamp precedes the final evaluation and checkpoint.
    end = lines[-1]
    ours = (end["tokens"] - start["tokens"]) / max(end["time"] - start["time"], 1e-9)
    seqs = windows_as_str(str(path), batch * steps, window_bp, seed)
    base = _dnabert_loop(seqs, preset, batch, steps, warmup, k, seed)
    return {
        "bench": "e2e", "preset": preset, "batch": batch, "window_bp": window_bp, "steps": steps,
        "timed_steps": steps - warmup, "genome": path.name,
        "ours_tokens_per_s": round(ours), "baseline_tokens_per_s": round(base["tokens_per_s"]),
        "ratio": round(ours / base["tokens_per_s"], 2),
        "ours_whole_command_tokens_per_s": round(summary["tokens"] / wall_s), "ours_wall_s": round(wall_s, 1),
        "prepare_s": round(prepare_s, 1), "baseline_tokenize_s": round(base["tokenize_s"], 1),
        "torch_threads": {"ours": "Ray Train worker (scaling.cpus_per_worker=1)", "baseline": base["torch_threads"]},
        "baseline": "DNABERT-style: BertTokenizerFast k-mer text up front, torch DataLoader, per-row Python span "
                    "masking, full-vocabulary loss, AdamW",
    }
