"""The training worker: one Ray Train rank's loop (``train_loop_per_worker``), its optimizer step,
evaluation, checkpoints and resume. The driver that launches it is ``randommask.train``.

Everything random flows from ``run.seed``: initial weights (the same on every rank), masks (from
(seed, step, rank, micro-batch), so nothing to checkpoint), dropout (per rank, RNG state saved in
each checkpoint) and data order (from (seed, epoch), see ``randommask.data``).
"""

from __future__ import annotations

import logging
import math
import os
import random
import tempfile
import time
from typing import Any, Iterator

import torch

from randommask import storage
from randommask.config import PretrainConfig, dump_config
from randommask.errors import UserError
from randommask.model import STATS, SparseMLM, autocast, build_mlm, mlm_forward
from randommask.step import build_optimizer, step_seed, train_step
from randommask.tokenizer import KmerTokenizer
from randommask.train import STATE_FILE, eval_sets, read_jsonl, run_uri, upload_dir, write_jsonl


def mask_figures(loss_sum: float, correct: float, n: float) -> dict[str, float | None]:
    """``mask_loss`` and ``mask_acc``: over labelled positions whose input is [MASK] (None if there are none)."""
    if n <= 0:
        return {"mask_loss": None, "mask_acc": None}
    return {"mask_loss": round(loss_sum / n, 5), "mask_acc": round(correct / n, 5)}


def _quiet_worker_logs() -> None:
    import ray.train.v2._internal.execution.context as train_context
    import transformers

    transformers.logging.disable_progress_bar()  # no "Writing model shards" bar at every checkpoint
    # Ray Train logs every report under this file's path, not under the ray.train logger.
    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)
    logging.getLogger("ray.data").setLevel(logging.WARNING)


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
        torch.manual_seed(step_seed(cfg.run.seed, rank, 1))  # dropout differs per rank
        self.resumed_from = self._restore()
        self.eval_sets = self._eval_sets()
        self.checkpoint_s: float | None = None  # how long the last checkpoint took (rank 0)
        self.peak_flops = None  # for MFU: the card's dense bf16 peak, when the card is known
        if self.cuda:
            from randommask.hardware import peak_bf16_flops

            found = peak_bf16_flops(torch.cuda.get_device_name(device))
            self.peak_flops = found[1] if found else None
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
            cuda_rng = (state.get("cuda_rng") or [None] * self.world)[self.rank]
            if self.cuda and cuda_rng is not None:
                torch.cuda.set_rng_state(cuda_rng, self.device)  # dropout on the GPU continues its stream
        else:  # a different number of workers: restart the current epoch
            self.position = {"epoch": max(p["epoch"] for p in state["positions"]), "sample": 0}
        return self.step

    def save_checkpoint(self, metrics: dict) -> None:
        import ray.train

        positions = self._gather(dict(self.position))
        rngs = self._gather(torch.get_rng_state())
        cuda_rngs = self._gather(torch.cuda.get_rng_state(self.device) if self.cuda else None)
        name = f"step_{self.step:08d}"
        if self.rank != 0:
            ray.train.report(metrics, checkpoint=None, checkpoint_dir_name=name)
            return
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as d:
            self.mlm.save_pretrained(os.path.join(d, "model"))
            self.tok.save_pretrained(os.path.join(d, "model"))
            torch.save({"optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(), "step": self.step,
                        "tokens": self.tokens, "positions": positions, "rng": rngs, "cuda_rng": cuda_rngs,
                        "history": self.history,
                        "config": self.cfg.model_dump(mode="json")}, os.path.join(d, STATE_FILE))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d), checkpoint_dir_name=name)
        write_jsonl(storage.join(self.base, "metrics.jsonl"), self.history)
        self.checkpoint_s = round(time.perf_counter() - t0, 2)  # saved, uploaded and registered: the next report says it

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

    def mfu(self, tokens_per_s: float, masked_fraction: float) -> float | None:
        """Model FLOPs utilisation of the whole run (all ranks), when the card's peak is known."""
        if self.peak_flops is None:
            return None
        from randommask.hardware import train_flops_per_token

        seq = self.tok.num_tokens(self.cfg.data.window_bp)
        flops = train_flops_per_token(self.mlm.config, seq, masked_fraction) * tokens_per_s
        return round(flops / (self.world * self.peak_flops), 4)

    @torch.no_grad()
    def param_checksum(self) -> float:
        """The sum of every parameter, in float64: a cheap fingerprint of this rank's weights."""
        return float(sum(p.double().sum() for p in self.mlm.parameters()))

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
        # Summed over the steps since the last line; "due" counts ranks whose checkpoint interval has
        # passed, so every rank takes the same decision from the same all-reduce.
        keys = ("loss", *STATS, "tokens", "wait", "steps", "due")
        interval = 60 * cfg.run.checkpoint_minutes if cfg.run.checkpoint_minutes else math.inf
        t_ckpt = time.monotonic()
        window = torch.zeros(len(keys), dtype=torch.float64)
        t_window = time.perf_counter()
        t_start, step_start = time.perf_counter(), self.step
        crc = 0
        while self.step < stop:
            s = self.train_step(data)
            s["due"] = 0.0
            window += torch.tensor([s.get(key, 1.0) for key in keys], dtype=torch.float64)
            crc = s["crc"]
            last = self.step == stop
            log_now = self.step % cfg.run.log_every == 0 or last
            eval_now = bool(self.eval_sets) and (self.step % cfg.run.eval_every == 0 or last)
            ckpt_now = self.step % cfg.run.checkpoint_every == 0 or last
            if not (log_now or eval_now or ckpt_now):
                continue
            window[keys.index("due")] = float(time.monotonic() - t_ckpt >= interval)
            tot = dict(zip(keys, self._all_reduce(window.clone()).tolist()))
            ckpt_now = ckpt_now or tot["due"] > 0
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
            mfu = self.mfu(tot["tokens"] / elapsed, line["masked_fraction"])
            if mfu is not None:
                line["mfu"] = mfu
            if self.checkpoint_s is not None:
                line["checkpoint_s"] = self.checkpoint_s
            if eval_now:
                line.update(self.evaluate())
            mine = dict(zip(keys, window.tolist()))  # this rank alone: stragglers show here
            rank_figures = {"rank_tokens_per_s": round(mine["tokens"] / elapsed, 1),
                            "rank_data_wait": round(mine["wait"] / elapsed, 4)}
            if self.cuda:
                rank_figures["gpu_memory_bytes"] = torch.cuda.max_memory_allocated(self.device)
            window.zero_()
            t_window = time.perf_counter()
            if self.rank == 0:
                self.history.append(line)
                self.metrics.update(line)
                if cfg.observability.progress:
                    self._progress(line, (time.perf_counter() - t_start) / max(1, self.step - step_start))
            # What goes to Ray (Tune, the controller, callbacks) also carries this rank's parameter
            # checksum: identical on every rank while DDP keeps them in step.
            report = {**line, **rank_figures, "param_checksum": self.param_checksum()} if (ckpt_now or eval_now) else line
            if ckpt_now:
                self.save_checkpoint(report)
                t_ckpt = time.monotonic()
            elif eval_now:
                ray.train.report(report)  # intermediate metrics for Tune / the controller
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


def restart_delay(restarts: int, base: float, cap: float = 300.0) -> float:
    """Seconds to wait before restart number ``restarts`` (0: the first start, no wait): doubling,
    jittered, capped, so a fault that outlasts one restart does not spend every allowed failure
    within seconds, and many workers do not all come back at the same instant."""
    if restarts <= 0 or base <= 0:
        return 0.0
    return min(cap, base * 2 ** (restarts - 1)) * random.uniform(0.5, 1.0)


def restart_backoff(cfg: PretrainConfig, launched: float | None) -> float:
    """Sleep before a restart of the worker group inside one ``pretrain`` call (the starts logged in
    events.jsonl since the driver ``launched`` it); returns the seconds slept."""
    if launched is None:
        return 0.0
    try:
        events = read_jsonl(storage.join(run_uri(cfg), "events.jsonl"))
    except UserError:
        events = []  # storage still down: the first read below retries it anyway
    restarts = sum(1 for e in events if e.get("time", 0) >= launched)
    delay = restart_delay(restarts, cfg.run.restart_backoff_s)
    if delay:
        print(f"[{cfg.run.name}] restart {restarts} of this job: waiting {delay:.0f} s before resuming", flush=True)
        time.sleep(delay)
    return delay


def train_loop_per_worker(loop_config: dict) -> None:
    import ray.train
    import ray.train.torch

    _quiet_worker_logs()
    cfg = PretrainConfig.model_validate(loop_config["config"])
    restart_backoff(cfg, loop_config.get("launched"))
    ctx = ray.train.get_context()
    Worker(cfg, ctx.get_world_rank(), ctx.get_world_size(), ray.train.torch.get_device(),
           loop_config.get("floors")).run()
