"""Tracking is off unless configured, and then MLflow is not even imported; a server that never
answers costs one warning and one line at the end, and the work goes on (the real server is in
tests/integration/test_tracking.py)."""

import subprocess
import sys

import pytest

from randommask.common import tracking
from randommask.common.tracking import Tracker, numeric, tracking_uri
from randommask.errors import UserError
from randommask.tools.s3server import free_port


def test_off_unless_configured_and_mlflow_not_imported(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(None) is None and tracking_uri("http://h:1") == "http://h:1"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert tracking_uri(None) == "http://env:5000"
    code = ("import sys, randommask.training.worker, randommask.training.driver, randommask.sweep.driver, "
            "randommask.finetune.driver; print('mlflow' in sys.modules)")
    env = {"PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.strip() == "False", out.stderr[-2000:]


def test_none_turns_tracking_off_even_over_the_environment(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert tracking_uri("none") is None and tracking_uri(" NONE ") is None


@pytest.mark.parametrize("uri", ["mlruns", "/tmp/mlruns", "file:///tmp/mlruns", "ftp://h/x"])
def test_a_uri_mlflow_cannot_track_to_is_one_line_before_any_work(monkeypatch, uri, tmp_path):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    with pytest.raises(UserError, match="--mlflow-uri / tracking.mlflow_uri.*http\\(s\\)://host:port, or none"):
        tracking_uri(uri)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(UserError, match=r"\(MLFLOW_TRACKING_URI\)"):
        tracking_uri(None)
    # finetune refuses it before reading anything or writing --out (it used to fail after the trials)
    from randommask.finetune.driver import finetune

    with pytest.raises(UserError, match="MLflow tracking URI"):
        finetune(str(tmp_path / "no-checkpoint"), str(tmp_path / "no-gue"), "tf/0", str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_a_store_mlflow_cannot_open_costs_one_line(monkeypatch):
    def refuse(uri):
        raise RuntimeError("The filesystem tracking backend is in maintenance mode\nmore")

    monkeypatch.setattr(tracking, "_quiet_client", refuse)
    said: list[str] = []
    t = Tracker("sqlite:///x.db", "randommask", "r", key="/runs/r", warn=said.append)
    t.log_params({"a": 1})
    t.log_metrics({"loss": 1.0}, 5)
    t.close()
    assert t.run_id is None and said == ["warning: MLflow cannot open sqlite:///x.db (The filesystem tracking "
                                         "backend is in maintenance mode); nothing is tracked"], said


def test_numeric_keeps_finite_numbers_only():
    assert numeric({"step": 5, "loss": 1.5, "ok": True, "name": "x", "nan": float("nan"), "n": 3}) == \
        {"loss": 1.5, "n": 3.0}


def test_a_server_that_never_answers_warns_once_and_says_what_is_missing():
    said: list[str] = []
    t = Tracker(f"http://127.0.0.1:{free_port()}", "randommask", "r", key="/runs/r", warn=said.append)
    t.retry_at = 0.0
    for step in (5, 10, 15):
        t.log_metrics({"loss": 1.0}, step)
    t.log_params({"optim.lr": 0.1})
    t.close()
    assert len(said) == 2 and "did not answer" in said[0]
    assert said[1].startswith("warning: MLflow at http://127.0.0.1:") and "is missing 6 update(s)" in said[1], said


def test_finetune_logging_to_a_server_that_never_answers_is_one_line(tmp_path):
    """Once per fine-tuning, not once per trial: it stops at the parent and says how to log later."""
    import time

    from randommask.finetune.tracking import log_finetune

    said: list[str] = []
    trials = [{"dataset": "tf/2", "seed": s, "status": "ok", "test": {"mcc": 0.1}} for s in range(5)]
    t0 = time.monotonic()
    log_finetune(f"http://127.0.0.1:{free_port()}", str(tmp_path), "ckpt", trials, {"datasets": []}, log=said.append)
    assert len(said) == 1 and "did not answer" in said[0] and "same command run again logs them" in said[0], said
    assert time.monotonic() - t0 < 30
