"""The command line on Ray: the demo end to end, the data-pipeline benchmark on a local S3 server (the
kernel benchmarks and one-line errors are in tests/unit/test_cli.py)."""

import json

from conftest import jsonl, run_cli


def test_demo_prepares_and_pretrains_on_the_real_genome(ecoli, tmp_path):
    """The demo's path (make demo) with its own config, shortened: prepare, pretrain, and a summary
    that puts the [MASK]-only losses beside both floors."""
    out = run_cli("demo", "--genome", ecoli, "--set", "optim.max_steps=10", "--set", "masking.phase_ends=[2,4,6,8,10]",
                  timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "4,938,920 bp prepared into outputs/prepared/ecoli_536" in out.stdout
    assert "done     10/10 steps" in out.stdout
    assert "eval     on [MASK] inputs, fixed validation masks: span-k " in out.stdout
    floors = next(line for line in out.stdout.splitlines() if line.startswith("floors   "))
    assert "context-free floor 8.1" in floors
    overlap = float(floors.split("overlap floor ~")[1].split()[0])
    assert 1.3 < overlap < 2.5  # 24-bp windows: spans clipped at the edges hide more than one base
    assert "nats below the context-free floor" in out.stdout
    final = next((tmp_path / "outputs" / "runs").glob("demo-*/final"))
    assert (final / "model.safetensors").exists() and (final / "vocab.txt").exists()
    # The demo's one worker computes on both cores (scaling.torch_threads), not on Ray's one-CPU default.
    assert [e["torch_threads"] for e in jsonl(final.parent / "events.jsonl")] == [2]


def test_bench_pipeline_streams_from_a_local_s3_server(ecoli):
    out = run_cli("bench", "pipeline", "--epochs", "1", "--genome", ecoli, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["bench"] == "pipeline" and r["tokens_per_s"] > 0 and r["ratio"] > 0
    assert set(r["per_chunk_stage_tokens_per_s"]) == {"read", "cut_filter_shuffle_rc", "tokenize"}


def test_bench_score_variants_agrees_with_a_gpn_style_loop():
    out = run_cli("bench", "score-variants", "--variants", "150", "--window-bp", "127", timeout=600)  # the packaged slice
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["bench"] == "score-variants" and r["variants"] == r["scored"] == 150
    assert r["max_abs_llr_diff"] < 1e-4  # the same scores: the comparison is of speed alone
    assert r["ratio"] > 0 and r["steady_ratio"] > 0 and r["ours_fixed_s"] > 0
