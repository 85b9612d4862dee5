"""A real multi-node Ray cluster on this machine (tests/raycluster.py): a head with no CPUs and two
2-CPU worker nodes `a` and `b` with the custom resource ``trainer``, token auth on, shared by the
tests of this module. Workers reach the worker nodes only through ``scaling.resources_per_worker``.

- a worker node lost mid-run (SIGKILL to all its processes): the run resumes on the other node from
  its last checkpoint, finishes at its step with each step logged once, and sees the same batches
  after the resume as before the loss; the node then joins again;
- a drain for preemption with a 30 s deadline, requested with `ray drain-node` and by SIGTERM to a
  node's `ray start` (a pod deleted on a reclaimed spot node): a checkpoint at the next step, nothing
  trained after it, and the run resumes there on the other node (also the node that joined again);
  then a preemption drain of the node without the worker changes nothing (Ray removes it at once
  when nothing runs on it; else the autoscaler's idle drain follows).

Each test prints its measured figures (steps lost, seconds from the fault to training again); the
failure table in docs/pretraining.md comes from them. The driver is a `randommask pretrain` process
joined to this cluster, never the suite's in-process one (two clusters' drivers must not mix)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import TINY_CONFIG, fault_figures, jsonl, step_at
from raycluster import RayHead

pytestmark = pytest.mark.ray
NODES = ("a", "b")
LOG_EVERY = 5
POLL_S = 1  # Ray Train's drain watcher's poll interval on this cluster
NOTICE_SLACK_S = 5  # beyond the poll: the watcher's GCS call and the broadcast to the workers, on 2 loaded cores
# What a Kubernetes pod on spot capacity would set (the pod's grace period a little longer): on SIGTERM
# Ray drains the node for preemption with this deadline before it stops.
SPOT_ENV = {"RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "30"}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The module's cluster (torn down when the module ends)."""
    root = tmp_path_factory.mktemp("multinode")
    # Ray Train's watcher polls drains every 5 s by default; 1 s keeps the test's notice prompt.
    head = RayHead(root / "home", root / "head.log", num_cpus=0, extra=("--object-store-memory=300000000",),
                   env={"RAY_TRAIN_PREEMPTION_POLL_INTERVAL_S": str(POLL_S)})
    try:
        for name in NODES:
            head.add_node(name, num_cpus=2, resources={"trainer": 1}, env=SPOT_ENV)
        yield head
    finally:
        head.stop()


class Run:
    """A tiny `randommask pretrain` on the cluster, workers placed by ``resources_per_worker``."""

    def __init__(self, head: RayHead, prepared: str, storage: Path, name: str, *overrides: str) -> None:
        self.dir = storage / name
        self.log = storage / f"{name}.out"
        storage.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "randommask", "pretrain", "--config", str(TINY_CONFIG),
               "--set", f"data.prepared={prepared}", "--set", f"run.storage_path={storage}",
               "--set", f"run.name={name}", "--set", "scaling.resources_per_worker={trainer: 1}",
               "--set", f"run.log_every={LOG_EVERY}", "--set", "observability.progress=false",
               "--set", "observability.ray_metrics=false", *[x for o in overrides for x in ("--set", o)]]
        self.proc = subprocess.Popen(cmd, env=head.driver_env(), stdout=open(self.log, "wb"),
                                     stderr=subprocess.STDOUT, cwd=storage)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def events(self) -> list[dict]:
        path = self.dir / "events.jsonl"
        return jsonl(path) if path.exists() else []

    def registered(self) -> str:
        path = self.dir / "checkpoint_manager_snapshot.json"
        return path.read_text() if path.exists() else ""

    def wait_for(self, what: str, cond, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            assert self.proc.poll() is None, f"the run ended before {what}: {self.output()[-3000:]}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {self.output()[-3000:]}"
            time.sleep(0.2)

    def finish(self, timeout: float = 600) -> None:
        try:
            self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        assert self.proc.returncode == 0, self.output()[-4000:]

    def metrics(self) -> list[dict]:
        return jsonl(self.dir / "metrics.jsonl")


def seen(run: Run) -> list[dict]:
    """The run's metrics lines as metrics.jsonl shows them now (read mid-run)."""
    try:
        return run.metrics()
    except (FileNotFoundError, json.JSONDecodeError):
        return []


def last_step(run: Run) -> int:
    return max((x["step"] for x in seen(run)), default=0)


def test_a_lost_worker_node_costs_at_most_one_checkpoint_interval(cluster, prepared, tmp_path):
    # eval every 10 steps flushes metrics.jsonl often, so the test sees the batches before the loss
    run = Run(cluster, prepared, tmp_path / "runs", "lost", "optim.max_steps=120", "run.checkpoint_every=40",
              "run.eval_every=10", "run.max_failures=2", "masking.phase_ends=[24,48,72,96,120]")
    run.wait_for("step 40's checkpoint", lambda: "step_00000040" in run.registered())
    first = run.events()[0]
    victim = cluster.name_of(first["node"])
    assert first["event"] == "start" and victim in NODES
    run.wait_for("step 60", lambda: last_step(run) >= 60)
    first_lines = seen(run)
    before = {x["step"]: x["batch_crc"] for x in first_lines}
    killed_at = time.time()
    cluster.workers[victim].kill()
    run.wait_for("the resume", lambda: any(e["event"] == "resume" for e in run.events()))
    cluster.add_node(victim, num_cpus=2, resources={"trainer": 1}, env=SPOT_ENV)  # the node joins again
    cluster.rejoined = cluster.node_id(victim)  # the next test checks that it is used
    run.finish()

    resume = [e for e in run.events() if e["event"] == "resume"]
    assert len(resume) == 1 and resume[0]["step"] == 40
    assert cluster.name_of(resume[0]["node"]) not in (victim, None)  # the surviving node
    lines = run.metrics()
    assert [x["step"] for x in lines] == list(range(5, 121, 5))  # finished, each step once
    # After the resume the data stream is the one the lost node had: the same batches, step by step
    # (blocks lost with the node were recomputed, none skipped).
    after = {x["step"]: x["batch_crc"] for x in lines}
    replayed = [s for s in before if s > 40]
    assert replayed and all(after[s] == before[s] for s in replayed), (before, after)
    fault_figures("worker node lost (SIGKILL to every process of it)", lines, killed_at, resume[0])


def test_drain_notices_checkpoint_at_once_and_the_run_moves(cluster, prepared, tmp_path):
    """Two notices in one run, each with a 30 s deadline: first `ray drain-node` (what KubeRay's
    autoscaler or a cloud's termination handler sends), then SIGTERM to the node's `ray start`, which
    is what Kubernetes sends a pod on a reclaimed spot node: Ray drains the node itself for
    preemption, for RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S (30 s on these nodes), then exits. Last,
    drains of the node without the worker, which must change nothing."""
    # Periodic checkpoints far apart (none before the end), as on a GPU cluster with 15-minute ones.
    run = Run(cluster, prepared, tmp_path / "runs", "drained", "optim.max_steps=160", "run.checkpoint_every=1000",
              "run.checkpoint_minutes=null", "run.eval_every=20", "masking.phase_ends=[32,64,96,128,160]",
              # A node that stops itself at the deadline can be seen dead before the deadline passes:
              # then Ray Train counts a failure, not a preemption (the resume is the same).
              "run.max_failures=2")

    def notices() -> list[dict]:
        return [e for e in run.events() if e["event"] == "preemption"]

    def resumes() -> list[dict]:
        return [e for e in run.events() if e["event"] == "resume"]

    run.wait_for("step 40", lambda: last_step(run) >= 40)
    first = cluster.name_of(run.events()[0]["node"])
    drained = cluster.drain(first, "DRAIN_NODE_REASON_PREEMPTION", deadline_s=30)
    asked_at = [time.time()]  # the GCS has the request once the command returns
    assert drained.returncode == 0, drained.stderr[-2000:]
    run.wait_for("the first notice", lambda: len(notices()) == 1, timeout=60)
    # The cloud takes the node at the deadline; Ray Train restarts the run on a node that is not draining.
    time.sleep(max(0.0, asked_at[0] + 30 - time.time()))
    cluster.workers[first].kill()
    run.wait_for("the first resume", lambda: len(resumes()) == 1, timeout=300)
    cluster.add_node(first, num_cpus=2, resources={"trainer": 1}, env=SPOT_ENV)

    run.wait_for("step 100", lambda: last_step(run) >= 100)
    second = cluster.name_of(resumes()[0]["node"])
    asked_at.append(time.time())
    cluster.workers[second].terminate()  # the kubelet's SIGTERM; the node goes by itself after 30 s
    run.wait_for("the second notice", lambda: len(notices()) == 2, timeout=60)
    run.wait_for("the second resume", lambda: len(resumes()) == 2, timeout=300)
    cluster.workers[second].proc.wait(60)
    cluster.add_node(second, num_cpus=2, resources={"trainer": 1}, env=SPOT_ENV)
    # Drains of the node that just joined, which runs no Train worker, must change nothing for the
    # run. A preemption notice for it is never refused (Ray Train acts only on its own workers'
    # nodes); Ray then removes the node at once if nothing runs on it (death reason
    # AUTOSCALER_DRAIN_PREEMPTED), or when it is idle or the deadline passes. If it is still there,
    # the autoscaler's idle drain follows (accepted, and the node goes, or refused while a task runs).
    other = cluster.drain(second, "DRAIN_NODE_REASON_PREEMPTION", deadline_s=600)
    assert other.returncode == 0, other.stderr[-2000:]
    time.sleep(5)
    idle = None if cluster.node_id(second) is None else cluster.drain(
        second, "DRAIN_NODE_REASON_IDLE_TERMINATION", deadline_s=30)
    run.finish()

    events, lines = run.events(), run.metrics()
    assert [e["event"] for e in events] == ["start", "preemption", "resume", "preemption", "resume"], idle
    steps = [x["step"] for x in lines]
    saved = [e["step"] for e in notices()]
    assert steps == sorted(set(range(5, 161, 5)) | set(saved)) and steps[-1] == 160  # each step once
    for notice, resume, t, doomed, how in zip(notices(), resumes(), asked_at, (first, second),
                                              ("ray drain-node", "SIGTERM to ray start")):
        # When the request was made: its deadline less the 30 s it gave, as the requester stamped it
        # (the test's own clock reads the drain command's return, seconds late on a loaded machine).
        requested = notice["deadline"] - 30
        assert abs(requested - t) < 15, (how, requested, t)  # the notice is for this request
        asked_step = step_at(lines, requested)
        # Noticed within one poll of the watcher (and some slack), not before the request (the event's
        # time is rounded to 0.1 s); checkpointed at the step it was noticed (the steps above: nothing
        # trained after it), resumed there. The bound is in seconds, not steps: at 7 steps/s one 1 s
        # poll is more than a log interval.
        assert -0.1 <= notice["time"] - requested <= POLL_S + NOTICE_SLACK_S, (how, requested, notice)
        assert asked_step <= notice["step"], (how, asked_step, notice)
        assert resume["step"] == notice["step"] and cluster.name_of(resume["node"]) not in (doomed, None)
        fault_figures(f"node drained for preemption ({how}), 30 s deadline", lines, requested, resume)
        print(f"notice: requested at step {asked_step:.1f}, checkpoint at step {notice['step']}, "
              f"{notice['time'] - requested:.1f} s after the request")
    # The run used both nodes, so also the one that was lost in the previous test and joined again.
    if getattr(cluster, "rejoined", None):
        assert cluster.rejoined in {e["node"] for e in events if "node" in e}
    print("preemption drain of the node without workers: accepted, not noticed; "
          + ("the node left at once" if idle is None else
             f"its idle drain: {(idle.stdout + idle.stderr).strip()[-200:] or 'accepted'}"))
    # (nodes on one machine share Ray's log directory, so each node's log monitor repeats a line)
    assert len({x for x in run.output().splitlines() if "preemption notice" in x}) == 2
