"""Object-storage faults do not kill a run: a pretraining that streams its data from a real S3
server (rclone) and writes its checkpoints and metrics there rides out three 12-second outages,
each starting at an exact point of the checkpoint cycle (tests/outage.py): before a worker's upload,
between the upload and the Ray Train controller's registration (its snapshot write), and during the
controller's deletion of an old checkpoint. ``run.max_failures`` is 0, so the run survives by
waiting the outages out, not by restarting. The run uses its own S3 server and its own Ray cluster
(a `randommask pretrain` process), so the outages touch nothing else in the suite."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from conftest import TINY_CONFIG, jsonl
from outage import OutageProxy, Trigger
from randommask.tools.s3server import local_s3

pytestmark = pytest.mark.ray
KEY, SECRET = "fault-test-key", "fault-test-secret"
RUN = rb"/rm/runs/outage/"
TRIGGERS = [
    Trigger("before the worker's upload of step 40", at=rb"^PUT " + RUN + rb"step_00000040/"),
    Trigger("between the upload of step 80 and its registration", after=[rb"^PUT " + RUN + rb"step_00000080/"],
            at=rb"^PUT " + RUN + rb"checkpoint_manager_snapshot\.json"),
    Trigger("during the deletion of an old checkpoint", after=[rb"^PUT " + RUN + rb"step_00000100/"],
            at=rb"^(POST /rm/?\?delete|DELETE " + RUN + rb"step_)"),
]


def test_pretraining_rides_out_s3_outages_at_each_point_of_the_checkpoint_cycle(prepared, tmp_path):
    import torch

    root = tmp_path / "s3"
    with local_s3(root, KEY, SECRET, log=tmp_path / "rclone.log") as server:
        # rclone serves a directory: the prepared dataset copied into the bucket is its objects.
        shutil.copytree(prepared, server.bucket("rm") / "prepared")
        proxy = OutageProxy(server, TRIGGERS, seconds=12)
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own local Ray cluster
        env.update(proxy.env())
        run = root / "rm" / "runs" / "outage"
        cmd = [sys.executable, "-m", "randommask", "pretrain", "--config", str(TINY_CONFIG),
               "--set", "data.prepared=s3://rm/prepared", "--set", "run.storage_path=s3://rm/runs",
               "--set", "run.name=outage", "--set", "optim.max_steps=120", "--set", "run.checkpoint_every=20",
               "--set", "run.eval_every=40", "--set", "masking.phase_ends=[24,48,72,96,120]",
               "--set", "run.max_failures=0", "--set", "observability.progress=false"]
        proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        try:
            deadline = time.monotonic() + 300
            while proxy.fired()[TRIGGERS[0].name] is None:
                assert proc.poll() is None and time.monotonic() < deadline, "the run never reached step 40"
                time.sleep(0.2)
            # Mid-run (the server down), metrics.jsonl is one complete file with one row per logged step.
            mid = [x["step"] for x in jsonl(run / "metrics.jsonl")]
            assert mid == list(range(5, mid[-1] + 1, 5)) and mid[-1] >= 20
            out, _ = proc.communicate(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
            proxy.close()
        fired = proxy.fired()
        assert all(fired.values()), f"not every outage started: {fired}; requests seen: {proxy.requests[-40:]}"
        assert proc.returncode == 0, out[-3000:]
        assert "done     120/120 steps" in out, out[-3000:]
        assert "retry" in out  # the storage layer said it was waiting

        # Finished at the right step, each logged step exactly once, without a restart.
        lines = jsonl(run / "metrics.jsonl")
        assert [x["step"] for x in lines] == list(range(5, 121, 5))
        gaps = sorted(b["time"] - a["time"] for a, b in zip(lines, lines[1:]))
        for name, t in fired.items():  # the failure table's figures: 0 steps lost, a pause
            a, b = next((a, b) for a, b in zip(lines, lines[1:]) if a["time"] <= t < b["time"])
            print(f"\nFAULT S3 down 12 s {name}: 0 steps lost, training paused about "
                  f"{max(0.0, b['time'] - a['time'] - gaps[len(gaps) // 2]):.0f} s")
        events = jsonl(run / "events.jsonl")
        assert [e["event"] for e in events if e["event"] in ("start", "resume")] == ["start"]
        assert (run / "final" / "model.safetensors").exists()
        # Every checkpoint the controller registered is whole (what a resume would load); the old
        # ones it deleted during an outage are gone.
        snapshot = (run / "checkpoint_manager_snapshot.json").read_text()
        registered = [d for d in sorted(run.glob("step_*")) if d.name in snapshot]
        assert [d.name for d in registered] == ["step_00000100", "step_00000120"]
        assert sorted(d.name for d in run.glob("step_*")) == ["step_00000100", "step_00000120"]
        for d in registered:
            state = torch.load(d / "trainer_state.pt", map_location="cpu", weights_only=True)
            assert state["step"] == int(d.name.split("_")[1]) and (d / "model" / "model.safetensors").exists()
