"""Tracking is off unless configured, and then MLflow is not even imported; a server that never
answers costs one warning and one line at the end, and the work goes on (the real server is in
tests/integration/test_tracking.py)."""

import subprocess
import sys

from randommask.common.tracking import Tracker, numeric, tracking_uri
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
