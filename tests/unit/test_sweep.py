"""Sweeps over mask schedules: Ray Tune over TorchTrainer runs with ASHA, outputs, resume; the probe."""

from pathlib import Path

import pytest
import torch

from randommask import KmerTokenizer
from randommask.config import load_config
from randommask.errors import UserError
from randommask.finetune import linear_probe
from randommask.model import build_mlm
from randommask.prepare import prepare
from randommask.tune import load_sweep, sweep, trial_config

from conftest import SHARED

REPO = Path(__file__).resolve().parents[1]
SWEEP = REPO / "jobs" / "configs" / "sweep-tiny.yaml"


@pytest.mark.ray
def test_sweep_of_three_tiny_trials_with_asha_on_s3(ray_local, ecoli, tmp_path, s3):
    """The KubeRay path: trials' runs and Tune's experiment state live on S3, so a rerun (a RayJob
    retry on a new cluster) restores the experiment from there."""
    prepared = tmp_path / "prepared"
    prepare([str(ecoli)], str(prepared), show_progress=False)
    s3.bucket("sweeps")
    overrides = ["storage_path=s3://sweeps/k8s",
                 f"set=[data.prepared={prepared},optim.max_steps=60,run.eval_every=20,run.checkpoint_every=60,"
                 "run.log_every=10,scaling.cpus_per_worker=0.5,observability.progress=false]"]
    out = sweep(str(SWEEP), overrides, log=lambda *_: None)
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

    # Rerunning the same sweep resumes its Tune experiment instead of starting over. With a probe
    # objective, the finished trials best by the search metric are judged by the linear probe on
    # their finals, which live on S3 (each is fetched to the probing node first).
    gue_dir = SHARED / "data" / "gue"
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


def test_the_search_and_asha_share_one_metric():
    from randommask.tune import search_metric

    asha = "scheduler={asha: {metric: eval_span_2k_mask_loss, mode: min}}"
    assert search_metric(load_sweep(str(SWEEP), ["set=[data.prepared=x]", asha])[0]) == ("eval_span_2k_mask_loss", "min")
    probe = "objective={metric: probe_score, mode: max, probe: {gue_dir: g, datasets: [tf/0]}}"
    no_asha = load_sweep(str(SWEEP), ["set=[data.prepared=x]", "scheduler=null", probe])[0]
    assert search_metric(no_asha) == ("eval_span_k_mask_loss", "min")  # a probe is never reported during training
    plain = load_sweep(str(SWEEP), ["set=[data.prepared=x]", "scheduler=null", "objective.metric=eval_span_k_loss"])[0]
    assert search_metric(plain) == ("eval_span_k_loss", "min")


def test_trial_config_drops_parameters_the_strategy_does_not_take(tmp_path):
    sweep_cfg, base = load_sweep(str(SWEEP), ["set=[data.prepared=x]"])
    span = trial_config(base, {"masking.strategy": "span", "masking.phase_length": 10}, sweep_cfg, "t1", str(tmp_path))
    assert span.masking.strategy == "span" and span.masking.phase_ends is None
    rm = trial_config(base, {"masking.strategy": "randommask", "masking.phase_length": 10,
                             "masking.span_step": 3}, sweep_cfg, "t2", str(tmp_path))
    assert rm.masking.phase_ends == [10, 20, 30, 40, 50] and rm.masking.span_step == 3
    assert rm.run.name == "sweep-tiny-t2"


@pytest.mark.parametrize("overrides, message", [
    (["search.algorithm=optuna"], "grid dimensions need search.algorithm grid or random"),
    (["search.space={optim.lr: {normal: [0, 1]}}"], "one of grid, choice"),
    (["objective.metric=probe_score"], "needs a probe section"),
    (["scheduler={asha: {grace_period: 0}}"], "grace_period"),
    (["pretrain=nope.yaml"], "pretrain config"),
    (["search.num_sample=3"], "search.num_sample: unknown key"),
])
def test_bad_sweep_configs(overrides, message):
    with pytest.raises(UserError, match=message):
        load_sweep(str(SWEEP), overrides)


def test_linear_probe_on_frozen_embeddings(tmp_path):
    gue_dir = SHARED / "data" / "gue"
    if not gue_dir.exists():
        pytest.skip("real GUE data is absent")
    torch.manual_seed(0)
    build_mlm("tiny").save_pretrained(tmp_path)
    KmerTokenizer(6).save_pretrained(tmp_path)
    scores = linear_probe(str(tmp_path), str(gue_dir), ["prom/prom_core_tata"], max_train=300, max_eval=200)
    assert set(scores) == {"probe_prom/prom_core_tata", "probe_score"}
    assert -1 <= scores["probe_score"] <= 1
