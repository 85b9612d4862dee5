"""Choosing the learning rate on dev: ``finetune --lr 1e-4,3e-4,1e-3`` runs one trial per (dataset,
rate, seed) and, per dataset, keeps the rate whose dev score, averaged over seeds, is best by the
protocol's own criterion (``published``: the lowest dev loss; ``fast``: the highest dev metric).
Test scores are reported for that rate only; every rate's dev scores are kept beside it."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from randommask.errors import UserError
from randommask.finetune.protocol import criterion

EXAMPLE = "give one rate (an override) or a comma-separated list to choose from on dev, e.g. 1e-4,3e-4,1e-3"


def parse_rates(text: str) -> tuple[float, ...]:
    """``--lr``: one rate or a comma-separated list; each one a positive number, none twice."""
    rates = []
    for item in text.split(","):
        try:
            rates.append(float(item.strip()))
        except ValueError:
            raise UserError(f"--lr {text!r}: {item.strip()!r} is not a number; {EXAMPLE}") from None
    return trial_rates(rates)


def trial_rates(lr: float | Sequence[float] | None) -> tuple[float | None, ...]:
    """The rates the trials run with: ``(None,)`` the protocol's own, ``(x,)`` an override, several a search."""
    if lr is None:
        return (None,)
    rates = (float(lr),) if isinstance(lr, (int, float)) else tuple(float(x) for x in lr)
    if not rates:
        raise UserError(f"--lr: no rate given; {EXAMPLE}")
    for x in rates:
        if not math.isfinite(x) or x <= 0:
            raise UserError(f"--lr must be > 0, got {x:g}")
    twice = sorted({x for x in rates if rates.count(x) > 1})
    if twice:
        raise UserError(f"--lr: {', '.join(f'{x:g}' for x in twice)} given twice; list each rate once")
    return rates


def search_seeds(n: int | None, seeds: int, searching: bool) -> int:
    """``--search-seeds``: how many seeds every rate runs on (the rest run at the chosen rate only);
    None: every seed."""
    if n is None:
        return seeds
    if not searching:
        raise UserError("--search-seeds needs an --lr search (several rates, e.g. --lr 1e-4,3e-4,1e-3)")
    if not 1 <= n <= seeds:
        raise UserError(f"--search-seeds must be between 1 and --seeds ({seeds}), got {n}")
    return n


def rate_of(trial: dict[str, Any]) -> float:
    """The learning rate a trial ran with (a failed trial's record holds the rate it was given)."""
    return float(trial["hyperparameters"]["lr"] if trial["status"] == "ok" else trial["lr"])


@dataclass(frozen=True)
class RateDev:
    """One rate's dev scores: each seed's at its selected step, and their mean (None unless every seed finished)."""

    lr: float
    dev_per_seed: dict[int, float]
    dev_mean: float | None
    seeds_failed: int


@dataclass(frozen=True)
class LrChoice:
    """A dataset's search: the criterion, every rate's dev scores (in the order given) and the rate selected."""

    criterion: str  # dev_loss | dev_mcc | dev_f1_macro
    lower_is_better: bool
    rates: tuple[RateDev, ...]
    selected: float | None  # None when no rate finished on every seed

    def to_json(self) -> dict[str, Any]:
        return {"criterion": self.criterion, "lower_is_better": self.lower_is_better, "selected": self.selected,
                "rates": [{"lr": r.lr, "dev_per_seed": r.dev_per_seed, "dev_mean": r.dev_mean,
                           "seeds_failed": r.seeds_failed} for r in self.rates]}


def choose(trials: list[dict[str, Any]], rates: Sequence[float], selection: str, metric: str,
           on_seeds: int | None = None) -> LrChoice:
    """The rate with the best mean dev score over seeds among one dataset's ``trials`` (those of the first
    ``on_seeds`` seeds only, when given: the search seeds). Only a rate whose every seed finished competes
    (a mean over fewer seeds does not compare); a diverged rate's NaN loses; ties go to the smallest rate."""
    key, lower = criterion(selection, metric)
    scored = []
    if on_seeds is not None:
        trials = [t for t in trials if int(t["seed"]) < on_seeds]
    for lr in rates:
        mine = [t for t in trials if rate_of(t) == lr]
        ok = sorted((t for t in mine if t["status"] == "ok"), key=lambda t: t["seed"])
        per_seed = {int(t["seed"]): float(t["dev_best"][key]) for t in ok}
        failed = len(mine) - len(ok)
        mean = sum(per_seed.values()) / len(per_seed) if per_seed and not failed else None
        scored.append(RateDev(float(lr), per_seed, mean, failed))

    def rank(r: RateDev) -> tuple[float, float]:
        worst = math.isnan(r.dev_mean)
        value = math.inf if worst else r.dev_mean if lower else -r.dev_mean
        return value, r.lr

    candidates = [r for r in scored if r.dev_mean is not None]
    selected = min(candidates, key=rank).lr if candidates else None
    return LrChoice(f"dev_{key}", lower, tuple(scored), selected)
