"""End to end: `ray start --head` with token auth, `ray job submit` of the pretraining job reading and
writing the local S3 server, Prometheus scrapes during the run, and the model loaded afterwards."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from randommask.masking import make_masker
from randommask.prepare import prepare
from randommask.s3server import free_port

pytestmark = pytest.mark.ray
REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def http_get(url: str, headers: dict | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""
    except OSError:
        return 0, ""


def gauge(text: str, name: str) -> float | None:
    m = re.search(rf"^{name}\{{[^}}]*\}} ([0-9.eE+-]+)$", text, re.M)
    return float(m.group(1)) if m else None


@pytest.fixture
def ray_head(tmp_path, s3):
    """A real Ray head started with `ray start --head --block`, token auth on, stopped by its PID."""
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token",
           "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "2", "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}
    env.pop("RAY_ADDRESS", None)
    token = subprocess.run([BIN / "ray", "get-auth-token", "--generate"], env=env, capture_output=True, text=True,
                           timeout=60)
    assert token.returncode == 0, token.stderr
    ports = {name: free_port() for name in ("gcs", "dash", "metrics", "client", "agent", "agent_grpc", "rt_env",
                                            "node", "object")}
    worker_lo = free_port() // 100 * 100 % 50000 + 10000
    proc = subprocess.Popen(
        [BIN / "ray", "start", "--head", "--block", f"--port={ports['gcs']}", "--dashboard-host=127.0.0.1",
         f"--dashboard-port={ports['dash']}", f"--metrics-export-port={ports['metrics']}",
         f"--ray-client-server-port={ports['client']}", f"--dashboard-agent-listen-port={ports['agent']}",
         f"--dashboard-agent-grpc-port={ports['agent_grpc']}", f"--runtime-env-agent-port={ports['rt_env']}",
         f"--node-manager-port={ports['node']}", f"--object-manager-port={ports['object']}",
         f"--min-worker-port={worker_lo}", f"--max-worker-port={worker_lo + 99}",
         "--num-cpus=2", "--disable-usage-stats"],
        env=env, stdout=open(tmp_path / "head.log", "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    address = f"http://127.0.0.1:{ports['dash']}"
    try:
        deadline = time.monotonic() + 120
        while http_get(f"{address}/api/version")[0] not in (200, 401):
            assert proc.poll() is None, (tmp_path / "head.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the Ray head did not come up"
            time.sleep(0.5)
        yield {"env": env, "address": address, "metrics_port": ports["metrics"], "proc": proc}
    finally:
        proc.send_signal(signal.SIGTERM)  # never `ray stop`: it kills every Ray process on the host
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        # `ray start` records its address for later "auto" lookups; a stopped head must not stay there.
        current = Path("/tmp/ray/ray_current_cluster")
        if current.exists() and current.read_text().strip().endswith(f":{ports['gcs']}"):
            current.unlink()


def test_job_submit_pretrains_from_s3_with_metrics_and_token_auth(ray_head, s3, ray_local, ecoli, tmp_path):
    s3.bucket("genomes")
    s3.bucket("runs")
    (s3.bucket("genomes") / ecoli.name).write_bytes(ecoli.read_bytes())
    prepare([f"s3://genomes/{ecoli.name}"], "s3://genomes/prepared-e2e", show_progress=False)
    env = ray_head["env"]

    # Without the token, the job server refuses.
    status, _ = http_get(f"{ray_head['address']}/api/jobs/")
    assert status == 401

    prom_port = free_port()
    cmd = [BIN / "ray", "job", "submit", "--address", ray_head["address"], "--working-dir", str(REPO),
           "--runtime-env", str(REPO / "jobs" / "runtime_env.yaml"), "--submission-id", "e2e", "--",
           "python", "jobs/pretrain.py", "--config", "jobs/configs/pretrain-tiny.yaml",
           "--set", "data.prepared=s3://genomes/prepared-e2e", "--set", "run.storage_path=s3://runs/pretrain",
           "--set", "run.name=e2e", "--set", "optim.max_steps=120",
           "--set", "masking.phase_ends=[20,40,60,80,100]", "--set", f"observability.prometheus_port={prom_port}"]
    job = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ray_seen = prom_seen = None
    deadline = time.monotonic() + 500
    while job.poll() is None and time.monotonic() < deadline:
        if ray_seen is None:
            _, text = http_get(f"http://127.0.0.1:{ray_head['metrics_port']}/metrics")
            step = gauge(text, "ray_randommask_step")
            if step:
                ray_seen = {"step": step, "loss": gauge(text, "ray_randommask_loss"),
                            "span": gauge(text, "ray_randommask_span_boundary"),
                            "tps": gauge(text, "ray_randommask_tokens_per_second")}
        if prom_seen is None:
            _, text = http_get(f"http://127.0.0.1:{prom_port}/metrics")
            step = gauge(text, "randommask_step")
            if step:
                prom_seen = {"step": step, "loss": gauge(text, "randommask_loss"),
                             "span": gauge(text, "randommask_span_boundary")}
        time.sleep(0.5)
    output = job.communicate(timeout=60)[0]
    assert job.returncode == 0, output[-4000:]
    assert "Job 'e2e' succeeded" in output
    assert "done     120/120 steps" in output

    # Prometheus: Ray's endpoint (what KubeRay's PodMonitor scrapes) and prometheus_client, mid-run.
    assert ray_seen is not None, "ray_randommask_* never appeared on Ray's metrics endpoint"
    assert 0 < ray_seen["step"] <= 120 and 0 < ray_seen["loss"] < 9 and 6 <= ray_seen["span"] <= 14
    assert ray_seen["tps"] > 0
    assert prom_seen is not None and 0 < prom_seen["step"] <= 120 and 0 < prom_seen["loss"] < 9

    # What the job wrote to S3 (the rclone root is the bucket's backing store).
    run = s3.root / "runs" / "pretrain" / "e2e"
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    masker = make_masker("randommask", 6, phase_ends=[20, 40, 60, 80, 100])
    assert metrics[-1]["step"] == 120
    assert all(x["span_max"] == masker.span_bounds(x["step"] - 1)[1] for x in metrics)
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    model = AutoModelForMaskedLM.from_pretrained(run / "final")
    assert model.config.vocab_size == 4101
    assert AutoTokenizer.from_pretrained(run / "final").convert_tokens_to_ids("AAAAAA") == 5
    # no credential anywhere in what the run wrote, or in the job's log
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    for f in run.rglob("*"):
        if f.is_file() and f.suffix in (".json", ".jsonl", ".yaml", ".txt"):
            assert secret not in f.read_text(errors="replace"), f
    assert secret not in output
