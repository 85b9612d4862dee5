"""One line per finished fine-tuning trial, written by the driver as Ray Tune reports it: the dataset,
seed and learning rate, the dev score its protocol selects by, the test score, the time it took and
how many trials are left. Imported only where Ray Tune runs."""

from __future__ import annotations

from typing import Any, Callable

from ray import tune

from randommask.evaluation import gue
from randommask.finetune.protocol import SELECTION, criterion


class TrialLines(tune.Callback):
    def __init__(self, total: int, log: Callable[[str], None]) -> None:
        self.left, self.log = total, log

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its run configuration into the experiment state; the log function need not go there.
        return {**self.__dict__, "log": print}

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.left -= 1
        self.log(finished_line(trial.config["trial"], trial.last_result or {}, self.left))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.left -= 1
        p = trial.config["trial"]
        self.log(f"trial {p['dataset']} seed {p['seed']}{_rate(p.get('lr'))}: failed; {self.left} trial(s) left")


def finished_line(p: dict[str, Any], result: dict[str, Any], left: int) -> str:
    """``p`` is the trial's parameters, ``result`` its last report to Tune (``tune_trial``'s final one)."""
    metric = gue.REGISTRY[p["dataset"]].metric
    key, _ = criterion(SELECTION[p.get("protocol", "published")], metric)
    scores = [f"dev {key} {_num(result.get(f'dev_best_{key}'))}", f"test {metric} {_num(result.get(f'test_{metric}'))}"]
    seconds = result.get("time_total_s")
    took = f", {seconds:.0f} s" if isinstance(seconds, (int, float)) else ""
    return (f"trial {p['dataset']} seed {p['seed']}{_rate(result.get('lr', p.get('lr')))}: "
            f"{', '.join(scores)}{took}; {left} trial(s) left")


def _rate(lr: float | None) -> str:
    return "" if lr is None else f" lr {lr:g}"


def _num(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, (int, float)) else "?"
