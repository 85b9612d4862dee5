"""The run directory: its layout and file names, defined once, and the reads and writes every module
uses on it (local or ``s3://``, each call taking ``storage_options``).

``<run.storage_path>/<run.name>/``:
    step_XXXXXXXX/     Ray Train checkpoints: model/ (Hugging Face model + tokenizer) and trainer_state.pt
    final/             the trained model and tokenizer, a plain Hugging Face directory
    metrics.jsonl      one line per logged step (docs/pretraining.md lists the keys)
    events.jsonl       start / resume events (with the Ray node), preemption notices, MLflow outcomes
    floors.json        the context-free floor and overlap references the losses are read against
    config.yaml        the resolved config
    loss.png           loss curves with the span boundary
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from randommask.common import storage

METRICS = "metrics.jsonl"
EVENTS = "events.jsonl"
FLOORS = "floors.json"
CONFIG = "config.yaml"
LOSS_PLOT = "loss.png"
FINAL = "final"
CHECKPOINT_PREFIX = "step_"
CHECKPOINT_MODEL = "model"  # the Hugging Face directory inside a checkpoint
STATE_FILE = "trainer_state.pt"  # optimizer, schedule, data position, RNG states inside a checkpoint


def checkpoint_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{step:08d}"


def is_run_part(name: str) -> bool:
    """True for a directory name inside a run that holds a model (final/, model/, step_*/)."""
    return name in (FINAL, CHECKPOINT_MODEL) or name.startswith(CHECKPOINT_PREFIX)


def read_jsonl(uri: str, storage_options: dict | None = None) -> list[dict]:
    """The lines of a JSONL object; [] when it does not exist."""
    if not storage.exists(uri, storage_options):
        return []
    return [json.loads(x) for x in storage.read_bytes(uri, storage_options).decode().splitlines() if x.strip()]


def write_jsonl(uri: str, lines: list[dict], storage_options: dict | None = None) -> None:
    storage.write_bytes(uri, "".join(json.dumps(x) + "\n" for x in lines).encode(), storage_options)


def read_json(uri: str, storage_options: dict | None = None) -> Any:
    """A JSON object's value; None when it does not exist."""
    if not storage.exists(uri, storage_options):
        return None
    return json.loads(storage.read_bytes(uri, storage_options))


def training_window(checkpoint: str) -> int | None:
    """data.window_bp of the run a local checkpoint belongs to (its run's config.yaml), if any."""
    import yaml

    if not storage.is_local(checkpoint):
        return None
    p = Path(checkpoint).resolve()
    for d in (p, *list(p.parents)[:3]):
        cfg = d / CONFIG
        if cfg.is_file():
            try:
                return int(yaml.safe_load(cfg.read_text())["data"]["window_bp"])
            except (KeyError, TypeError, ValueError, yaml.YAMLError):
                return None
    return None


class RunDir:
    """One run directory: where each of its files is, and reading and writing them."""

    def __init__(self, uri: str, storage_options: dict | None = None) -> None:
        self.uri = uri
        self.storage_options = storage_options or None

    @classmethod
    def of(cls, storage_path: str, name: str, storage_options: dict | None = None) -> "RunDir":
        return cls(storage.join(storage_path, name), storage_options)

    def path(self, name: str) -> str:
        return storage.join(self.uri, name)

    @property
    def metrics(self) -> str:
        return self.path(METRICS)

    @property
    def final(self) -> str:
        return self.path(FINAL)

    @property
    def loss_plot(self) -> str:
        return self.path(LOSS_PLOT)

    def exists(self, name: str) -> bool:
        return storage.exists(self.path(name), self.storage_options)

    def read_metrics(self) -> list[dict]:
        return read_jsonl(self.metrics, self.storage_options)

    def write_metrics(self, lines: list[dict]) -> None:
        write_jsonl(self.metrics, lines, self.storage_options)

    def read_events(self) -> list[dict]:
        return read_jsonl(self.path(EVENTS), self.storage_options)

    def append_event(self, event: dict) -> None:
        write_jsonl(self.path(EVENTS), [*self.read_events(), event], self.storage_options)

    def read_floors(self) -> dict | None:
        return read_json(self.path(FLOORS), self.storage_options)

    def write_floors(self, floors: dict) -> None:
        storage.write_bytes(self.path(FLOORS), (json.dumps(floors, indent=1) + "\n").encode(), self.storage_options)

    def read_config(self) -> dict | None:
        """The resolved config as written at the run's start (a plain mapping)."""
        import yaml

        if not self.exists(CONFIG):
            return None
        return yaml.safe_load(storage.read_bytes(self.path(CONFIG), self.storage_options))

    def write_config(self, text: str) -> None:
        storage.write_bytes(self.path(CONFIG), text.encode(), self.storage_options)

    def write_loss_plot(self, png: bytes) -> None:
        storage.write_bytes(self.loss_plot, png, self.storage_options)

    def upload_final(self, local_dir: str) -> None:
        storage.put_dir(local_dir, self.final, self.storage_options)
