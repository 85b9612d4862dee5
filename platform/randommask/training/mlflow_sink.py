"""A pretraining's MLflow run, written by rank 0 (``common.tracking`` does the talking): at a new
run's start the validated config flattened (``optim.lr``, ``masking.strategy``, ...), the prepared
data's manifest digest, the package version and the floors as parameters, the config and floors as
artifacts; every metrics line's numeric values at its step; at the end the loss plot and the model
card. A resumed run continues the same MLflow run and sends only steps it does not have."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from randommask import __version__
from randommask.common import storage
from randommask.common.tracking import Tracker, numeric, tracking_uri
from randommask.training.config import PretrainConfig, dump_config, flatten


def run_params(cfg: PretrainConfig, floors: dict | None) -> dict[str, Any]:
    """What an MLflow run's parameters hold: the config (no storage options), the data's manifest
    digest, the version, the floors."""
    from randommask.data.prepare import MANIFEST

    params = {k: v for k, v in flatten(cfg.model_dump(mode="json")).items() if "storage_options" not in k}
    try:
        raw = storage.read_bytes(storage.join(cfg.data.prepared, MANIFEST), cfg.data.storage_options or None)
        params["data.manifest_sha256"] = hashlib.sha256(raw).hexdigest()
    except Exception:  # the run itself read it; a card or tracker must not fail it
        params["data.manifest_sha256"] = "unreadable"
    params["randommask.version"] = __version__
    for key, value in flatten(floors or {}).items():
        params[f"floors.{key}"] = value
    return params


class MlflowSink:
    def __init__(self, cfg: PretrainConfig, floors: dict | None) -> None:
        name = cfg.run.name
        self.tracker = Tracker(tracking_uri(cfg.tracking.mlflow_uri), cfg.tracking.experiment, name,
                               key=cfg.run_dir().uri, parent_run_id=cfg.tracking.parent_run_id,
                               tags={"randommask.masking": cfg.masking.strategy, "randommask.version": __version__},
                               warn=lambda msg: print(f"[{name}] {msg}", flush=True))
        self.tracker.log_params(run_params(cfg, floors))
        self.tracker.log_text(dump_config(cfg), "config.yaml")
        self.tracker.log_text(json.dumps(floors or {}, indent=1), "floors.json")

    @staticmethod
    def wanted(cfg: PretrainConfig) -> bool:
        return tracking_uri(cfg.tracking.mlflow_uri) is not None

    def line(self, line: dict[str, Any]) -> None:
        self.tracker.log_metrics(numeric(line), int(line["step"]))

    def final(self, card: str, plot_png: bytes) -> None:
        self.tracker.log_text(card, "model/README.md")
        self.tracker.log_bytes(plot_png, "loss.png")

    def close(self, finished: bool) -> dict[str, Any]:
        """End (or, stopped to be resumed by ``stop_after``, pause) the MLflow run; what became of it,
        for events.jsonl and the driver's summary (a worker's last lines can be lost in Ray's log
        forwarding, the run directory is not)."""
        if finished:
            self.tracker.close("FINISHED")
        else:
            self.tracker.retry_at = 0.0
            self.tracker.set_tags({"randommask.paused": "true"})
        return {"event": "tracking", "uri": self.tracker.uri, "run_id": self.tracker.run_id,
                "missing": len(self.tracker.pending)}
