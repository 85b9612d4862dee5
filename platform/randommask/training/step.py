"""One optimizer step of pretraining, and the optimizer it drives: masking on the device (the
schedule driven by the global step), the sparse MLM loss, gradient accumulation with DDP's
no_sync, clipping, AdamW. Ray Train workers, the benchmarks and the GPU check all run this same
code; it imports neither Ray nor pydantic, so it runs on a bare torch + transformers machine.
"""

from __future__ import annotations

import contextlib
import math
import time
import zlib
from typing import Iterator

import numpy as np
import torch

from randommask.training.model import STATS, autocast, mlm_forward


def step_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1, np.uint64)[0] >> 1)


def lr_factor(step: int, warmup: int, max_steps: int, decay: str = "linear", min_ratio: float = 0.0,
              decay_start: int | None = None, trainer_warmup: bool = False) -> float:
    """The learning-rate factor after ``step`` optimizer steps: linear warmup over ``warmup`` steps,
    then (from ``decay_start``, default right after warmup) linear or cosine decay to ``min_ratio`` at
    ``max_steps``, or constant. Warmup reaches 1/warmup at the first step; with ``trainer_warmup`` the
    first step runs at factor 0, as in Hugging Face's Trainer (fine-tuning's published protocol)."""
    if warmup and step < warmup:
        return (step if trainer_warmup else step + 1) / warmup
    start = max(warmup, decay_start or 0)
    if decay == "constant" or step < start:
        return 1.0
    progress = min(1.0, (step - start) / max(1, max_steps - start))
    shape = 1 - progress if decay == "linear" else 0.5 * (1 + math.cos(math.pi * progress))
    return min_ratio + (1 - min_ratio) * shape


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on biases and LayerNorm weights (as Hugging Face's Trainer); the
    one rule for pretraining and fine-tuning."""
    no_decay = {f"{mod_name}.{name}" if mod_name else name
                for mod_name, mod in model.named_modules() if isinstance(mod, torch.nn.LayerNorm)
                for name, _ in mod.named_parameters(recurse=False)}
    decay, rest = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (rest if name in no_decay or name.endswith("bias") else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


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
        gen = torch.Generator(device=device).manual_seed(step_seed(seed, step, rank, micro))
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
    opt = torch.optim.AdamW(param_groups(mlm, o.weight_decay), lr=o.lr, betas=o.betas, eps=o.eps, fused=cuda)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: lr_factor(s, o.warmup_steps, o.max_steps, o.decay, o.min_lr_ratio, o.decay_start))
    return opt, sched
