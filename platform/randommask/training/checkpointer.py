"""The checkpointer: what a checkpoint holds, its save and load, when one is due by the clock, and how
many are kept.

A checkpoint is a Ray Train checkpoint directory ``step_XXXXXXXX/`` in the run directory:
``model/`` (the Hugging Face model and tokenizer, loadable as it is) and ``trainer_state.pt``: the
optimizer and schedule, the step and token count, every rank's data position and RNG states (CPU and
CUDA), the metrics history and the config. Ray Train keeps the newest ``run.keep_checkpoints``.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from randommask.common import rundir, storage
from randommask.errors import UserError
from randommask.training.collectives import all_gather
from randommask.training.config import PretrainConfig, RunSection


@dataclass
class TrainState:
    """What the loop advances and a checkpoint restores, besides the model and optimizer."""

    step: int = 0
    tokens: int = 0
    position: dict = field(default_factory=lambda: {"epoch": 0, "sample": 0})  # this rank's data position
    history: list = field(default_factory=list)  # the metrics lines so far (rank 0 writes them)


def load_state(source: str | bytes, where: str) -> dict[str, Any]:
    """A checkpoint's ``trainer_state.pt`` (a path, or its bytes), read with ``weights_only=True``:
    tensors and plain values only. A checkpoint may come from another team's bucket, and a full
    unpickle would run whatever code its file names; such a file is refused in one line, unrun.
    ``where`` names it for the user (the option or run it came from)."""
    try:
        return torch.load(io.BytesIO(source) if isinstance(source, bytes) else source, map_location="cpu",
                          weights_only=True)
    except pickle.UnpicklingError:
        raise UserError(f"{where}: {rundir.STATE_FILE} holds objects other than tensors and plain values; refused "
                        "(loading it would run code it names). Use a checkpoint written by randommask") from None
    except (OSError, EOFError, RuntimeError, KeyError, ValueError) as e:  # what torch.load raises on a missing,
        # empty, truncated or non-torch file (KeyError: garbage read as a legacy pickle); anything else is a bug
        raise UserError(f"{where}: {rundir.STATE_FILE} is unreadable ({type(e).__name__}); name a step_* checkpoint "
                        "directory of a pretraining run") from None


def retention(run: RunSection):
    """Ray Train's CheckpointConfig for the driver: the newest ``keep_checkpoints`` are kept."""
    import ray.train

    return ray.train.CheckpointConfig(num_to_keep=run.keep_checkpoints)


class Checkpointer:
    def __init__(self, cfg: PretrainConfig, rank: int, world: int, device: torch.device, mlm, tokenizer, opt,
                 sched, run: rundir.RunDir) -> None:
        self.cfg, self.rank, self.world, self.device = cfg, rank, world, device
        self.mlm, self.tok, self.opt, self.sched, self.run = mlm, tokenizer, opt, sched, run
        self.every = cfg.run.checkpoint_every
        self.interval = 60 * cfg.run.checkpoint_minutes if cfg.run.checkpoint_minutes else math.inf
        self.t_last = time.monotonic()
        self.seconds: float | None = None  # how long the last save took (rank 0)

    def due(self, step: int, last: bool) -> bool:
        return step % self.every == 0 or last

    def overdue(self) -> bool:
        """The wall-clock interval has passed on this rank (the worker agrees on it across ranks)."""
        return time.monotonic() - self.t_last >= self.interval

    def restore(self, state: TrainState) -> int | None:
        """Load the latest checkpoint Ray Train hands this worker (else ``run.resume_from``) into the
        model, optimizer and ``state``; returns its step, or None for a fresh start."""
        import ray.train
        from transformers import BertForMaskedLM

        ckpt = ray.train.get_checkpoint()
        if ckpt is None and self.cfg.run.resume_from:  # the driver checked it and its settings
            path, fs = storage.ray_storage(self.cfg.run.resume_from)
            ckpt = ray.train.Checkpoint(path, filesystem=fs)
        if ckpt is None:
            return None
        with ckpt.as_directory() as d:
            saved = load_state(os.path.join(d, rundir.STATE_FILE), f"checkpoint {ckpt.path}")
            loaded = BertForMaskedLM.from_pretrained(os.path.join(d, rundir.CHECKPOINT_MODEL))
            self.mlm.load_state_dict(loaded.state_dict())
        self.opt.load_state_dict(saved["optimizer"])
        self.sched.load_state_dict(saved["scheduler"])
        state.step, state.tokens, state.history = saved["step"], saved["tokens"], saved["history"]
        if len(saved["positions"]) == self.world:
            state.position = dict(saved["positions"][self.rank])
            torch.set_rng_state(saved["rng"][self.rank])
            cuda_rng = (saved.get("cuda_rng") or [None] * self.world)[self.rank]
            if self.device.type == "cuda" and cuda_rng is not None:
                torch.cuda.set_rng_state(cuda_rng, self.device)  # dropout on the GPU continues its stream
        else:  # a different number of workers: restart the current epoch
            state.position = {"epoch": max(p["epoch"] for p in saved["positions"]), "sample": 0}
        return state.step

    def save(self, state: TrainState, report: dict) -> None:
        """Every rank calls this: positions and RNG states are gathered, rank 0 writes the checkpoint,
        and each rank's ``report`` goes to Ray with it."""
        import ray.train

        cuda = self.device.type == "cuda"
        positions = all_gather(dict(state.position), self.world)
        rngs = all_gather(torch.get_rng_state(), self.world)
        cuda_rngs = all_gather(torch.cuda.get_rng_state(self.device) if cuda else None, self.world)
        name = rundir.checkpoint_name(state.step)
        if self.rank != 0:
            ray.train.report(report, checkpoint=None, checkpoint_dir_name=name)
        else:
            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory() as d:
                model_dir = os.path.join(d, rundir.CHECKPOINT_MODEL)
                self.mlm.save_pretrained(model_dir)
                self.tok.save_pretrained(model_dir)
                torch.save({"optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict(),
                            "step": state.step, "tokens": state.tokens, "positions": positions, "rng": rngs,
                            "cuda_rng": cuda_rngs, "history": state.history,
                            "config": self.cfg.model_dump(mode="json")}, os.path.join(d, rundir.STATE_FILE))
                ray.train.report(report, checkpoint=ray.train.Checkpoint.from_directory(d), checkpoint_dir_name=name)
            self.run.write_metrics(state.history)
            self.seconds = round(time.perf_counter() - t0, 2)  # saved, uploaded and registered
        self.t_last = time.monotonic()
