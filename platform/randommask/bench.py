"""Benchmarks: our hot paths against the DNABERT-style baseline, measured in the same process.

Each prints one JSON line: our figure, the baseline's, and the ratio. They are measurements, not
tests; run them on an idle machine.
"""

from __future__ import annotations

import copy
import json
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from randommask.errors import UserError
from randommask.genome import cut_windows, genome_codes
from randommask.hardware import peak_bf16_flops, train_flops_per_token
from randommask.masking import make_masker
from randommask.model import build_mlm, mlm_loss
from randommask.tokenizer import ALPHABET, KmerTokenizer

DEFAULT_GENOME = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "genomes" / "ecoli_536.fna.gz"


def resolve_genome(genome: str | None) -> Path:
    path = Path(genome) if genome else DEFAULT_GENOME
    if not path.is_file():
        raise UserError(f"genome {path} not found; pass --genome PATH to a FASTA file")
    return path


def best_time(fn: Callable[[], object], repeat: int = 3) -> float:
    """Best wall time of ``repeat`` runs, after one warm-up run."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _windows_as_str(genome: str | None, n: int, window_bp: int, seed: int) -> list[str]:
    codes = cut_windows(genome_codes(resolve_genome(genome)), window_bp, n, seed)
    letters = np.frombuffer(ALPHABET.encode() + b"N", dtype=np.uint8)
    return [row.tobytes().decode() for row in letters[codes]]


# ---- tokenize ----------------------------------------------------------------------------------
def bench_tokenize(genome: str | None = None, windows: int = 2000, window_bp: int = 512, k: int = 6,
                   seed: int = 0) -> dict:
    seqs = _windows_as_str(genome, windows, window_bp, seed)
    tok = KmerTokenizer(k)
    hf = _hf_tokenizer(k)

    def baseline() -> list[list[int]]:
        # DNABERT's data path: Python k-mer strings joined by spaces, then a BERT tokenizer.
        texts = [" ".join(s[i : i + k] for i in range(len(s) - k + 1)) for s in seqs]
        return hf(texts)["input_ids"]

    def ours() -> np.ndarray:
        return tok.encode_batch(seqs)["input_ids"]

    if np.asarray(baseline()).tolist() != ours().tolist():
        raise AssertionError("tokenize baseline and ours disagree")
    n_tokens = windows * tok.num_tokens(window_bp)
    t_base, t_ours = best_time(baseline, 2), best_time(ours, 5)
    return {
        "bench": "tokenize", "windows": windows, "window_bp": window_bp, "k": k,
        "ours_tokens_per_s": round(n_tokens / t_ours), "baseline_tokens_per_s": round(n_tokens / t_base),
        "ratio": round(t_base / t_ours, 1), "baseline": "python k-mer strings + BertTokenizerFast",
    }


# ---- mask --------------------------------------------------------------------------------------
def dnabert_style_mask(input_ids: torch.Tensor, hf_tokenizer, centre_prob: float, span_lo: int, span_hi: int,
                       rng: random.Random) -> tuple[torch.Tensor, torch.Tensor]:
    """DNABERT's masking procedure (run_pretrain.py's mask_tokens), widened to RandomMask's variable
    spans: a per-row Python special-token mask from the tokenizer, then a Python loop over every
    centre of every row. The reference the vectorized masker is measured against."""
    labels = input_ids.clone()
    prob = torch.full(labels.shape, centre_prob)
    special = [hf_tokenizer.get_special_tokens_mask(row, already_has_special_tokens=True) for row in labels.tolist()]
    prob.masked_fill_(torch.tensor(special, dtype=torch.bool), 0.0)
    prob.masked_fill_(labels.eq(hf_tokenizer.pad_token_id), 0.0)
    masked = torch.bernoulli(prob).bool()
    centres_per_row = copy.deepcopy(masked)
    for i, row in enumerate(centres_per_row):
        end = torch.where(prob[i] != 0)[0].tolist()[-1]
        centres = set(torch.where(row == 1)[0].tolist())
        widened = copy.deepcopy(centres)
        for c in centres:
            m = rng.randint(span_lo, span_hi)
            for pos in range(c - (m - 1) // 2, c + m // 2 + 1):
                if 1 <= pos <= end:
                    widened.add(pos)
        masked[i][list(widened)] = True
    labels[~masked] = -100
    replaced = torch.bernoulli(torch.full(labels.shape, 0.8)).bool() & masked
    inputs = input_ids.clone()
    inputs[replaced] = hf_tokenizer.mask_token_id
    randomized = torch.bernoulli(torch.full(labels.shape, 0.5)).bool() & masked & ~replaced
    inputs[randomized] = torch.randint(len(hf_tokenizer), labels.shape, dtype=torch.long)[randomized]
    return inputs, labels


def _hf_tokenizer(k: int):
    from transformers import BertTokenizerFast

    with tempfile.TemporaryDirectory() as d:
        KmerTokenizer(k).save_pretrained(d)
        return BertTokenizerFast.from_pretrained(d)


def _token_batch(genome: str | None, batch: int, window_bp: int, k: int, seed: int) -> torch.Tensor:
    codes = cut_windows(genome_codes(resolve_genome(genome)), window_bp, batch, seed)
    return torch.from_numpy(KmerTokenizer(k).encode_windows(codes)).long()


def bench_mask(genome: str | None = None, batch: int = 32, seq_len: int = 512, k: int = 6, step: int = 200000,
               seed: int = 0) -> dict:
    ids = _token_batch(genome, batch, seq_len - 2 + k - 1, k, seed)
    masker = make_masker("randommask", k)
    lo, hi = masker.span_bounds(step)
    gen = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    t_ours = best_time(lambda: masker(ids, step, gen), 20)
    hf = _hf_tokenizer(k)
    t_base = best_time(lambda: dnabert_style_mask(ids, hf, masker.centre_prob, lo, hi, rng), 3)
    _, labels = masker(ids, step, gen)
    return {
        "bench": "mask", "batch": batch, "seq_len": ids.shape[1], "strategy": "randommask", "step": step,
        "span_bounds": [lo, hi], "masked_fraction": round(float((labels != -100).float().mean()), 4),
        "ours_ms": round(t_ours * 1e3, 3), "baseline_ms": round(t_base * 1e3, 3), "ratio": round(t_base / t_ours, 1),
        "baseline": "DNABERT-style per-row special mask + per-centre Python loop",
    }


# ---- mlm-step ----------------------------------------------------------------------------------
def bench_mlm_step(genome: str | None = None, preset: str = "tiny", batch: int = 16, seq_len: int = 512,
                   k: int = 6, steps: int = 5, device: str = "cpu", seed: int = 0, compile: bool = False) -> dict:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but torch sees no CUDA device")
    torch.manual_seed(seed)
    dev = torch.device(device)
    ids = _token_batch(genome, batch, seq_len - 2 + k - 1, k, seed).to(dev)
    masker = make_masker("span", k)
    inputs, labels = masker(ids, 0, torch.Generator(device=dev).manual_seed(seed))
    attn = torch.ones_like(inputs)
    model = build_mlm(preset, k).to(dev).train()
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")
    sparse_fn = torch.compile(lambda: mlm_loss(model, inputs, labels, attn)) if compile else None

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    def run(loss_fn: Callable[[], torch.Tensor]) -> tuple[float, float]:
        with amp:
            loss_fn().backward()  # warm-up
        model.zero_grad(set_to_none=True)
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            with amp:
                loss = loss_fn()
            loss.backward()
            model.zero_grad(set_to_none=True)
        sync()
        return (time.perf_counter() - t0) / steps, float(loss.detach())

    # Same loss: compared with dropout off, so both paths see identical activations.
    model.eval()
    with torch.no_grad(), amp:
        loss_ours = float(mlm_loss(model, inputs, labels, attn))
        loss_base = float(model(input_ids=inputs, attention_mask=attn, labels=labels).loss)
    model.train()
    t_ours, _ = run(sparse_fn or (lambda: mlm_loss(model, inputs, labels, attn)))
    t_base, _ = run(lambda: model(input_ids=inputs, attention_mask=attn, labels=labels).loss)
    tokens = inputs.numel()
    frac = float((labels != -100).float().mean())
    out = {
        "bench": "mlm-step", "preset": preset, "device": str(dev), "batch": batch, "seq_len": inputs.shape[1],
        "ours_tokens_per_s": round(tokens / t_ours), "baseline_tokens_per_s": round(tokens / t_base),
        "ratio": round(t_base / t_ours, 2), "loss_ours": round(loss_ours, 6), "loss_baseline": round(loss_base, 6),
        "loss_abs_diff": abs(loss_ours - loss_base),
        "masked_fraction": round(frac, 4), "baseline": "HF BertForMaskedLM full-vocabulary loss",
    }
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
        card = peak_bf16_flops(name)
        flops = train_flops_per_token(model.config, inputs.shape[1], frac) * tokens / t_ours
        out.update(gpu=name, dtype="bf16", tflops=round(flops / 1e12, 1),
                   mfu=round(flops / card[1], 3) if card else None)
    return out


# ---- pipeline ----------------------------------------------------------------------------------
def bench_pipeline(genome: str | None = None, epochs: int = 3, batch: int = 256, window_bp: int = 512, k: int = 6,
                   seed: int = 0, baseline_windows: int = 2000) -> dict:
    """Tokens/s that ``pretraining_dataset`` delivers to a consumer iterating torch batches, reading
    the genome from a local S3 server (rclone), against DNABERT's data path on the same windows."""
    import shutil

    from randommask.data import _ReadChunk, build_plan, pretraining_dataset
    from randommask.prepare import prepare
    from randommask.ray_runtime import ensure_ray
    from randommask.s3server import local_s3

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
        per_epoch, waits, first_batch = [], [], []
        for epoch in range(epochs + 1):  # epoch 0 warms up Ray's worker processes
            ds = pretraining_dataset(uri, window_bp=window_bp, k=k, seed=seed, epoch=epoch)
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
        udf = _ReadChunk(uri, window_bp, k, 1, seed, 1, True, 0.5, 0.1, 0, None)
        stages: dict[str, float] = {}
        for row in plan.chunks:
            udf._one(row, stages)
        stage_tokens = plan.num_samples * KmerTokenizer(k).num_tokens(window_bp)
    # DNABERT's path on the same kind of windows: Python strings, k-mer text, a BERT tokenizer.
    seqs = _windows_as_str(str(path), baseline_windows, window_bp, seed)
    hf = _hf_tokenizer(k)
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
    from randommask.config import OptimSection
    from randommask.model import SparseMLM
    from randommask.step import build_optimizer, train_step

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

    from randommask.ray_runtime import ensure_ray

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

    hf = _hf_tokenizer(k)
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
    from randommask.config import PretrainConfig
    from randommask.prepare import prepare
    from randommask.train import pretrain

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
    seqs = _windows_as_str(str(path), batch * steps, window_bp, seed)
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


def bench_embed(genome: str | None = None, preset: str = "tiny", regions: int = 400, region_bp: int = 500,
                batch: int = 64, k: int = 6, seed: int = 0) -> dict:
    """Regions/s and tokens/s of ``randommask embed`` (Ray Data: genome reads and tokens in tasks, a
    pool of one encoder actor, Parquet out) against a plain ``transformers`` loop (pyfaidx reads,
    ``BertTokenizerFast`` k-mer text, ``BertModel`` mean of the k-mer tokens) on the same model,
    regions and machine; and how far apart their vectors are."""
    import pyarrow.parquet as pq
    import transformers
    from transformers import BertModel

    from randommask.inference import fasta as fasta_io
    from randommask.inference.embed import embed

    path = resolve_genome(genome)
    quiet = lambda *_: None  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = f"{tmp}/model"
        torch.manual_seed(seed)
        build_mlm(preset, k).save_pretrained(ckpt)
        KmerTokenizer(k).save_pretrained(ckpt)
        fa = fasta_io.open_fasta(str(path), log=quiet)
        chrom, length = max(fasta_io.contig_lengths(fa).items(), key=lambda kv: kv[1])
        rng = np.random.default_rng(seed)
        starts = np.sort(rng.integers(0, length - region_bp, size=regions))
        Path(f"{tmp}/r.bed").write_text("".join(f"{chrom}\t{s}\t{s + region_bp}\tr{i}\n" for i, s in enumerate(starts)))
        # One batch alone first: Ray and the pipeline's fixed cost (actor start, model load), so the
        # steady rate can be told from it.
        Path(f"{tmp}/one.bed").write_text("".join(Path(f"{tmp}/r.bed").read_text().splitlines(True)[:batch]))
        fixed_s = embed(ckpt, str(path), f"{tmp}/one.bed", f"{tmp}/one", batch_size=batch, log=quiet)["seconds"]
        t0 = time.perf_counter()
        summary = embed(ckpt, str(path), f"{tmp}/r.bed", f"{tmp}/out", batch_size=batch, log=quiet)
        wall_s = time.perf_counter() - t0
        ours = pq.read_table(f"{tmp}/out").to_pandas().set_index("name")

        hf = _hf_tokenizer(k)
        transformers.logging.set_verbosity_error()
        model = BertModel.from_pretrained(ckpt, add_pooling_layer=False).eval()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as our one actor (--cpus-per-actor 1)
        t0 = time.perf_counter()
        base = []
        with torch.no_grad():
            for i in range(0, regions, batch):
                seqs = [fa[chrom][int(s) : int(s) + region_bp] for s in starts[i : i + batch]]
                text = [" ".join(q[j : j + k] for j in range(len(q) - k + 1)) for q in seqs]
                enc = hf(text, padding=True, truncation=True, max_length=512, return_tensors="pt")
                hidden = model(**enc).last_hidden_state
                keep = enc["attention_mask"].clone()
                keep[:, 0] = 0
                keep[torch.arange(len(keep)), enc["attention_mask"].sum(1) - 1] = 0
                base.append(((hidden * keep[..., None]).sum(1) / keep.sum(1, keepdim=True)).numpy())
        base_s = time.perf_counter() - t0
        torch.set_num_threads(threads)
    base_vecs = np.concatenate(base)
    ours_vecs = np.stack([ours.loc[f"r{i}", "embedding"] for i in range(regions)])
    tokens = regions * (region_bp - k + 1)
    return {
        "bench": "embed", "preset": preset, "regions": regions, "region_bp": region_bp, "batch": batch,
        "genome": path.name, "ours_regions_per_s": round(regions / summary["seconds"], 1),
        "baseline_regions_per_s": round(regions / base_s, 1), "ratio": round(base_s / summary["seconds"], 2),
        "ours_tokens_per_s": round(tokens / summary["seconds"]), "baseline_tokens_per_s": round(tokens / base_s),
        "ours_fixed_s": round(fixed_s, 1),
        "ours_steady_regions_per_s": round((regions - batch) / max(summary["seconds"] - fixed_s, 1e-9), 1),
        "steady_ratio": round(base_s / regions * (regions - batch) / max(summary["seconds"] - fixed_s, 1e-9), 2),
        "ours_whole_command_s": round(wall_s, 1), "max_abs_diff": float(np.abs(ours_vecs - base_vecs).max()),
        "baseline": "plain loop: pyfaidx reads, BertTokenizerFast k-mer text, BertModel forward, mean of the "
                    "k-mer tokens; 1 torch thread, as our one actor",
    }


BENCHES = {"tokenize": bench_tokenize, "mask": bench_mask, "mlm-step": bench_mlm_step, "pipeline": bench_pipeline,
           "train-overhead": bench_train_overhead, "e2e": bench_e2e, "embed": bench_embed}


def print_result(result: dict) -> None:
    print(json.dumps(result), flush=True)
