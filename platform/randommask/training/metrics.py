"""The metrics line: its keys named once, built once per logged step from every rank's sums, and
handed to its sinks (the run's history in metrics.jsonl, Prometheus gauges, the progress line; the
worker reports it to Ray). docs/pretraining.md describes each key.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from randommask.training.collectives import all_reduce_sum
from randommask.training.model import STATS

# Keys of every line, in this order. Optional ones follow: mfu (CUDA with a known card),
# checkpoint_s (after the first checkpoint), then the EVAL_METRICS at evaluation steps.
LINE_KEYS = ("step", "epoch", "loss", "acc", "mask_loss", "mask_acc", "lr", "tokens_per_s", "tokens", "span_min",
             "span_max", "masked_fraction", "data_wait", "batch_crc", "time")
# Only in what goes to Ray (Tune, the controller's per-rank gauges) at evaluations and checkpoints.
REPORT_KEYS = ("rank_tokens_per_s", "rank_data_wait", "gpu_memory_bytes", "param_checksum")

# The fixed evaluation sets (training.validation) and the figures of each, spelled out so that a
# search for a metric name finds where it is defined. (set, figure) -> metric name.
EVAL_SETS = ("span_k", "span_2k")
EVAL_FIGURES = ("loss", "acc", "mask_loss", "mask_acc", "base_loss")
EVAL_METRICS = {
    ("span_k", "loss"): "eval_span_k_loss",
    ("span_k", "acc"): "eval_span_k_acc",
    ("span_k", "mask_loss"): "eval_span_k_mask_loss",
    ("span_k", "mask_acc"): "eval_span_k_mask_acc",
    ("span_k", "base_loss"): "eval_span_k_base_loss",  # nats per hidden base (training.baseloss)
    ("span_2k", "loss"): "eval_span_2k_loss",
    ("span_2k", "acc"): "eval_span_2k_acc",
    ("span_2k", "mask_loss"): "eval_span_2k_mask_loss",
    ("span_2k", "mask_acc"): "eval_span_2k_mask_acc",
    ("span_2k", "base_loss"): "eval_span_2k_base_loss",
}
# What a summary, a sweep's trial table and the demo show of the last evaluation.
SUMMARY_EVAL_KEYS = ("eval_span_k_loss", "eval_span_2k_loss", "eval_span_k_mask_loss", "eval_span_2k_mask_loss",
                     "eval_span_k_mask_acc", "eval_span_2k_mask_acc", "eval_span_k_base_loss",
                     "eval_span_2k_base_loss")

# Summed on each rank over the steps since the last line; "due" counts ranks whose wall-clock
# checkpoint interval has passed, so every rank takes the same decision from the same all-reduce.
_WINDOW = ("loss", *STATS, "tokens", "wait", "steps", "due")


def mask_figures(loss_sum: float, correct: float, n: float) -> dict[str, float | None]:
    """``mask_loss`` and ``mask_acc``: over labelled positions whose input is [MASK] (None if there are none)."""
    if n <= 0:
        return {"mask_loss": None, "mask_acc": None}
    return {"mask_loss": round(loss_sum / n, 5), "mask_acc": round(correct / n, 5)}


def is_eval_line(line: dict) -> bool:
    return EVAL_METRICS[("span_k", "loss")] in line


class MetricsProcessor:
    """Accumulates each step's figures on this rank; at a logged step, ``collect`` all-reduces them once
    and builds the line, ``publish`` hands it to the sinks (rank 0) and returns what goes to Ray."""

    def __init__(self, run: str, rank: int, world: int, device: torch.device, state, *, observability=None, floors: dict | None = None, max_steps: int = 0,
                 flops_per_token=None, peak_flops: float | None = None) -> None:
        self.run, self.rank, self.world, self.device = run, rank, world, device
        self.state = state  # the worker's TrainState: tokens counted and lines kept there
        self.floors, self.max_steps = floors, max_steps
        self.flops_per_token, self.peak_flops = flops_per_token, peak_flops  # MFU, when the card is known
        self.checkpoint_s: float | None = None  # how long the last checkpoint took: the next line says it
        self.gauges = None
        self.progress = False
        if rank == 0 and observability is not None:
            from randommask.training.observability import TrainMetrics

            ob = observability
            self.gauges = TrainMetrics(run, ob.ray_metrics, ob.prometheus_port, ob.prometheus_host)
            self.gauges.set_floors(floors)
            self.progress = ob.progress
        self.window = torch.zeros(len(_WINDOW), dtype=torch.float64)
        self.start(0)
        self.last: dict[str, Any] = {}
        self.rank_figures: dict[str, Any] = {}

    def start(self, step: int) -> None:
        """The loop starts (or resumes) at ``step``: rates and the ETA count from here."""
        self.window.zero_()
        self.t_window = self.t_start = time.perf_counter()
        self.step_start = step

    def add(self, step_out: dict[str, float]) -> None:
        """One optimizer step's figures (``train_step``'s output)."""
        self.window += torch.tensor([step_out.get(key, 1.0) if key != "due" else 0.0 for key in _WINDOW],
                                    dtype=torch.float64)
        self.last = step_out

    def collect(self, step: int, epoch: int, span_bounds: tuple[int, int], checkpoint_overdue: bool) -> tuple[dict, bool]:
        """The line for ``step`` over all ranks, and whether any rank's checkpoint clock is overdue."""
        self.window[_WINDOW.index("due")] = float(checkpoint_overdue)
        tot = dict(zip(_WINDOW, all_reduce_sum(self.window.clone(), self.world, self.device).tolist()))
        mine = dict(zip(_WINDOW, self.window.tolist()))  # this rank alone: stragglers show here
        elapsed = time.perf_counter() - self.t_window
        self.state.tokens += int(tot["tokens"])
        line = {
            "step": step, "epoch": epoch, "loss": round(tot["loss"] / tot["steps"], 5),
            "acc": round(tot["correct"] / max(tot["selected"], 1), 5),
            **mask_figures(tot["mask_loss_sum"], tot["mask_correct"], tot["mask_selected"]),
            "lr": float(f"{self.last['lr']:.6g}"),
            "tokens_per_s": round(tot["tokens"] / elapsed, 1), "tokens": self.state.tokens,
            "span_min": span_bounds[0], "span_max": span_bounds[1],
            "masked_fraction": round(tot["selected"] / max(tot["tokens"], 1), 5),
            "data_wait": round(tot["wait"] / self.world / elapsed, 4), "batch_crc": self.last["crc"],
            "time": round(time.time(), 1),
        }
        if self.peak_flops is not None and self.flops_per_token is not None:
            flops = self.flops_per_token(line["masked_fraction"]) * tot["tokens"] / elapsed
            line["mfu"] = round(flops / (self.world * self.peak_flops), 4)
        if self.checkpoint_s is not None:
            line["checkpoint_s"] = self.checkpoint_s
        self.rank_figures = {"rank_tokens_per_s": round(mine["tokens"] / elapsed, 1),
                             "rank_data_wait": round(mine["wait"] / elapsed, 4)}
        if self.device.type == "cuda":
            self.rank_figures["gpu_memory_bytes"] = torch.cuda.max_memory_allocated(self.device)
        self.window.zero_()
        self.t_window = time.perf_counter()
        return line, tot["due"] > 0

    def publish(self, line: dict, full: bool, param_checksum=None) -> dict:
        """Hand the finished line (evaluation included) to the sinks; returns the report for Ray: at
        evaluations and checkpoints (``full``) it also carries this rank's figures and its parameter
        checksum (identical on every rank while DDP keeps them in step)."""
        if self.rank == 0:
            self.state.history.append(line)
            if self.gauges is not None:
                self.gauges.update(line)
            if self.progress:
                self._print(line)
        if not full:
            return line
        return {**line, **self.rank_figures, "param_checksum": param_checksum() if param_checksum else None}

    def _print(self, line: dict) -> None:
        step = line["step"]
        sec_per_step = (time.perf_counter() - self.t_start) / max(1, step - self.step_start)
        eta = (self.max_steps - step) * sec_per_step
        k, k2 = EVAL_METRICS[("span_k", "mask_loss")], EVAL_METRICS[("span_2k", "mask_loss")]
        ev = ""
        if line.get(k) is not None:
            ev = f" | eval [MASK] span-k {line[k]:.3f} span-2k {line[k2]:.3f}"
            if self.floors and self.floors.get("context_free") is not None:
                ev += f" (floor {self.floors['context_free']:.2f})"
        mask = f"{line['mask_loss']:.3f}" if line.get("mask_loss") is not None else "-"
        print(f"[{self.run}] step {step}/{self.max_steps} [MASK] loss {mask} "
              f"(all {line['loss']:.3f}){ev} {line['tokens_per_s']:,.0f} tok/s span {line['span_min']}-{line['span_max']} "
              f"lr {line['lr']:.2e} wait {line['data_wait']:.0%} ETA {time.strftime('%H:%M:%S', time.gmtime(eta))}",
              flush=True)

    def close(self) -> None:
        if self.gauges is not None:
            self.gauges.close()
