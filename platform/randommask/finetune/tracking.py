"""Fine-tuning in MLflow: a parent run per ``finetune --out`` (the results table as its artifacts) and
one child run per (dataset, seed) trial with its protocol values and its dev and test metrics (the
dev curve at each evaluation step). Logged by the driver from the trial files once the trials are
done, so a rerun that finds a trial's child run already there leaves it as it is. A server that does
not answer costs one line and one timeout: nothing is logged, and the same command run again (its
trials are finished, so it only aggregates) logs everything."""

from __future__ import annotations

from typing import Any

from randommask.common import storage
from randommask.common.modelcard import CARD_FILE
from randommask.common.tracking import DEFAULT_EXPERIMENT, Tracker, numeric
from randommask.finetune.search import rate_of


def log_finetune(uri: str, out: str, checkpoint: str, trials: list[dict[str, Any]], results: dict[str, Any],
                 storage_options: dict | None = None, experiment: str = DEFAULT_EXPERIMENT, log=print) -> None:
    # Quiet while opening: a server that does not answer gets one line here, not the tracker's own.
    parent = Tracker(uri, experiment, f"finetune {out}", key=out, tags={"randommask.finetune": out},
                     warn=lambda _: None)
    if parent.run_id is None:
        log(_unlogged(uri, out))
        return
    parent.warn = log
    searched = results.get("lr_search")
    parent.log_params({"checkpoint": checkpoint, "protocol": results.get("protocol"),
                       "selection": results.get("selection"), **({"lr_search": searched} if searched else {})})
    for t in trials:
        # an --lr search has one trial per rate for each (dataset, seed): the rate is in the run's name
        name = f"{t['dataset']}-s{t['seed']}" + (f"-lr{rate_of(t)!r}" if searched else "")
        child = Tracker(uri, experiment, name, key=f"{out}#{name}", parent_run_id=parent.run_id,
                        tags={"randommask.dataset": t["dataset"], "randommask.status": t["status"]},
                        warn=lambda _: None)
        if child.run_id is None:  # the server stopped answering part-way: one line, not one per trial
            log(_unlogged(uri, out, f"after {name}'s run could not be opened"))
            return
        child.warn = log
        if not child.created:  # logged by an earlier run of this command (or the server is down: kept)
            child.close("FINISHED" if t["status"] == "ok" else "FAILED")
            continue
        hp = {f"hp.{k}": v for k, v in (t.get("hyperparameters") or {}).items()}
        child.log_params({"dataset": t["dataset"], "seed": t["seed"], "protocol": t.get("protocol"),
                          "selection": t.get("selection"), "lora": t.get("lora"), "max_train": t.get("max_train"),
                          "max_eval": t.get("max_eval"), "checkpoint": checkpoint, **hp})
        for line in t.get("history", []):
            child.log_metrics(numeric(line), int(line["step"]))
        final = {**{f"test_{k}": v for k, v in (t.get("test") or {}).items()},
                 **{f"dev_best_{k}": v for k, v in (t.get("dev_best") or {}).items()}}
        if final:
            child.log_metrics(numeric(final), int((t.get("ran") or {}).get("steps", 0)) + 1)
        if t.get("model"):  # --save-models: where the model is, and its card
            child.set_tags({"randommask.model": t["model"]})
            card = storage.join(t["model"], CARD_FILE)
            if storage.exists(card, storage_options):
                child.log_bytes(storage.read_bytes(card, storage_options), f"model/{CARD_FILE}")
        if t["status"] != "ok":
            child.set_tags({"randommask.error": str(t.get("error", ""))[:500]})
        child.close("FINISHED" if t["status"] == "ok" else "FAILED")
    for name in ("results.csv", "results.md", "results.json"):
        uri_ = storage.join(out, name)
        if storage.exists(uri_, storage_options):
            parent.log_bytes(storage.read_bytes(uri_, storage_options), name)
    means = {f"{row['dataset']}_{row['metric']}_mean": float(row["score_mean"])
             for row in results.get("datasets", []) if row.get("score_mean") is not None}
    parent.log_metrics(means, 0)
    parent.close("FINISHED")


def _unlogged(uri: str, out: str, when: str = "") -> str:
    return (f"warning: MLflow at {uri} did not answer{' ' + when if when else ''}: this fine-tuning is not (fully) "
            f"logged; its results are in {out}, and the same command run again logs them without running a trial")
