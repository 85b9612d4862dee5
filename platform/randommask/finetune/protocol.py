"""Fine-tuning protocols: which hyperparameters a trial uses, when it evaluates on dev, and how it
picks the model it scores on test.

- ``published`` (the default): DNABERT-2's scripts for k-mer models, per dataset (``gue.REGISTRY``),
  as Hugging Face ``Trainer`` runs them: the dev loss every ``eval_steps`` optimizer steps, the
  lowest one's weights restored for test (``load_best_model_at_end`` with its default metric).
- ``fast``: the same hyperparameters, the dev metric (MCC, covid's macro F1) at the end of every
  epoch, the highest one's weights kept: fewer evaluations, for quick looks.
- ``custom``: ``--epochs``, ``--lr`` or ``--batch-size`` given; the selection of the protocol it
  started from. Only ``published`` results are comparable with the published numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from randommask.errors import UserError
from randommask.evaluation import gue

PROTOCOLS = ("published", "fast")
SELECTION = {"published": "dev_loss@eval_steps", "fast": "dev_metric@epoch"}


@dataclass(frozen=True)
class Plan:
    protocol: str  # published | fast | custom
    selection: str  # dev_loss@eval_steps | dev_metric@epoch
    hyperparameters: dict[str, Any]  # the scripts' names: epochs, max_steps, warmup_steps, eval_steps, lr, ...

    def __getitem__(self, key: str) -> Any:
        return self.hyperparameters[key]


def plan(ds: gue.GueDataset, protocol: str = "published", epochs: int | None = None, lr: float | None = None,
         batch_size: int | None = None) -> Plan:
    """The protocol a trial of ``ds`` runs. Overrides make it ``custom``; ``--epochs`` drops the
    published ``max_steps`` (the user asked for epochs, and max_steps would win over them)."""
    if protocol not in PROTOCOLS:
        raise UserError(f"--protocol {protocol!r}: choose one of {', '.join(PROTOCOLS)}")
    hp = ds.published()
    overrides = {k: v for k, v in (("epochs", epochs), ("lr", lr), ("batch_size", batch_size)) if v is not None}
    if overrides:
        hp.update(overrides)
        if "epochs" in overrides:
            hp["max_steps"] = None
    hp["lr"] = float(hp["lr"])
    return Plan("custom" if overrides else protocol, SELECTION[protocol], hp)


@dataclass(frozen=True)
class Schedule:
    """What a trial on ``n_train`` rows does: optimizer steps, and the steps after which it evaluates."""

    steps_per_epoch: int
    total_steps: int
    epochs: int  # epochs started (max_steps may end one early)
    eval_at: tuple[int, ...] = field(repr=False)


def schedule(p: Plan, n_train: int, subsampled: bool = False) -> Schedule:
    spe = math.ceil(n_train / p["batch_size"])
    # Trainer: max_steps, when set, fixes the length whatever the epochs (it loops the data as needed).
    total = p["max_steps"] if p["max_steps"] else p["epochs"] * spe
    epochs = math.ceil(total / spe)
    epoch_ends = {min(k * spe, total) for k in range(1, epochs + 1)}
    if p.selection == SELECTION["published"]:
        at = set(range(p["eval_steps"], total + 1, p["eval_steps"]))
        # A subsampled run's epochs can be shorter than one evaluation interval: it still selects, at
        # the end of every epoch and of training. Full-size runs evaluate exactly as Trainer does.
        if subsampled and p["eval_steps"] > spe:
            at |= epoch_ends
    else:
        at = epoch_ends
    return Schedule(spe, total, epochs, tuple(sorted(at)))


def criterion(selection: str, metric: str) -> tuple[str, bool]:
    """The dev score a selection compares (``loss`` or the dataset's metric) and whether lower is better:
    the same rule picks a trial's step and, in an ``--lr`` search, the learning rate."""
    return ("loss", True) if selection == SELECTION["published"] else (metric, False)


def better(p: Plan, dev: dict[str, float], best: dict[str, float] | None, metric: str) -> bool:
    """Whether ``dev`` beats the best so far; ties keep the earlier one, as Trainer does."""
    if best is None:
        return True
    key, lower = criterion(p.selection, metric)
    return dev[key] < best[key] if lower else dev[key] > best[key]
