"""The GPU check: the CUDA paths the CPU test suite cannot run, measured in one script.

    make gpu-check                                     # from a checkout with .venv
    PYTHONPATH=platform python3 -m randommask.tools.gpu_check   # on a bare machine: torch, transformers, numpy

It imports neither Ray nor pydantic (the paths it checks run inside Ray Train workers, but the
code is this package's own: ``step.train_step``, ``model``, ``masking``), and it carries its own
data (a 300-kb slice of E. coli 536 in ``randommask/assets``). One JSON line per figure:

- ``env``: torch, transformers, the card and its dense bf16 peak (H100 SXM / PCIe / NVL, H200, A100...);
- ``mlm-step``: the ``base`` model at batch 64 x 512, bf16, sparse loss against the full-vocabulary
  loss, eager and ``torch.compile``d: tokens/s and MFU against the card's own peak;
- ``train-step``: the real pretraining step (masking on the device, sparse loss, clipping, fused
  AdamW) for 300 steps on windows of the carried genome: tokens/s, MFU, loss at the start and end
  (it must fall);
- ``finetune-step``: a sequence-classification training loop in bf16: tokens/s.

Any failure prints an ``error`` line and the exit status is 1. Without a GPU (or with ``--quick``)
it runs every check at toy sizes on the CPU: the suite runs it that way.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import torch

from randommask.common.assets import GENOME_SLICE as SLICE

FULL = dict(preset="base", batch=64, seq_len=512, mlm_steps=20, train_steps=300, lr=4e-4, ft_steps=100, ft_batch=32,
            ft_seq_len=128)
QUICK = dict(preset="tiny", batch=16, seq_len=64, mlm_steps=2, train_steps=40, lr=3e-3, ft_steps=5, ft_batch=8,
             ft_seq_len=32)


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _card(device: torch.device) -> tuple[str | None, float | None]:
    from randommask.common.hardware import peak_bf16_flops

    if device.type != "cuda":
        return None, None
    found = peak_bf16_flops(torch.cuda.get_device_name(device))
    return (found[0], found[1]) if found else (None, None)


def windows(n: int, window_bp: int, k: int = 6, seed: int = 0, genome: Path = SLICE) -> torch.Tensor:
    """``n`` tokenized windows cut at seeded random starts from the carried genome slice."""
    from randommask.data.genome import cut_windows, genome_codes
    from randommask.data.tokenizer import KmerTokenizer

    codes = cut_windows(genome_codes(genome), window_bp, n, seed)
    return torch.from_numpy(KmerTokenizer(k).encode_windows(codes))


def check_env(device: torch.device) -> dict:
    import transformers

    card, peak = _card(device)
    return {"check": "env", "torch": torch.__version__, "transformers": transformers.__version__,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "card": card, "peak_bf16_tflops": peak / 1e12 if peak else None,
            "cuda": torch.version.cuda, "python": sys.version.split()[0]}


def check_mlm_step(device: torch.device, preset: str, batch: int, seq_len: int, steps: int, compile: bool) -> dict:
    """Forward + backward of the MLM at a fixed batch (no optimizer): the model's raw speed."""
    from randommask.tools.bench.kernels import bench_mlm_step

    out = bench_mlm_step(genome=str(SLICE), preset=preset, batch=batch, seq_len=seq_len, steps=steps,
                         device=str(device), compile=compile)
    return {"check": "mlm-step", "compile": compile, **{k: v for k, v in out.items() if k != "bench"}}


def check_train_step(device: torch.device, preset: str, batch: int, seq_len: int, steps: int, lr: float) -> dict:
    """The pretraining step the Ray Train workers run, on real windows, timed after a warm-up."""
    from randommask.common.hardware import train_flops_per_token
    from randommask.training.masking import make_masker
    from randommask.training.model import SparseMLM, build_mlm
    from randommask.training.step import build_optimizer, train_step

    k = 6
    torch.manual_seed(0)
    ids = windows(batch * steps, seq_len - 2 + k - 1, k).reshape(steps, batch, -1)
    mlm = build_mlm(preset, k).to(device)
    model = SparseMLM(mlm)
    optim = SimpleNamespace(lr=lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.01, warmup_steps=min(30, steps // 5),
                            max_steps=steps, decay="linear", min_lr_ratio=0.0, decay_start=None)
    opt, sched = build_optimizer(mlm, optim)
    masker = make_masker("randommask", k, phase_ends=[steps // 5 * (i + 1) for i in range(4)] + [steps])
    data = iter(ids)
    warmup = max(1, steps // 10)
    losses, masked = [], []
    for step in range(steps):
        if step == warmup:
            _sync(device)
            t0 = time.perf_counter()
        s = train_step(model, opt, sched, masker, data, step, seed=0, rank=0, world=1, device=device)
        losses.append(s["loss"])
        masked.append(s["selected"] / s["tokens"])
    _sync(device)
    seconds = time.perf_counter() - t0
    tokens = (steps - warmup) * ids[0].numel()
    n = max(1, steps // 10)
    first, last = float(np.mean(losses[:n])), float(np.mean(losses[-n:]))
    out = {"check": "train-step", "preset": preset, "device": str(device), "batch": batch, "seq_len": int(ids.shape[-1]),
           "steps": steps, "tokens_per_s": round(tokens / seconds), "loss_first": round(first, 4),
           "loss_last": round(last, 4), "loss_falls": last < first,
           "fused_adamw": bool(opt.defaults.get("fused")), "dtype": "bf16" if device.type == "cuda" else "fp32"}
    card, peak = _card(device)
    if peak:
        flops = train_flops_per_token(mlm.config, int(ids.shape[-1]), float(np.mean(masked))) * tokens / seconds
        out.update(tflops=round(flops / 1e12, 1), mfu=round(flops / peak, 3))
    if not last < first:
        raise AssertionError(f"train-step: the loss did not fall ({first:.3f} -> {last:.3f}): {json.dumps(out)}")
    return out


def check_finetune_step(device: torch.device, preset: str, batch: int, seq_len: int, steps: int) -> dict:
    """A classification fine-tuning loop as ``randommask finetune`` runs it (bf16 autocast on CUDA)."""
    from transformers import BertForSequenceClassification

    from randommask.common.hardware import classifier_flops_per_token
    from randommask.training.model import autocast, build_mlm

    k = 6
    torch.manual_seed(0)
    config = build_mlm(preset, k).config
    config.num_labels = 2
    model = BertForSequenceClassification(config).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-5, fused=device.type == "cuda")
    ids = windows(batch * steps, seq_len - 2 + k - 1, k, seed=1).reshape(steps, batch, -1)
    labels = torch.from_numpy(np.random.default_rng(0).integers(0, 2, size=(steps, batch)))
    attn = torch.ones_like(ids[0])
    warmup = max(1, steps // 10)
    for step in range(steps):
        if step == warmup:
            _sync(device)
            t0 = time.perf_counter()
        with autocast(device):
            loss = model(input_ids=ids[step].to(device).long(), attention_mask=attn.to(device),
                         labels=labels[step].to(device)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    _sync(device)
    seconds = time.perf_counter() - t0
    tokens = (steps - warmup) * ids[0].numel()
    out = {"check": "finetune-step", "preset": preset, "device": str(device), "batch": batch,
           "seq_len": int(ids.shape[-1]), "steps": steps, "tokens_per_s": round(tokens / seconds),
           "dtype": "bf16" if device.type == "cuda" else "fp32", "loss": round(float(loss.detach()), 4)}
    card, peak = _card(device)
    if peak:
        flops = classifier_flops_per_token(config, int(ids.shape[-1])) * tokens / seconds
        out.update(tflops=round(flops / 1e12, 1), mfu=round(flops / peak, 3))
    return out


def run_checks(device: torch.device, sizes: dict, compile: bool = True) -> int:
    """Every check in turn; a failing one prints its error and the others still run. Returns the
    number of failures."""
    s = sizes
    checks: list[tuple[str, Callable[[], dict]]] = [
        ("env", lambda: check_env(device)),
        ("mlm-step", lambda: check_mlm_step(device, s["preset"], s["batch"], s["seq_len"], s["mlm_steps"], False)),
    ]
    if compile and device.type == "cuda":  # compiling on the CPU would take minutes and tell nothing
        checks.append(("mlm-step", lambda: check_mlm_step(device, s["preset"], s["batch"], s["seq_len"],
                                                          s["mlm_steps"], True)))
    checks += [
        ("train-step", lambda: check_train_step(device, s["preset"], s["batch"], s["seq_len"], s["train_steps"],
                                                            s["lr"])),
        ("finetune-step", lambda: check_finetune_step(device, s["preset"], s["ft_batch"], s["ft_seq_len"],
                                                      s["ft_steps"])),
    ]
    failures = 0
    for name, fn in checks:
        t0 = time.perf_counter()
        try:
            record = fn()
            record["seconds"] = round(time.perf_counter() - t0, 1)
            emit(record)
        except Exception as e:  # noqa: BLE001 - every check reports, the exit status carries the failure
            failures += 1
            emit({"check": name, "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"})
            traceback.print_exc(file=sys.stderr)
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return failures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="randommask.tools.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cuda, cuda:1, cpu")
    p.add_argument("--quick", action="store_true", help="toy sizes (the default without a GPU)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile measurement")
    args = p.parse_args(argv)
    if args.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(args.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            print("randommask.tools.gpu_check: error: --device cuda asked for, but torch sees no CUDA device", file=sys.stderr)
            return 2
    quick = args.quick or device.type != "cuda"
    if device.type != "cuda":
        print("randommask.tools.gpu_check: no CUDA device: every check at toy sizes on the CPU", file=sys.stderr)
    failures = run_checks(device, QUICK if quick else FULL, compile=not args.no_compile)
    emit({"check": "done", "ok": failures == 0, "failures": failures, "sizes": "quick" if quick else "full"})
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
