"""Sweeps over mask schedules through Ray Tune: TorchTrainer runs with ASHA on S3, outputs, resume, the
probe of the best trials; a sweep whose trials fail (configs and the probe alone are in
tests/unit/test_sweep.py)."""

import pytest

from conftest import REPO, mlflow_runs
from randommask.sweep.driver import sweep
from randommask.training.config import load_config

SWEEP = REPO / "jobs" / "configs" / "sweep-tiny.yaml"


@pytest.mark.ray
def test_sweep_of_three_tiny_trials_with_asha_on_s3(ray_local, prepared, gue_dir, s3, mlflow):
    """The KubeRay path: trials' runs and Tune's experiment state live on S3, so a rerun (a RayJob
    retry on a new cluster) restores the experiment from there."""
    s3.bucket("sweeps")
    overrides = ["storage_path=s3://sweeps/k8s",
                 f"set=[data.prepared={prepared},optim.max_steps=60,run.eval_every=20,run.checkpoint_every=60,"
                 "run.log_every=10,scaling.cpus_per_worker=0.5,observability.progress=false]"]
    out = sweep(str(SWEEP), overrides, log=lambda *_: None, mlflow_uri=mlflow.uri)
    rows = out["trials"]
    assert sorted(r["masking.strategy"] for r in rows) == ["bert", "randommask", "span"]
    assert all(r["status"] in ("done", "stopped") and r["steps"] >= 20 for r in rows)
    assert any(r["status"] == "done" and r["steps"] == 60 for r in rows)
    # ASHA saw the curve: every trial reported the fixed-mask loss at its evaluations
    assert all(r["eval_span_k_loss"] is not None and r["eval_span_k_mask_loss"] is not None for r in rows)
    assert out["floors"]["context_free"] == pytest.approx(8.17, abs=0.03)  # shown beside the trials
    best = out["best"]  # chosen by the [MASK]-only loss, sweep-tiny.yaml's objective
    assert best["eval_span_k_mask_loss"] == min(r["eval_span_k_mask_loss"] for r in rows if r["status"] == "done")
    root = s3.root / "sweeps" / "k8s" / "sweep-tiny"
    assert out["best_yaml"] == "s3://sweeps/k8s/sweep-tiny/best.yaml"
    cfg = load_config(str(root / "best.yaml"))  # ready for `randommask pretrain`
    assert cfg.masking.strategy == best["masking.strategy"] and cfg.optim.max_steps == 60
    assert out["curves"] == "s3://sweeps/k8s/sweep-tiny/curves.png"
    assert (root / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert (root / "trials.csv").read_text().count("\n") == 4
    assert len(list((root / "runs").glob("sweep-tiny-*/final/config.json"))) >= 1
    # MLflow: the sweep a parent run, each trial's pretraining a child with its config and its curve
    client, parents = mlflow_runs(mlflow.uri, key="s3://sweeps/k8s/sweep-tiny")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    assert parent.data.tags["randommask.best_trial"] == str(best["trial"])
    assert parent.data.metrics["best_eval_span_k_mask_loss"] == pytest.approx(best["eval_span_k_mask_loss"])
    assert {"trials.csv", "best.yaml", "curves.png"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    _, children = mlflow_runs(mlflow.uri, parent=parent.info.run_id)
    assert sorted(c.data.params["masking.strategy"] for c in children) == ["bert", "randommask", "span"]
    for c in children:
        run_dir = f"s3://sweeps/k8s/sweep-tiny/runs/{c.info.run_name}"
        assert c.data.tags["randommask.key"] == run_dir
        steps = [m.step for m in client.get_metric_history(c.info.run_id, "eval_span_k_mask_loss")]
        assert steps and steps == sorted(set(steps))  # the curve, each evaluation once
    # a trial ASHA stopped is ended as KILLED, not left RUNNING; a finished one is FINISHED
    status = {r["run"]: r["status"] for r in rows}
    assert {c.info.run_name: c.info.status for c in children} == {
        name: {"done": "FINISHED", "stopped": "KILLED"}[st] for name, st in status.items()}

    # Rerunning the same sweep resumes its Tune experiment instead of starting over. With a probe
    # objective, the finished trials best by the search metric are judged by the linear probe on
    # their finals, which live on S3 (each is fetched to the probing node first).
    probe = (f"objective={{metric: probe_score, mode: max, probe: {{gue_dir: {gue_dir}, "
             "datasets: [prom/prom_core_tata], max_train: 200, max_eval: 100, top: 2}}")
    logs = []
    again = sweep(str(SWEEP), [*overrides, probe], log=logs.append)
    assert any("resuming s3://sweeps/k8s/sweep-tiny/tune/sweep-tiny" in line for line in logs)
    assert sorted(r["trial"] for r in again["trials"]) == sorted(r["trial"] for r in rows)
    done = sorted((r for r in again["trials"] if r["status"] == "done"), key=lambda r: r["eval_span_k_mask_loss"])
    probed = [r for r in again["trials"] if r.get("probe_score") is not None]
    assert sorted(r["trial"] for r in probed) == sorted(r["trial"] for r in done[:2])
    assert all(-1 <= r["probe_score"] <= 1 and "probe_prom/prom_core_tata" in r for r in probed)
    assert again["best"]["probe_score"] == max(r["probe_score"] for r in probed)


@pytest.mark.ray
def test_a_sweep_whose_trials_fail_exits_non_zero(ray_local, tmp_path, capsys):
    from randommask.cli import main

    rc = main(["sweep", "--config", str(SWEEP), "--set", f"storage_path={tmp_path}",
               "--set", f"set=[data.prepared={tmp_path / 'not-prepared'},optim.max_steps=20]",
               "--set", "search.space={masking.strategy: {grid: [bert]}}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[-1].startswith("randommask: error: 1 of 1 trial(s) failed (trial ") and "no manifest.json" in err[-1]
    assert (tmp_path / "sweep-tiny" / "trials.csv").exists() and not (tmp_path / "sweep-tiny" / "best.yaml").exists()
