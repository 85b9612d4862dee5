"""Experiment tracking in MLflow, off unless a tracking URI is given (``tracking.mlflow_uri``,
``--mlflow-uri``, or the standard ``MLFLOW_TRACKING_URI``); when it is off MLflow is not imported.

A tracking server that is down never fails or stalls the work it records. Every call goes through
the REST client with a short timeout and no client-side retries; a failed call is kept, warned
about once, and sent again with everything after it once the server answers (tried at most every
``RETRY_EVERY_S``, so a dead server costs one timeout per interval, not one per step). ``close``
sends what it can and says in one line what never reached the server.

One MLflow run per randommask run, found again by its ``randommask.key`` tag (the run directory's
URI), so a resumed or retried run continues the same MLflow run; ``sent_step`` tells the caller
which steps that run already has, so none is logged twice.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Callable

DEFAULT_EXPERIMENT = "randommask"
ENV_URI = "MLFLOW_TRACKING_URI"
TIMEOUT_S = 5  # each REST call; MLflow's own default is 120 s with 7 retries
RETRY_EVERY_S = 30.0
KEY_TAG = "randommask.key"
PARAM_MAX = 6000  # MLflow's limit on a parameter value


OFF = "none"  # given as the URI, tracking is off even where MLFLOW_TRACKING_URI is set
SCHEMES = ("http", "https", "databricks", "sqlite", "postgresql", "mysql", "mssql")  # stores MLflow opens


def tracking_uri(explicit: str | None = None) -> str | None:
    """The tracking URI in force: the explicit one (``none``: off), else ``MLFLOW_TRACKING_URI``, else
    None (off). A URI MLflow cannot track to is refused here, before any work, rather than by MLflow
    with a traceback once the work is done."""
    from urllib.parse import urlsplit

    from randommask.errors import UserError

    if explicit is not None and explicit.strip().lower() == OFF:
        return None
    uri = explicit or os.environ.get(ENV_URI) or None
    if uri is None:
        return None
    scheme = urlsplit(uri).scheme.split("+")[0]
    file_ok = scheme == "file" and os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() == "true"
    if scheme not in SCHEMES and not file_ok:
        where = "--mlflow-uri / tracking.mlflow_uri" if explicit else ENV_URI
        raise UserError(f"MLflow tracking URI {uri!r} ({where}): not a tracking server or database MLflow opens; "
                        f"give http(s)://host:port, or {OFF} for no tracking")
    return uri


def _quiet_client(uri: str):
    # Bounded calls: the variables are read when a request is made, so they are set first.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(TIMEOUT_S))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def numeric(line: dict[str, Any]) -> dict[str, float]:
    """The finite numeric values of a metrics line (booleans and the step itself left out)."""
    return {k: float(v) for k, v in line.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step" and math.isfinite(float(v))}


def _refused(exc: Exception) -> bool:
    """True when the server answered and refused the request (4xx): a permanent error."""
    code = getattr(exc, "get_http_status_code", None)
    try:
        status = int(code()) if callable(code) else 0
    except (TypeError, ValueError):
        status = 0
    return 400 <= status < 500


class Tracker:
    """One MLflow run, written best-effort (see the module's docstring)."""

    def __init__(self, uri: str, experiment: str, name: str, key: str, parent_run_id: str | None = None,
                 tags: dict[str, str] | None = None, warn: Callable[[str], None] = print) -> None:
        self.uri, self.experiment, self.name, self.key = uri, experiment, name, key
        self.parent_run_id, self.tags, self.warn = parent_run_id, dict(tags or {}), warn
        self.run_id: str | None = None
        self.created = False  # this call created the MLflow run (a resumed one already has its params)
        self.sent_step = -1  # the highest step the MLflow run already holds
        self.pending: list[tuple[str, Callable[[], None]]] = []
        self.warned = False
        self.retry_at = 0.0
        try:
            self.client = _quiet_client(uri)
        except Exception as e:  # noqa: BLE001 - a store MLflow cannot open: one line, and the work goes on
            self.warn(f"warning: MLflow cannot open {uri} ({str(e).splitlines()[0][:200]}); nothing is tracked")
            self.client = None  # every later call is then a no-op
            return
        self._call("open the run", self._open)

    # -- the run -------------------------------------------------------------------------------
    def _open(self) -> None:
        exp = self.client.get_experiment_by_name(self.experiment)
        exp_id = exp.experiment_id if exp else self.client.create_experiment(self.experiment)
        quoted = self.key.replace("'", "\\'")
        found = self.client.search_runs([exp_id], filter_string=f"tags.`{KEY_TAG}` = '{quoted}'", max_results=1)
        if found:
            self.run_id = found[0].info.run_id
            history = self.client.get_metric_history(self.run_id, "loss")
            self.sent_step = max((m.step for m in history), default=-1)
            if found[0].info.status != "RUNNING":
                self.client.update_run(self.run_id, status="RUNNING")
        else:
            tags = {KEY_TAG: self.key, "mlflow.runName": self.name, **self.tags}
            if self.parent_run_id:
                tags["mlflow.parentRunId"] = self.parent_run_id
            self.run_id = self.client.create_run(exp_id, run_name=self.name, tags=tags).info.run_id
            self.created = True

    def _call(self, what: str, fn: Callable[[], None]) -> None:
        """Run ``fn`` now if the server answers (after whatever is pending), else keep it."""
        if self.client is None:
            return
        self.pending.append((what, fn))
        if time.monotonic() < self.retry_at:
            return
        while self.pending:
            what_now, call = self.pending[0]
            if self.run_id is None and call != self._open:
                self.pending.insert(0, ("open the run", self._open))
                continue
            try:
                call()
            except Exception as e:  # a failure of the server or the network: keep it for later
                if _refused(e):  # the server answered no (a bad value): sending it again cannot help
                    self.pending.pop(0)
                    self.warn(f"warning: MLflow refused {what_now} of run {self.name}: {str(e).splitlines()[0][:200]}")
                    continue
                self.retry_at = time.monotonic() + RETRY_EVERY_S
                if not self.warned:
                    self.warned = True
                    self.warn(f"warning: MLflow at {self.uri} did not answer ({what_now}: {type(e).__name__}); "
                              "tracking continues and is sent when it answers")
                return
            self.pending.pop(0)
        if self.warned:
            self.warned = False
            self.warn(f"MLflow at {self.uri} answers again: everything kept meanwhile was sent")

    # -- what callers log ------------------------------------------------------------------------
    def log_params(self, params: dict[str, Any], new_run_only: bool = True) -> None:
        """Parameters, by default only into a run this tracker created: a resumed run has them, and
        MLflow refuses a parameter whose value changed (where a run is stored may change)."""
        from mlflow.entities import Param

        items = [Param(k[:250], str(v)[:PARAM_MAX]) for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            chunk = items[i : i + 100]

            def send(chunk=chunk) -> None:
                if self.created or not new_run_only:
                    self.client.log_batch(self.run_id, params=chunk)

            self._call("params", send)

    def log_metrics(self, values: dict[str, float], step: int) -> None:
        """One step's values, unless the MLflow run already holds that step (a resumed run)."""
        if step <= self.sent_step or not values:
            return
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        items = [Metric(k, v, ts, step) for k, v in values.items()]
        self.sent_step = step
        self._call(f"metrics at step {step}", lambda: self.client.log_batch(self.run_id, metrics=items))

    def log_bytes(self, data: bytes, name: str) -> None:
        """An artifact file ``name`` holding ``data`` (kept in memory until sent)."""
        import tempfile

        def send() -> None:
            with tempfile.TemporaryDirectory() as d:
                path = os.path.join(d, os.path.basename(name))
                with open(path, "wb") as f:
                    f.write(data)
                self.client.log_artifact(self.run_id, path, os.path.dirname(name) or None)

        self._call(f"artifact {name}", send)

    def log_text(self, text: str, name: str) -> None:
        self._call(f"artifact {name}", lambda: self.client.log_text(self.run_id, text, name))

    def set_tags(self, tags: dict[str, str]) -> None:
        self._call("tags", lambda: [self.client.set_tag(self.run_id, k, v) for k, v in tags.items()])

    def close(self, status: str = "FINISHED") -> None:
        """Send what is pending (one last try) and end the run; one line if anything never got there."""
        self.retry_at = 0.0
        self._call("end the run", lambda: self.client.set_terminated(self.run_id, status))
        if self.pending:
            kinds = sorted({what.split(" at step")[0] for what, _ in self.pending})
            self.warn(f"warning: MLflow at {self.uri} is missing {len(self.pending)} update(s) of run {self.name} "
                      f"({', '.join(kinds)}); the run directory has them all")
