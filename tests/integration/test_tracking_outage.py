"""A tracking server that goes down mid-run and comes back costs the pretraining nothing, with one
warning, and gets everything it missed. The run is a `randommask pretrain` process with its own local
Ray cluster, and the server is its own (stopped and started again on its port and store), so the
outage touches nothing else in the suite (tests/streams.py runs this module beside the shared one)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from conftest import MLFLOW_SERVER, TINY_CONFIG, jsonl, metric_history, mlflow_run
from randommask.tools.mlflow_server import local_mlflow

pytestmark = pytest.mark.ray


def test_a_tracking_server_down_mid_run_costs_nothing_and_gets_what_it_missed(prepared, tmp_path):
    with local_mlflow(tmp_path / "mlflow", log=tmp_path / "server.log", executable=str(MLFLOW_SERVER)) as server:
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own local Ray cluster
        env["MLFLOW_TRACKING_URI"] = server.uri  # the standard variable, as users set it
        cmd = [sys.executable, "-m", "randommask", "pretrain", "--config", str(TINY_CONFIG),
               "--set", f"data.prepared={prepared}", "--set", f"run.storage_path={tmp_path}",
               "--set", "run.name=outage", "--set", "run.eval_every=25", "--set", "observability.progress=false",
               # long enough that the server is back (its start-up takes 15-30 s here) well before the end
               "--set", "optim.max_steps=300", "--set", "masking.phase_ends=[60,120,180,240,300]"]
        proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
        metrics = tmp_path / "outage" / "metrics.jsonl"

        def reached(step: int) -> bool:
            return metrics.exists() and any(x["step"] >= step for x in jsonl(metrics))

        try:
            deadline = time.monotonic() + 300
            while not reached(25):
                assert proc.poll() is None and time.monotonic() < deadline, "the run never reached step 25"
                time.sleep(0.2)
            server.stop()
            time.sleep(5)
            server.start()  # the same port and store; its start-up adds to the outage
            assert proc.poll() is None, "the run ended before the server came back"
            out, _ = proc.communicate(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == 0 and "done     300/300 steps" in out, out[-3000:]
        warnings = {x for x in out.splitlines() if "did not answer" in x}
        assert len(warnings) == 1, out[-3000:]
        client, run = mlflow_run(server.uri, str(tmp_path / "outage"))
        # the summary says where the run is and that nothing is missing
        assert f"tracking MLflow run {run.info.run_id} at {server.uri}\n" in out, out[-2000:]
        assert run.info.status == "FINISHED"
        lines = jsonl(metrics)
        assert metric_history(client, run.info.run_id, "loss") == [(x["step"], pytest.approx(x["loss"])) for x in lines]
