"""Benchmarks of the hot paths in one process: tokenizing, masking, the MLM step."""

from __future__ import annotations

import random
import time
from typing import Callable

import numpy as np
import torch

from randommask.common.hardware import peak_bf16_flops, train_flops_per_token
from randommask.data.tokenizer import KmerTokenizer
from randommask.errors import UserError
from randommask.tools.bench.common import best_time, dnabert_style_mask, hf_tokenizer, token_batch, windows_as_str
from randommask.training.masking import make_masker
from randommask.training.model import build_mlm, mlm_loss


# ---- tokenize ----------------------------------------------------------------------------------
def bench_tokenize(genome: str | None = None, windows: int = 2000, window_bp: int = 512, k: int = 6,
                   seed: int = 0) -> dict:
    seqs = windows_as_str(genome, windows, window_bp, seed)
    tok = KmerTokenizer(k)
    hf = hf_tokenizer(k)

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
def bench_mask(genome: str | None = None, batch: int = 32, seq_len: int = 512, k: int = 6, step: int = 200000,
               seed: int = 0) -> dict:
    ids = token_batch(genome, batch, seq_len - 2 + k - 1, k, seed)
    masker = make_masker("randommask", k)
    lo, hi = masker.span_bounds(step)
    gen = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    t_ours = best_time(lambda: masker(ids, step, gen), 20)
    hf = hf_tokenizer(k)
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
    ids = token_batch(genome, batch, seq_len - 2 + k - 1, k, seed).to(dev)
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
