"""Object-storage faults do not kill a run: a pretraining that streams its data from a real S3
server (rclone) and writes its checkpoints and metrics there survives the server going down for
12 s mid-run and coming back on the same port. The run uses its own S3 server and its own Ray
cluster (a `randommask pretrain` process), so the outage touches nothing else in the suite."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from conftest import TINY_CONFIG, jsonl
from randommask.tools.s3server import local_s3

pytestmark = pytest.mark.ray
KEY, SECRET = "fault-test-key", "fault-test-secret"


def test_pretraining_rides_out_an_s3_outage(prepared, tmp_path):
    import torch

    root = tmp_path / "s3"
    with local_s3(root, KEY, SECRET, log=tmp_path / "rclone.log") as server:
        # rclone serves a directory: the prepared dataset copied into the bucket is its objects.
        shutil.copytree(prepared, server.bucket("rm") / "prepared")
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own local Ray cluster
        env.update(server.env())
        run = root / "rm" / "runs" / "outage"
        cmd = [sys.executable, "-m", "randommask", "pretrain", "--config", str(TINY_CONFIG),
               "--set", "data.prepared=s3://rm/prepared", "--set", "run.storage_path=s3://rm/runs",
               "--set", "run.name=outage", "--set", "optim.max_steps=120", "--set", "run.checkpoint_every=20",
               "--set", "run.eval_every=40", "--set", "masking.phase_ends=[24,48,72,96,120]",
               "--set", "observability.progress=false"]
        proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        try:
            snapshot = run / "checkpoint_manager_snapshot.json"
            deadline = time.monotonic() + 300
            while not (snapshot.exists() and "step_00000040" in snapshot.read_text()):
                assert proc.poll() is None and time.monotonic() < deadline, "the run never reached step 40"
                time.sleep(0.2)
            # Mid-run, metrics.jsonl is one complete file with one row per logged step.
            mid = [x["step"] for x in jsonl(run / "metrics.jsonl")]
            assert mid == list(range(5, mid[-1] + 1, 5)) and mid[-1] >= 40
            server.stop()
            time.sleep(12)
            server.start()  # the same port
            out, _ = proc.communicate(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0, out[-3000:]
        assert "done     120/120 steps" in out, out[-3000:]

        # Finished at the right step, each logged step exactly once: nothing lost, nothing repeated.
        steps = [x["step"] for x in jsonl(run / "metrics.jsonl")]
        assert steps == list(range(5, 121, 5))
        events = jsonl(run / "events.jsonl")
        assert events[0]["event"] == "start"
        assert (run / "final" / "model.safetensors").exists()
        # Every checkpoint the controller registered is whole (what a resume would load).
        registered = [d for d in sorted(run.glob("step_*")) if d.name in snapshot.read_text()]
        assert registered
        for d in registered:
            state = torch.load(d / "trainer_state.pt", map_location="cpu", weights_only=False)
            assert state["step"] == int(d.name.split("_")[1]) and (d / "model" / "model.safetensors").exists()
