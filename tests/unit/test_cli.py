import json
import subprocess
import sys


def run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "randommask", *args], capture_output=True, text=True, timeout=timeout)


def test_bench_tokenize_mask_and_mlm_step_print_json(ecoli):
    out = run("bench", "tokenize", "--windows", "200", "--genome", str(ecoli))
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["bench"] == "tokenize" and r["ratio"] > 0 and r["ours_tokens_per_s"] > 0

    out = run("bench", "mask", "--batch", "8", "--genome", str(ecoli))
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["bench"] == "mask" and r["span_bounds"] == [6, 14] and r["ratio"] > 0

    out = run("bench", "mlm-step", "--batch", "2", "--seq-len", "128", "--steps", "1", "--genome", str(ecoli))
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["bench"] == "mlm-step" and r["loss_abs_diff"] < 1e-4 and r["ratio"] > 0  # a measurement, not a timed test


def test_demo_prepares_and_pretrains_on_the_real_genome(ecoli, tmp_path):
    """The demo's path (make demo) with its own config, shortened: prepare, pretrain, and a summary
    that puts the [MASK]-only losses beside both floors."""
    out = subprocess.run([sys.executable, "-m", "randommask", "demo", "--genome", str(ecoli),
                          "--set", "optim.max_steps=10", "--set", "masking.phase_ends=[2,4,6,8,10]"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
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


def test_missing_genome_is_one_clear_line(tmp_path):
    out = run("demo", "--genome", str(tmp_path / "nope.fa"))
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "nope.fa" in out.stderr and "Traceback" not in out.stderr
    bad = tmp_path / "bad.fa"
    bad.write_text("hello\n")
    out = run("bench", "tokenize", "--genome", str(bad))
    assert out.returncode == 2 and "no '>' header" in out.stderr


def test_bench_pipeline_streams_from_a_local_s3_server(ecoli):
    out = run("bench", "pipeline", "--epochs", "1", "--genome", str(ecoli), timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["bench"] == "pipeline" and r["tokens_per_s"] > 0 and r["ratio"] > 0
    assert set(r["per_chunk_stage_tokens_per_s"]) == {"read", "cut_filter_shuffle_rc", "tokenize"}
