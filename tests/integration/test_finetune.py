"""Fine-tuning through Ray Tune on the real shared GUE data: two trials at once, results and resume, from
S3 to S3, a checkpoint fetched once per node, a failed trial reported (the registry, protocols, CSV
validation and single trials are in tests/unit/test_finetune.py)."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import GUE_BASELINES, mlflow_runs, run_cli
from randommask.common import storage
from randommask.common.checkpoints import node_checkpoint
from randommask.errors import UserError
from randommask.evaluation import gue
from randommask.finetune import finetune
from randommask.training.model import build_mlm


@pytest.mark.ray
def test_finetune_through_tune_two_at_once_with_results_and_resume(ray_local, gue_dir, tiny_checkpoint, tmp_path,
                                                                   mlflow):
    out = tmp_path / "ft"
    logs = []
    # the published protocol on subsampled data: prom_core_tata 10 epochs of 7 steps, tf/2 3 epochs
    r = finetune(str(tiny_checkpoint), str(gue_dir), "tf/2,prom/prom_core_tata", str(out), seeds=2, max_train=200,
                 max_eval=100, cpus_per_trial=1, baselines=str(GUE_BASELINES), log=logs.append,
                 mlflow_uri=mlflow.uri, save_models=True)
    assert "4 to run" in logs[0]
    assert r["protocol"] == "published" and r["selection"] == "dev_loss@eval_steps" and r["precision"] == "fp32"
    assert "subsampled" in r["not_comparable"]
    assert [row["dataset"] for row in r["datasets"]] == ["tf/2", "prom/prom_core_tata"]
    for row in r["datasets"]:
        assert row["seeds_ok"] == 2 and row["seeds_failed"] == 0
        assert -1 <= row["score_mean"] <= 1 and row["score_std"] >= 0 and len(row["per_seed"]) == 2
        assert "baselines" not in row and "rank" not in row  # subsampled: not comparable with the published runs
    tata = r["datasets"][1]
    assert tata["hyperparameters"] == gue.REGISTRY["prom/prom_core_tata"].published()
    # 200 rows / 32 = 7 steps per epoch, under eval_steps 200: evaluated at each of the 10 epoch ends
    assert tata["ran"][0]["steps"] == 70 and tata["ran"][0]["evaluations"] == 10
    trials = [json.loads(p.read_text()) for p in sorted((out / "trials").glob("*.json"))]
    assert len(trials) == 4
    spans = sorted((t["started"], t["finished"]) for t in trials)
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:])), "no two trials ran at the same time"
    # The longest trials start first: prom_core_tata's 70 steps before tf/2's 21.
    assert [t["dataset"] for t in sorted(trials, key=lambda t: t["started"])[:2]] == ["prom/prom_core_tata"] * 2
    md = (out / "results.md").read_text()
    assert "| prom/prom_core_tata | mcc |" in md and "±" in md and "overall" in md and "Protocol: **published**" in md
    assert "Published numbers are not shown: the data were subsampled" in md and "DNABERT-2" not in md
    csv_lines = (out / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("dataset,task,metric,protocol,score_mean,score_std") and len(csv_lines) == 3
    saved = json.loads((out / "results.json").read_text())
    assert saved["overall"] == pytest.approx(r["overall"]) and "run_dnabert1.sh" in saved["source"]

    # A rerun skips the finished (dataset, seed) pairs and only runs the new seed.
    before = {p.name: p.stat().st_mtime for p in (out / "trials").iterdir()}
    logs.clear()
    client, parents = mlflow_runs(mlflow.uri, key=str(out))  # MLflow: a parent, one child per trial
    assert len(parents) == 1 and "results.md" in {a.path for a in client.list_artifacts(parents[0].info.run_id)}
    assert parents[0].data.metrics["prom/prom_core_tata_mcc_mean"] == pytest.approx(tata["score_mean"])
    _, children = mlflow_runs(mlflow.uri, parent=parents[0].info.run_id)
    by_name = {c.info.run_name: c for c in children}
    assert sorted(by_name) == ["prom/prom_core_tata-s0", "prom/prom_core_tata-s1", "tf/2-s0", "tf/2-s1"]
    for t in trials:
        c = by_name[f"{t['dataset']}-s{t['seed']}"]
        assert c.data.params["protocol"] == "published" and c.data.params["hp.lr"] == str(t["hyperparameters"]["lr"])
        assert c.data.metrics["test_mcc"] == pytest.approx(t["test"]["mcc"])
        assert len(client.get_metric_history(c.info.run_id, "dev_loss")) == t["ran"]["evaluations"]
        assert c.data.tags["randommask.model"] == t["model"]  # --save-models: the model and its card
        assert [a.path for a in client.list_artifacts(c.info.run_id, "model")] == ["model/README.md"]
    r2 = finetune(str(tiny_checkpoint), str(gue_dir), "tf/2,prom/prom_core_tata", str(out), seeds=3, max_train=200,
                  max_eval=100, log=logs.append, mlflow_uri=mlflow.uri)
    assert "4 already finished, 2 to run" in logs[0]
    assert all((out / "trials" / n).stat().st_mtime == m for n, m in before.items())
    _, children = mlflow_runs(mlflow.uri, parent=parents[0].info.run_id)  # the new seed's two, the rest as they were
    assert len(children) == 6
    assert all(len(client.get_metric_history(c.info.run_id, "test_mcc")) == 1 for c in children)
    assert all(row["seeds_ok"] == 3 for row in r2["datasets"])
    # ...but never mixes in trials run with other settings or another protocol
    common = dict(seeds=3, max_train=200, max_eval=100)
    with pytest.raises(UserError, match="was run with lr=3e-05, not 0.001; use a new --out"):
        finetune(str(tiny_checkpoint), str(gue_dir), "tf/2,prom/prom_core_tata", str(out), lr=1e-3, **common)
    with pytest.raises(UserError, match="was run with protocol=published, not fast; use a new --out"):
        finetune(str(tiny_checkpoint), str(gue_dir), "tf/2,prom/prom_core_tata", str(out), protocol="fast", **common)
    with pytest.raises(UserError, match="max_train=200, not 300"):
        finetune(str(tiny_checkpoint), str(gue_dir), "tf/2,prom/prom_core_tata", str(out), **{**common, "max_train": 300})


@pytest.mark.ray
def test_finetune_from_s3_to_s3_skips_finished_trials_on_rerun(ray_local, gue_dir, tiny_checkpoint, s3):
    """The KubeRay path: checkpoint, GUE data and results all on S3, trials fetch the checkpoint
    themselves (they may run on other nodes), and a retried job skips what already finished."""
    bucket = s3.bucket("ft")
    shutil.copytree(tiny_checkpoint, bucket / "runs" / "r" / "final")
    shutil.copytree(gue_dir / "mouse" / "2", bucket / "gue" / "mouse" / "2")
    args = dict(seeds=1, max_train=100, max_eval=50, epochs=1, cpus_per_trial=1)
    r = finetune("s3://ft/runs/r/final", "s3://ft/gue", "mouse/2", "s3://ft/out", **args, log=lambda *_: None)
    assert r["datasets"][0]["seeds_ok"] == 1 and r["failed_trials"] == 0
    out = bucket / "out"
    assert (out / "trials" / "mouse_2__seed0.json").is_file()
    assert json.loads((out / "results.json").read_text())["overall"] == pytest.approx(r["overall"])
    assert "| mouse/2 | mcc |" in (out / "results.md").read_text()
    first = (out / "trials" / "mouse_2__seed0.json").read_bytes()
    logs = []
    r2 = finetune("s3://ft/runs/r/final", "s3://ft/gue", "mouse/2", "s3://ft/out", **{**args, "seeds": 2},
                  log=logs.append)
    assert "1 already finished, 1 to run" in logs[0]
    assert (out / "trials" / "mouse_2__seed0.json").read_bytes() == first
    assert r2["datasets"][0]["seeds_ok"] == 2

    # --save-models on a rerun: finished trials without a saved model run again (same settings, same
    # scores) and keep it, on S3, with a card that carries the pretrained checkpoint's lineage and license.
    storage.write_bytes("s3://ft/runs/r/final/README.md", (  # through S3, as a run writes it
        "---\nlicense: apache-2.0\nrandommask:\n  run: tiny-run\n  version: 0.1.0\n  masking: randommask\n"
        "  steps: 150\n  tokens: 6000\n---\n# tiny\n").encode())
    logs.clear()
    r3 = finetune("s3://ft/runs/r/final", "s3://ft/gue", "mouse/2", "s3://ft/out", **{**args, "seeds": 2},
                  log=logs.append, save_models=True)
    assert "2 finished trial(s) have no saved model" in logs[0] and "0 already finished, 2 to run" in logs[1]
    assert r3["datasets"][0]["per_seed"] == r2["datasets"][0]["per_seed"]
    assert r3["datasets"][0]["models"] == {s: f"s3://ft/out/models/mouse_2__seed{s}" for s in (0, 1)}
    assert "## Saved models" in (out / "results.md").read_text()
    from huggingface_hub import ModelCard
    from transformers import AutoModelForSequenceClassification

    saved = node_checkpoint("s3://ft/out/models/mouse_2__seed1")
    AutoModelForSequenceClassification.from_pretrained(saved)
    card = ModelCard.load(Path(saved) / "README.md")
    assert card.data.license == "apache-2.0" and card.data.pipeline_tag == "text-classification"
    base = card.data.to_dict()["randommask"]["base"]
    assert base["init_from"] == "s3://ft/runs/r/final" and base["parent"]["run"] == "tiny-run"
    assert "pretraining run `tiny-run`" in card.text


def test_a_remote_checkpoint_is_fetched_once_per_node_and_again_when_rewritten(tiny_checkpoint, s3, tmp_path):
    # through the S3 API, as a run writes it (rclone's own listing cache would hide files made on its disk)
    fs, _ = storage.filesystem("s3://nodeckpt")
    fs.mkdir("nodeckpt")
    fs.put(f"{tiny_checkpoint}/", "nodeckpt/run/final/", recursive=True)
    first = node_checkpoint("s3://nodeckpt/run/final")
    assert node_checkpoint("s3://nodeckpt/run/final") == first  # cached on this node
    torch.manual_seed(1)
    build_mlm("tiny").save_pretrained(tmp_path / "new")
    fs.put_file(str(tmp_path / "new" / "model.safetensors"), "nodeckpt/run/final/model.safetensors")  # rewritten
    second = node_checkpoint("s3://nodeckpt/run/final")
    assert second != first
    assert (Path(second) / "model.safetensors").read_bytes() == (tmp_path / "new" / "model.safetensors").read_bytes()
    with pytest.raises(UserError, match="no such checkpoint"):
        node_checkpoint("s3://nodeckpt/absent")


@pytest.mark.ray
def test_failed_trial_is_reported_not_hidden(ray_local, gue_dir, tiny_checkpoint, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    out = tmp_path / "ft"
    res = run_cli("finetune", "--checkpoint", broken, "--gue-dir", gue_dir, "--tasks", "mouse/2", "--seeds", "1",
                  "--max-train", "50", "--epochs", "1", "--out", out)
    assert res.returncode == 2 and "1 trial(s) failed" in res.stderr
    row = json.loads((out / "results.json").read_text())["datasets"][0]
    assert row["seeds_failed"] == 1 and row["errors"]
    assert "Failed trials" in (out / "results.md").read_text()


def test_all_mode_skips_missing_and_by_name_missing_is_an_error(gue_dir, tiny_checkpoint, tmp_path, ray_local):
    partial = tmp_path / "GUE"
    shutil.copytree(gue_dir / "prom" / "prom_core_tata", partial / "prom" / "prom_core_tata")
    with pytest.raises(UserError, match="missing GUE dataset.*tf/0"):
        finetune(str(tiny_checkpoint), str(partial), "tf/0,prom/prom_core_tata", str(tmp_path / "a"))
    logs = []
    r = finetune(str(tiny_checkpoint), str(partial), "all", str(tmp_path / "b"), seeds=1, max_train=50, max_eval=50,
                 epochs=1, log=logs.append)
    assert "skipping 27 dataset(s)" in logs[0]
    assert [row["dataset"] for row in r["datasets"]] == ["prom/prom_core_tata"]


@pytest.mark.ray
def test_lr_search_selects_on_dev_reports_that_rates_test_and_resumes(ray_local, gue_dir, tiny_checkpoint, tmp_path,
                                                                     mlflow):
    """``--lr 1e-4,1e-2``: one trial per rate, the rate with the lower dev loss (the published
    protocol's criterion) selected, only its test scores reported; a rerun runs nothing."""
    out = tmp_path / "lr"
    args = dict(seeds=1, max_train=64, max_eval=64, epochs=2, lr=(1e-4, 1e-2), cpus_per_trial=1)
    logs = []
    r = finetune(str(tiny_checkpoint), str(gue_dir), "mouse/2", str(out), log=logs.append, mlflow_uri=mlflow.uri,
                 **args)
    assert "2 trial(s) (1 dataset(s) x 2 learning rate(s) x 1 seed(s)); 0 already finished, 2 to run" in logs[0]
    done = [line for line in logs if line.startswith("trial mouse/2 seed 0 lr ")]
    assert len(done) == 2 and "1 trial(s) left" in done[0] and "0 trial(s) left" in done[1], logs
    names = sorted(p.name for p in (out / "trials").iterdir())
    assert names == ["mouse_2__lr0.0001__seed0.json", "mouse_2__lr0.01__seed0.json"]
    trials = {t["hyperparameters"]["lr"]: t for t in (json.loads((out / "trials" / n).read_text()) for n in names)}
    # By hand: one seed, so each rate's mean is its trial's dev loss at the selected step; the lower wins.
    dev = {lr: t["dev_best"]["loss"] for lr, t in trials.items()}
    assert dev[1e-4] != dev[1e-2], "the test needs rates that the dev loss tells apart"
    chosen, other = sorted(dev, key=dev.get)
    assert any(f"lr {lr:g}: dev loss {dev[lr]:.4f}, test mcc {trials[lr]['test']['mcc']:.4f}" in line
               for lr in dev for line in done)
    saved = json.loads((out / "results.json").read_text())
    row = saved["datasets"][0]
    assert saved["lr_search"] == [1e-4, 1e-2] and saved["protocol"] == "custom"
    assert row["lr_search"]["selected"] == chosen and row["lr_search"]["criterion"] == "dev_loss"
    assert [(x["lr"], x["dev_per_seed"], x["dev_mean"]) for x in row["lr_search"]["rates"]] == [
        (1e-4, {"0": dev[1e-4]}, dev[1e-4]), (1e-2, {"0": dev[1e-2]}, dev[1e-2])]
    test = trials[chosen]["test"]
    assert row["per_seed"] == {"0": test["mcc"]} and row["hyperparameters"]["lr"] == chosen and row["seeds_ok"] == 1
    assert (row["mcc_mean"], row["f1_macro_mean"], row["accuracy_mean"]) == (test["mcc"], test["f1_macro"],
                                                                             test["accuracy"])
    assert test != trials[other]["test"]  # otherwise the row above could come from either rate
    md = (out / "results.md").read_text()
    assert f"| mouse/2 | {chosen:g} | dev_loss | {dev[chosen]:.4f} | {dev[chosen]:.4f} | **selected** |" in md
    assert r["datasets"][0]["score_mean"] == test["mcc"]
    _, parents = mlflow_runs(mlflow.uri, key=str(out))  # one child run per (dataset, seed, rate)
    _, children = mlflow_runs(mlflow.uri, parent=parents[0].info.run_id)
    by_name = {c.info.run_name: c for c in children}
    assert sorted(by_name) == ["mouse/2-s0-lr0.0001", "mouse/2-s0-lr0.01"]
    assert by_name["mouse/2-s0-lr0.01"].data.params["hp.lr"] == "0.01"

    before = {p.name: p.stat().st_mtime for p in (out / "trials").iterdir()}
    logs.clear()
    r2 = finetune(str(tiny_checkpoint), str(gue_dir), "mouse/2", str(out), log=logs.append, **args)
    assert "2 already finished, 0 to run" in logs[0] and not [line for line in logs if line.startswith("trial ")]
    assert {p.name: p.stat().st_mtime for p in (out / "trials").iterdir()} == before
    assert r2["datasets"][0]["lr_search"] == r["datasets"][0]["lr_search"]
    with pytest.raises(UserError, match="trial mouse/2 seed 0 was run with epochs=2, not 3"):
        finetune(str(tiny_checkpoint), str(gue_dir), "mouse/2", str(out), **{**args, "epochs": 3})

    # --search-seeds 1 with a second seed: the rate is chosen on seed 0 (the trials above, reused), and
    # seed 1 runs at that rate alone; the row reports both seeds of the chosen rate.
    logs.clear()
    r3 = finetune(str(tiny_checkpoint), str(gue_dir), "mouse/2", str(out), log=logs.append,
                  **{**args, "seeds": 2}, search_seeds=1)
    assert "2 trial(s) (1 dataset(s) x 2 learning rate(s) x 1 seed(s), choosing each dataset's rate on dev); " \
           "2 already finished, 0 to run" in logs[0], logs
    assert f"rate chosen on dev with 1 seed(s): mouse/2 {chosen:g}" in logs, logs
    assert any("1 trial(s) (the other 1 seed(s) at each dataset's chosen rate); 0 already finished, 1 to run" in line
               for line in logs), logs
    assert sorted(p.name for p in (out / "trials").iterdir()) == sorted(names + [f"mouse_2__lr{chosen:g}__seed1.json"])
    seed1 = json.loads((out / "trials" / f"mouse_2__lr{chosen:g}__seed1.json").read_text())
    row = r3["datasets"][0]
    assert r3["search_seeds"] == 1 and row["lr_search"]["selected"] == chosen
    assert row["per_seed"] == {0: test["mcc"], 1: seed1["test"]["mcc"]} and row["seeds_ok"] == 2
    assert row["score_mean"] == pytest.approx((test["mcc"] + seed1["test"]["mcc"]) / 2)
