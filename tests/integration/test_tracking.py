"""Experiment tracking against a real MLflow tracking server (``mlflow server``, SQLite backend, on
127.0.0.1): a pretraining's params, metric history and artifacts; a run stopped and resumed by name
continues the same MLflow run with each step once; a server that goes down mid-run and comes back
costs the run nothing, with one warning, and gets everything it missed."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from conftest import MLFLOW_SERVER, TINY_CONFIG, jsonl, load_tiny, mlflow_runs
from randommask.tools.mlflow_server import local_mlflow

pytestmark = pytest.mark.ray


def mlflow_run(uri: str, key: str):
    client, runs = mlflow_runs(uri, key=key)
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return client, runs[0]


def history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_a_pretraining_logs_to_mlflow_and_a_resume_continues_the_same_run(mlflow, prepared, tmp_path):
    from randommask.training.driver import pretrain

    common = ["optim.max_steps=100", "masking.phase_ends=[20,40,60,80,100]", "run.eval_every=50",
              f"tracking.mlflow_uri={mlflow.uri}"]
    assert not pretrain(load_tiny(prepared, tmp_path, "tracked", *common, "run.stop_after=60"))["finished"]
    assert pretrain(load_tiny(prepared, tmp_path, "tracked", *common))["finished"]
    run_dir = tmp_path / "tracked"
    client, run = mlflow_run(mlflow.uri, str(run_dir))
    assert run.info.status == "FINISHED" and run.info.run_name == "tracked"
    p = run.data.params
    assert p["optim.lr"] == "0.005" and p["masking.strategy"] == "randommask" and p["randommask.version"]
    assert len(p["data.manifest_sha256"]) == 64 and float(p["floors.context_free"]) > 8
    lines = jsonl(run_dir / "metrics.jsonl")
    # every numeric key of every line at its step, each step once across the stop and the resume
    for key in ("loss", "mask_loss", "tokens", "lr", "eval_span_k_mask_loss"):
        want = [(x["step"], pytest.approx(x[key])) for x in lines if key in x]
        assert history(client, run.info.run_id, key) == want, key
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "floors.json", "loss.png", "model"} <= names
    card = client.download_artifacts(run.info.run_id, "model/README.md", str(tmp_path))
    assert open(card).read() == (run_dir / "final" / "README.md").read_text()


def test_a_tracking_server_down_mid_run_costs_nothing_and_gets_what_it_missed(prepared, tmp_path):
    with local_mlflow(tmp_path / "mlflow", log=tmp_path / "server.log", executable=str(MLFLOW_SERVER)) as server:
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own local Ray cluster
        env["MLFLOW_TRACKING_URI"] = server.uri  # the standard variable, as users set it
        cmd = [sys.executable, "-m", "randommask", "pretrain", "--config", str(TINY_CONFIG),
               "--set", f"data.prepared={prepared}", "--set", f"run.storage_path={tmp_path}",
               "--set", "run.name=outage", "--set", "run.eval_every=25", "--set", "observability.progress=false",
               # long enough that the server is back (its start-up takes 15-30 s here) well before the end
               "--set", "optim.max_steps=300", "--set", "masking.phase_ends=[60,120,180,240,300]"]
        proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        metrics = tmp_path / "outage" / "metrics.jsonl"

        def reached(step: int) -> bool:
            return metrics.exists() and any(x["step"] >= step for x in jsonl(metrics))

        try:
            deadline = time.monotonic() + 300
            while not reached(25):
                assert proc.poll() is None and time.monotonic() < deadline, "the run never reached step 25"
                time.sleep(0.2)
            server.stop()
            time.sleep(5)
            server.start()  # the same port and store; its start-up adds to the outage
            assert proc.poll() is None, "the run ended before the server came back"
            out, _ = proc.communicate(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0 and "done     300/300 steps" in out, out[-3000:]
        warnings = {x for x in out.splitlines() if "did not answer" in x}
        assert len(warnings) == 1, out[-3000:]
        client, run = mlflow_run(server.uri, str(tmp_path / "outage"))
        # the summary says where the run is and that nothing is missing
        assert f"tracking MLflow run {run.info.run_id} at {server.uri}\n" in out, out[-2000:]
        assert run.info.status == "FINISHED"
        lines = jsonl(metrics)
        assert history(client, run.info.run_id, "loss") == [(x["step"], pytest.approx(x["loss"])) for x in lines]


def test_a_stopped_sweep_trial_is_ended_with_the_lines_it_could_not_send(mlflow, tmp_path):
    """ASHA stops a trial between its evaluation and its next MLflow call, or a slow server keeps its
    last lines pending when it is stopped: the sweep ends its run as KILLED with every line of its
    metrics.jsonl, each step once."""
    from randommask.common.rundir import RunDir
    from randommask.common.tracking import Tracker
    from randommask.sweep.driver import end_trial_runs

    runs = str(tmp_path / "runs")
    lines = [{"step": 10, "loss": 8.3}, {"step": 20, "loss": 8.1, "eval_span_k_mask_loss": 7.9},
             {"step": 30, "loss": 8.0}]
    for name in ("sw-a", "sw-b"):
        RunDir.of(runs, name).write_metrics(lines)
    parent = Tracker(mlflow.uri, "randommask", "sweep sw", key=str(tmp_path / "sw"))
    started = Tracker(mlflow.uri, "randommask", "sw-a", key=RunDir.of(runs, "sw-a").uri, parent_run_id=parent.run_id)
    started.log_metrics({"loss": 8.3}, 10)  # what the trial sent before it was stopped; left RUNNING
    end_trial_runs(parent, [{"run": "sw-a", "status": "stopped"}, {"run": "sw-b", "status": "error"}], runs)
    client, children = mlflow_runs(mlflow.uri, parent=parent.run_id)
    assert {c.info.run_name: c.info.status for c in children} == {"sw-a": "KILLED", "sw-b": "FAILED"}
    for c in children:
        assert [m.step for m in client.get_metric_history(c.info.run_id, "loss")] == [10, 20, 30]
        assert [m.step for m in client.get_metric_history(c.info.run_id, "eval_span_k_mask_loss")] == [20]
        assert c.data.tags["randommask.trial_status"] in ("stopped", "error")
