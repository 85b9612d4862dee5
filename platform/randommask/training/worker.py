"""The training worker: one Ray Train rank (``train_loop_per_worker``). ``Worker.run`` is the loop;
it delegates the optimizer step (``training.step``), checkpoints (``training.checkpointer``), the
metrics line (``training.metrics``) and evaluation (``training.validation``). The driver that
launches it is ``training.driver``.

Everything random flows from ``run.seed``: initial weights (the same on every rank), masks (from
(seed, step, rank, micro-batch), so nothing to checkpoint), dropout (per rank, RNG state saved in
each checkpoint) and data order (from (seed, epoch), see ``data.stream``).
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
import time
from typing import Iterator

import torch

from randommask.common.modelcard import CARD_FILE
from randommask.data import window
from randommask.data.stream import pretraining_dataset
from randommask.data.tokenizer import KmerTokenizer
from randommask.errors import UserError
from randommask.training.checkpointer import Checkpointer, TrainState
from randommask.training.config import PretrainConfig, dump_config
from randommask.training.metrics import MetricsProcessor
from randommask.training.mlflow_sink import MlflowSink
from randommask.training.model import SparseMLM, build_mlm
from randommask.training.preemption import PreemptionGuard
from randommask.training.step import build_optimizer, step_seed, train_step
from randommask.training.validation import Validator


def _quiet_worker_logs() -> None:
    import ray.train.v2._internal.execution.context as train_context
    import transformers

    transformers.logging.disable_progress_bar()  # no "Writing model shards" bar at every checkpoint
    # Ray Train logs every report under this file's path, not under the ray.train logger.
    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)
    logging.getLogger("ray.data").setLevel(logging.WARNING)


class Worker:
    """One training worker: its model, optimizer, state and components; ``run`` is the loop."""

    def __init__(self, cfg: PretrainConfig, rank: int, world: int, device: torch.device,
                 floors: dict | None = None) -> None:
        import ray.train.torch

        self.cfg, self.rank, self.world, self.device = cfg, rank, world, device
        self.run_dir = cfg.run_dir()
        self.init_local: str | None = None  # the local copy of model.init_from, when set
        self.tok = KmerTokenizer(cfg.data.k, cfg.data.stride)
        torch.manual_seed(cfg.run.seed)  # the same initial weights on every rank
        self.mlm = self._build_model()
        self.model = ray.train.torch.prepare_model(SparseMLM(self.mlm))
        self.opt, self.sched = build_optimizer(self.mlm, cfg.optim)
        self.masker = cfg.masker()
        self.state = TrainState()
        torch.manual_seed(step_seed(cfg.run.seed, rank, 1))  # dropout differs per rank
        self.checkpointer = Checkpointer(cfg, rank, world, device, self.mlm, self.tok, self.opt, self.sched,
                                         self.run_dir)
        self.resumed_from = self.checkpointer.restore(self.state)
        self.validator = Validator(cfg, rank, world, device)
        self.metrics = MetricsProcessor(cfg.run.name, rank, world, device, self.state, observability=cfg.observability,
                                        floors=floors, max_steps=cfg.optim.max_steps, **self._mfu_inputs())
        self.floors = floors
        self.preemption = PreemptionGuard(self.run_dir, cfg.run.name, rank)
        self.mlflow = None  # rank 0's MLflow run, when tracking is configured
        if rank == 0 and MlflowSink.wanted(cfg):
            self.mlflow = MlflowSink(cfg, floors)

    def _build_model(self):
        cfg = self.cfg
        if cfg.model.init_from:
            from transformers import BertForMaskedLM

            from randommask.common.checkpoints import node_checkpoint

            self.init_local = node_checkpoint(cfg.model.init_from, what="model.init_from")  # fetched once per node
            mlm = BertForMaskedLM.from_pretrained(self.init_local, attn_implementation="sdpa")
        else:
            mlm = build_mlm(cfg.model.preset, cfg.data.k, **cfg.model.overrides)
        # in config.json, so every checkpoint, final/ and a copy of either says what it was trained on
        window.record(mlm.config, self.tok, cfg.data.window_bp)
        if cfg.scaling.compile and self.device.type == "cuda":
            mlm.bert.compile(dynamic=False)
        return mlm

    def _mfu_inputs(self) -> dict:
        """The card's dense bf16 peak and the model's FLOPs per token, when the card is known (CUDA)."""
        if self.device.type != "cuda":
            return {}
        from randommask.common.hardware import peak_bf16_flops, train_flops_per_token

        found = peak_bf16_flops(torch.cuda.get_device_name(self.device))
        seq = self.tok.num_tokens(self.cfg.data.window_bp)
        return {"peak_flops": found[1] if found else None,
                "flops_per_token": lambda masked: train_flops_per_token(self.mlm.config, seq, masked)}

    # -- the loop ----------------------------------------------------------------------------------
    def run(self) -> None:
        import ray.train

        cfg, state = self.cfg, self.state
        if self.rank == 0:
            self._record_start()
        data = self.batches()
        stop = min(cfg.optim.max_steps, cfg.run.stop_after or cfg.optim.max_steps)
        self.metrics.start(state.step)
        while state.step < stop:
            self.metrics.add(self.train_step(data))
            last = state.step == stop
            log_now = state.step % cfg.run.log_every == 0 or last
            eval_now = self.validator.due(state.step, last)
            ckpt_now = self.checkpointer.due(state.step, last)
            noticed = self.preemption.check(state.step) and not last  # a drain notice: checkpoint now
            if not (log_now or eval_now or ckpt_now or noticed):
                continue
            line, overdue = self.metrics.collect(state.step, state.position["epoch"],
                                                 self.masker.span_bounds(state.step - 1), self.checkpointer.overdue())
            ckpt_now = ckpt_now or overdue or noticed
            if eval_now:
                line.update(self.validator.evaluate(self.mlm))
            report = self.metrics.publish(line, full=ckpt_now or eval_now, param_checksum=self.param_checksum)
            if self.mlflow is not None:
                self.mlflow.line(line)
            if ckpt_now:
                self.checkpointer.save(state, report)
                self.metrics.checkpoint_s = self.checkpointer.seconds
            elif eval_now:
                ray.train.report(report)  # intermediate metrics for Tune / the controller
                if self.rank == 0:  # a run stopped from outside (e.g. by ASHA) keeps its curve
                    self.run_dir.write_metrics(state.history)
            if noticed:
                self.preemption.wait()  # Ray Train restarts the run elsewhere from this checkpoint
        if self.rank == 0 and state.step >= cfg.optim.max_steps:
            self._write_final()
        self.metrics.close()
        if self.mlflow is not None:
            outcome = self.mlflow.close(finished=state.step >= cfg.optim.max_steps)
            self.run_dir.append_event({**outcome, "step": state.step, "time": round(time.time(), 1)})

    def train_step(self, data: Iterator[torch.Tensor]) -> dict[str, float]:
        o = self.cfg.optim
        out = train_step(self.model, self.opt, self.sched, self.masker, data, self.state.step,
                         seed=self.cfg.run.seed, rank=self.rank, world=self.world, device=self.device,
                         accum=o.grad_accum, grad_clip=o.grad_clip)
        self.state.step += 1
        return out

    def batches(self) -> Iterator[torch.Tensor]:
        """Training batches from the saved data position on, epoch after epoch."""
        d, batch, position = self.cfg.data, self.cfg.optim.batch_size, self.state.position
        while True:
            epoch, start = position["epoch"], position["sample"]
            ds = pretraining_dataset(d, "train", seed=self.cfg.run.seed, epoch=epoch, start_sample=start,
                                     num_shards=self.world, shard_index=self.rank)
            got = 0
            for b in ds.iter_torch_batches(batch_size=batch, drop_last=True, prefetch_batches=4):
                position["sample"] += batch
                got += 1
                yield b["input_ids"]
            if got == 0 and start == 0:
                raise UserError(f"{d.prepared}: an epoch holds fewer than optim.batch_size={batch} windows per worker")
            position.update(epoch=epoch + 1, sample=0)

    @torch.no_grad()
    def param_checksum(self) -> float:
        """The sum of every parameter, in float64: a cheap fingerprint of this rank's weights."""
        return float(sum(p.double().sum() for p in self.mlm.parameters()))

    def _record_start(self) -> None:
        s = self.state
        kind = "resume" if self.resumed_from is not None else "start"
        import ray

        self.run_dir.append_event({"event": kind, "step": s.step, "epoch": s.position["epoch"],
                                   "sample": s.position["sample"], "workers": self.world,
                                   "node": ray.get_runtime_context().get_node_id(),
                                   "torch_threads": torch.get_num_threads(), "time": round(time.time(), 1)})
        self.run_dir.write_config(dump_config(self.cfg))
        if kind == "resume":
            print(f"[{self.cfg.run.name}] resumed from step {s.step} (epoch {s.position['epoch']}, "
                  f"sample {s.position['sample']})", flush=True)

    def _write_final(self) -> None:
        from randommask.training.plots import loss_curves_png

        card = self._card()
        with tempfile.TemporaryDirectory() as d:
            self.mlm.save_pretrained(d)
            self.tok.save_pretrained(d)
            with open(os.path.join(d, CARD_FILE), "w") as f:
                f.write(card)
            self.run_dir.upload_final(d)
        self.run_dir.write_metrics(self.state.history)
        title = f"{self.cfg.run.name} ({self.cfg.masking.strategy}, {self.cfg.model.preset})"
        plot = loss_curves_png({self.cfg.run.name: self.state.history}, title=title, floors=self.floors)
        self.run_dir.write_loss_plot(plot)
        if self.mlflow is not None:
            self.mlflow.final(card, plot)

    def _card(self) -> str:
        from randommask.common.modelcard import lineage
        from randommask.data.prepare import read_manifest
        from randommask.training.card import pretraining_card

        try:
            manifest = read_manifest(self.cfg.data.prepared, self.cfg.data.storage_options or None)
        except UserError:
            manifest = None  # the card says so; the model is written all the same
        n_params = sum(p.numel() for p in self.mlm.parameters())
        parent = lineage(self.cfg.model.init_from, self.init_local) if self.cfg.model.init_from else None
        return pretraining_card(self.cfg, self.state.history, self.floors, manifest, self.mlm.config.to_dict(),
                                n_params, parent)


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
        events = cfg.run_dir().read_events()
    except UserError:
        events = []  # storage still down: the first read below retries it anyway
    starts = [e for e in events if e.get("time", 0) >= launched and e.get("event") in ("start", "resume")]
    if events and events[-1].get("event") == "preemption":
        return 0.0  # the drained node is gone and the checkpoint is fresh: nothing to wait out
    restarts = len(starts)
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
    if cfg.scaling.torch_threads:
        torch.set_num_threads(cfg.scaling.torch_threads)
    restart_backoff(cfg, loop_config.get("launched"))
    ctx = ray.train.get_context()
    Worker(cfg, ctx.get_world_rank(), ctx.get_world_size(), ray.train.torch.get_device(),
           loop_config.get("floors")).run()
