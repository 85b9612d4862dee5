"""End to end: `ray start --head` with token auth, `ray job submit` of the pretraining job reading and
writing the local S3 server, Prometheus scrapes during the run, and the model loaded afterwards."""

import os
import re
import subprocess
import time

import pytest

from conftest import REPO, fault_figures, jsonl
from randommask.data.prepare import prepare
from randommask.tools.s3server import free_port
from randommask.training.masking import make_masker
from raycluster import BIN, RayHead, http_get

pytestmark = pytest.mark.ray


def gauge(text: str, name: str) -> float | None:
    m = re.search(rf"^{name}\{{[^}}]*\}} ([0-9.eE+-]+)$", text, re.M)
    return float(m.group(1)) if m else None


@pytest.fixture
def ray_head(tmp_path, s3):
    head = RayHead(tmp_path / "home", tmp_path / "head.log")
    try:
        yield {"env": head.env, "address": head.address, "metrics_port": head.metrics_port, "proc": head.proc}
    finally:
        head.stop()


@pytest.fixture(scope="module")
def ecoli_on_s3(s3, ray_local, ecoli) -> str:
    """E. coli prepared S3 -> S3 once for this module's jobs (each writes its own run; they only read it)."""
    s3.bucket("runs")
    (s3.bucket("genomes") / ecoli.name).write_bytes(ecoli.read_bytes())
    prepare([f"s3://genomes/{ecoli.name}"], "s3://genomes/prepared-jobs", show_progress=False)
    return "s3://genomes/prepared-jobs"


def test_job_submit_pretrains_from_s3_with_metrics_and_token_auth(ray_head, s3, ecoli_on_s3, tmp_path):
    env = ray_head["env"]

    # Without the token, the job server refuses.
    status, _ = http_get(f"{ray_head['address']}/api/jobs/")
    assert status == 401

    prom_port = free_port()
    cmd = [BIN / "ray", "job", "submit", "--address", ray_head["address"], "--working-dir", str(REPO),
           "--runtime-env", str(REPO / "jobs" / "runtime_env.yaml"), "--submission-id", "e2e", "--",
           "python", "jobs/pretrain.py", "--config", "jobs/configs/pretrain-tiny.yaml",
           "--set", f"data.prepared={ecoli_on_s3}", "--set", "run.storage_path=s3://runs/pretrain",
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
    metrics = jsonl(run / "metrics.jsonl")
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


def test_a_retried_job_on_a_new_head_resumes_from_the_checkpoint_on_s3(s3, ecoli_on_s3, tmp_path):
    """What KubeRay does when a RayJob's head pod is lost: the cluster is gone, a retry brings up a
    new one and submits the same entrypoint again. The new driver must continue from the run's
    latest checkpoint on S3, not start over (kuberay#2155)."""
    entrypoint = ["python", "jobs/pretrain.py", "--config", "jobs/configs/pretrain-tiny.yaml",
                  "--set", f"data.prepared={ecoli_on_s3}", "--set", "run.storage_path=s3://runs/k8s",
                  "--set", "run.name=retry", "--set", "optim.max_steps=80", "--set", "run.checkpoint_every=20",
                  "--set", "run.log_every=5", "--set", "masking.phase_ends=[16,32,48,64,80]"]

    def submit(head: RayHead, attempt: int, wait: bool) -> subprocess.CompletedProcess:
        cmd = [BIN / "ray", "job", "submit", "--address", head.address, "--working-dir", str(REPO),
               "--runtime-env", str(REPO / "jobs" / "runtime_env.yaml"), "--submission-id", f"retry-{attempt}",
               *([] if wait else ["--no-wait"]), "--", *entrypoint]
        return subprocess.run(cmd, env=head.env, cwd=REPO, capture_output=True, text=True, timeout=600)

    run = s3.root / "runs" / "k8s" / "retry"
    snapshot = run / "checkpoint_manager_snapshot.json"
    first = RayHead(tmp_path / "home", tmp_path / "head1.log")
    try:
        assert submit(first, 1, wait=False).returncode == 0
        deadline = time.monotonic() + 400
        while not (snapshot.exists() and "step_00000040" in snapshot.read_text()) and time.monotonic() < deadline:
            time.sleep(0.3)
        assert snapshot.exists() and "step_00000040" in snapshot.read_text(), "no registered checkpoint on S3"
    finally:
        lost_at = time.time()
        first.stop(lose=True)  # the head pod is gone, with its GCS, its driver and its workers
    assert not (run / "final").exists()

    second = RayHead(tmp_path / "home", tmp_path / "head2.log")
    try:
        res = submit(second, 2, wait=True)
    finally:
        second.stop()
    assert res.returncode == 0 and "Job 'retry-2' succeeded" in res.stdout, res.stdout[-4000:] + res.stderr[-2000:]
    events = jsonl(run / "events.jsonl")
    assert events[0]["event"] == "start" and events[-1]["event"] == "resume"
    assert events[-1]["step"] >= 40 and events[-1]["step"] % 20 == 0
    assert f"resumed from step {events[-1]['step']}" in res.stdout
    metrics = jsonl(run / "metrics.jsonl")
    assert [x["step"] for x in metrics] == list(range(5, 81, 5))  # each step once, none replayed from 0
    # the seconds include starting a new head and submitting again, as KubeRay's retry does
    fault_figures("head lost (its process group SIGKILLed), job resubmitted", metrics, lost_at, events[-1])
    assert (run / "final" / "model.safetensors").exists()
