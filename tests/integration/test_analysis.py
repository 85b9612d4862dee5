"""`randommask analyze` end to end: a report comparing two real tiny pretraining runs (the analyses
on constructed cases are in tests/unit/test_analysis.py)."""

import json
import shutil
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from conftest import TINY_CONFIG, run_cli
from randommask.training.config import load_config
from randommask.training.driver import pretrain


@pytest.fixture(scope="module")
def two_tiny_runs(tiny_run, tmp_path_factory):
    """RandomMask and DNABERT-style span masking, otherwise identical, equal length: the session's tiny
    run (150 steps of RandomMask) and a span-masking run of the same config."""
    run, _, cfg = tiny_run
    root = tmp_path_factory.mktemp("analysis")
    shutil.copytree(run, root / "runs" / "randommask")  # the label is the directory's name
    pretrain(load_config(TINY_CONFIG, [f"data.prepared={cfg.data.prepared}", f"run.storage_path={root / 'runs'}",
                                       "run.name=span", "masking.strategy=span", "masking.phase_ends=null",
                                       "masking.sampling=null", "run.checkpoint_every=150",
                                       "observability.progress=false"]))
    return root / "runs" / "randommask", root / "runs" / "span", cfg.data.prepared


@pytest.mark.ray
def test_analyze_compares_two_real_tiny_runs(two_tiny_runs, tmp_path):
    rm, span, _ = two_tiny_runs
    out = tmp_path / "report"
    res = run_cli("analyze", rm, "--compare", span / "final", "--windows", "24", "--batch-size", "8", "--no-progress",
                  "--out", out, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "report.html" in res.stdout
    report = json.loads((out / "report.json").read_text())
    runs = {r["label"]: r for r in report["runs"]}
    assert set(runs) == {"randommask", "span"}
    for r in runs.values():
        assert r["loss"]["steps"] == 150 and r["loss"]["final_eval_span_k_loss"] > 0
        assert r["loss"]["loss_key"] == "mask_loss" and r["loss"]["final_eval_span_k_mask_loss"] > 0
        assert r["floors"]["context_free"] == pytest.approx(8.17, abs=0.03)  # the run's floors.json
        assert r["loss"]["floor_context_free"] == r["floors"]["context_free"] and "collapse_progress" in r["loss"]
        att = np.array(r["attention"]["entropy"])
        assert att.shape == (2, 2) and np.all((att >= 0) & (att <= 1))
        assert r["attention"]["windows"] == 24 and r["attention"]["tokens_per_window"] == 125
        assert -1 <= r["embeddings"]["silhouette_central"] <= 1 and 0 <= r["embeddings"]["knn_central"] <= 1
    # the span boundary widens for RandomMask only
    assert [j["span"] for j in runs["randommask"]["loss"]["phase_jumps"]] == [8, 10, 12, 14]
    assert runs["span"]["loss"]["phase_jumps"] == []
    assert report["window_bp"] == 128  # from the run's own config
    for name in ("loss_dynamics.png", "kmer_embeddings.png", "attention.png"):
        img = matplotlib.image.imread(out / name)
        assert img.ndim == 3 and img.shape[0] > 300 and img.shape[1] > 600
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "randommask" in page and "span" in page
    assert "context-free floor" in page and "collapse progress" in page


@pytest.mark.ray
def test_analyze_bad_inputs_are_one_line(two_tiny_runs, tiny_checkpoint, tmp_path):
    rm, _, _ = two_tiny_runs

    def run(*args):
        return run_cli("analyze", *args, "--no-progress", "--out", tmp_path / "r")

    res = run(str(tmp_path / "nowhere"))
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "no such directory" in res.stderr
    res = run(str(rm), "--window-bp", "4000")
    assert res.returncode == 2 and "more than the model's 512 positions" in res.stderr
    # a bare checkpoint with no run and no --prepared: the report still comes, attention is skipped
    bare = shutil.copytree(tiny_checkpoint, tmp_path / "bare")  # not named final/: no run above it is looked for
    res = run(str(bare))
    assert res.returncode == 0 and "attention: skipped" in res.stdout
    assert json.loads((tmp_path / "r" / "report.json").read_text())["runs"][0]["loss"] is None


@pytest.mark.ray
def test_a_run_on_s3_loads_with_the_endpoint_given_as_an_option(two_tiny_runs, s3, monkeypatch):
    """`analyze s3://... --endpoint-url URL` with no AWS_ENDPOINT_URL: the run's metrics, config and
    floors are read with the endpoint given (they once went through a reader that took no options)."""
    from randommask.evaluation.analysis import load_source

    rm, _, _ = two_tiny_runs
    shutil.copytree(rm, s3.bucket("analysis-runs") / "randommask")
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    source = load_source("s3://analysis-runs/randommask", storage_options={"endpoint_url": s3.endpoint})
    assert source.history and source.history[-1]["step"] == 150
    assert source.config["run"]["name"] == "outputs" and source.floors["context_free"] > 0  # the tiny run's name
    assert (Path(source.model_dir) / "config.json").is_file()
