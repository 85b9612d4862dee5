"""Experiment tracking against a real MLflow tracking server (``mlflow server``, SQLite backend, on
127.0.0.1): a pretraining's params, metric history and artifacts; a run stopped and resumed by name
continues the same MLflow run with each step once; a sweep trial stopped with lines unsent. A server
that goes down mid-run is in test_tracking_outage.py."""

from __future__ import annotations

import pytest

from conftest import jsonl, load_tiny, metric_history, mlflow_run, mlflow_runs

pytestmark = pytest.mark.ray


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
        assert metric_history(client, run.info.run_id, key) == want, key
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "floors.json", "loss.png", "model"} <= names
    card = client.download_artifacts(run.info.run_id, "model/README.md", str(tmp_path))
    assert open(card).read() == (run_dir / "final" / "README.md").read_text()


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
