"""Multi-worker training on CPU over gloo: the code a GPU cluster runs (DDP, no_sync with gradient
accumulation, gathered checkpoints, the evaluation all-reduce), with 2 Ray Train workers on
fractional CPUs of one real local Ray cluster."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
import time
import zlib
from pathlib import Path

import pytest

from conftest import fault_figures, jsonl, load_tiny
from randommask.training.driver import pretrain
from randommask.training.masking import make_masker

pytestmark = pytest.mark.ray
TWO = ["scaling.num_workers=2", "scaling.cpus_per_worker=0.5"]


class RankReports:
    """A Ray Train callback (it runs in the controller) that appends every report's per-rank metrics
    to a local file the test reads."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __getattr__(self, name):
        if name.startswith(("before_", "after_")):  # every other hook of UserCallback: nothing to do
            return lambda *args, **kwargs: None
        raise AttributeError(name)

    def after_report(self, run_context, metrics, checkpoint) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(metrics) + "\n")


@pytest.fixture(scope="module")
def reports_callback():
    import ray.cloudpickle
    import ray.train

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the controller cannot import tests/

    class Callback(RankReports, ray.train.UserCallback):
        pass

    return Callback


class MetricsWatcher:
    """Polls this Ray node's metrics endpoint every second in a thread while a run goes on, and keeps
    every line of ``name`` it saw. The controller's series leave the endpoint when the controller
    actor exits, so one scrape after the run races Ray's export interval."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: set[str] = set()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.poll, daemon=True)

    def scrape(self) -> None:
        import urllib.request

        import ray

        for node in ray.nodes():
            if not node["Alive"]:
                continue
            try:
                url = f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"
                text = urllib.request.urlopen(url, timeout=10).read().decode()
            except OSError:
                continue  # the agent not up yet; the next poll tries again
            self.seen.update(x for x in text.splitlines() if x.startswith(self.name + "{"))

    def poll(self) -> None:
        while not self.stopped.wait(1.0):
            self.scrape()

    def __enter__(self) -> "MetricsWatcher":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopped.set()
        self.thread.join()

    def wait_for(self, pattern: str, count: int, timeout: float, line_has: str = "") -> set[str]:
        """The distinct matches of ``pattern`` in the lines seen that contain ``line_has``, once
        there are ``count`` of them (or the timeout passed)."""
        deadline = time.monotonic() + timeout
        while True:
            found = {t for line in list(self.seen) if line_has in line for t in re.findall(pattern, line)}
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(1.0)


def shard_crcs(cfg, rank: int, world: int, steps: int) -> list[int]:
    """The batch_crc each step of rank ``rank`` must log: its own shard of epoch 0, read straight
    from the data layer, ``grad_accum`` micro-batches per step."""
    from randommask.data.stream import pretraining_dataset

    o = cfg.optim
    ds = pretraining_dataset(cfg.data, "train", seed=cfg.run.seed, epoch=0, num_shards=world, shard_index=rank)
    batches = []
    for b in ds.iter_torch_batches(batch_size=o.batch_size, drop_last=True):
        batches.append(b["input_ids"])
        if len(batches) == steps * o.grad_accum:
            break
    out = []
    for s in range(steps):
        crc = 0
        for m in range(o.grad_accum):
            crc = zlib.crc32(batches[s * o.grad_accum + m].numpy(), crc)
        out.append(crc)
    return out


def test_two_workers_with_accumulation_stay_in_step_and_resume_on_one(prepared, tmp_path, ray_local,
                                                                      reports_callback):
    # eval_windows=1: rank 1 holds no evaluation row and must still join the all-reduce, not hang.
    common = ["optim.max_steps=20", "optim.grad_accum=2", "run.log_every=1", "run.checkpoint_every=5",
              "run.eval_every=5", "run.eval_windows=1", "masking.phase_ends=[4,8,12,16,20]"]
    cfg = load_tiny(prepared, tmp_path, "mw", *common, *TWO, "run.stop_after=10")
    log = tmp_path / "reports.jsonl"
    with MetricsWatcher("ray_randommask_rank_tokens_per_second") as watcher:
        summary = pretrain(cfg, callbacks=[reports_callback(str(log))])
        ranks_exported = watcher.wait_for(r'rank="\d+"', 2, timeout=30, line_has='run="mw"')
    assert summary["step"] == 10 and not summary["finished"]

    reports = jsonl(log)
    assert [[m["step"] for m in r] for r in reports] == [[5, 5], [10, 10]]
    expected = {rank: shard_crcs(cfg, rank, 2, 10) for rank in (0, 1)}
    assert set(expected[0]).isdisjoint(expected[1])  # different windows on each rank
    for r in reports:
        rank0, rank1 = r
        # DDP averaged the gradients: after every step both ranks hold the same weights.
        assert rank0["param_checksum"] == pytest.approx(rank1["param_checksum"], rel=1e-12, abs=1e-9)
        # The global step drives the schedule on both ranks.
        assert (rank0["span_min"], rank0["span_max"]) == (rank1["span_min"], rank1["span_max"])
        expect_span = make_masker(cfg.masking.strategy, cfg.data.k, **cfg.masking.params()).span_bounds(r[0]["step"] - 1)
        assert (rank0["span_min"], rank0["span_max"]) == expect_span
        # Each rank trained on its own shard of the epoch, in plan order.
        for rank in (0, 1):
            assert r[rank]["batch_crc"] == expected[rank][r[rank]["step"] - 1], (rank, r[rank]["step"])
        # Evaluation with a rank holding no row finished (no hang) and all-reduced one figure to both ranks.
        assert rank0["eval_span_k_loss"] == rank1["eval_span_k_loss"]
        # Each rank's own throughput and data wait (stragglers show here), adding up to the run's.
        assert all(x["rank_tokens_per_s"] > 0 and 0 <= x["rank_data_wait"] <= 1 for x in r)
        assert rank0["rank_tokens_per_s"] + rank1["rank_tokens_per_s"] == pytest.approx(rank0["tokens_per_s"], rel=0.3)
        assert "gpu_memory_bytes" not in rank0 and "mfu" not in rank0  # CPU: no GPU memory, no known peak
    assert "checkpoint_s" not in reports[0][0] and reports[1][0]["checkpoint_s"] > 0  # the step-5 checkpoint's time
    # The controller (not a rank) exported them through Ray's metrics endpoint, per rank, tagged by run.
    assert {'rank="0"', 'rank="1"'} <= ranks_exported
    m = jsonl(tmp_path / "mw" / "metrics.jsonl")
    tokens_per_window = cfg.data.window_bp - cfg.data.k + 3  # k-mers + [CLS] + [SEP]
    assert m[-1]["tokens"] == 10 * 2 * 2 * cfg.optim.batch_size * tokens_per_window  # both ranks, both micro-batches

    # Resume the 2-worker run on 1 worker: the documented behaviour is that the current epoch restarts.
    summary = pretrain(load_tiny(prepared, tmp_path, "mw", *common))
    assert summary["finished"] and summary["step"] == 20
    events = jsonl(tmp_path / "mw" / "events.jsonl")
    assert [(e["event"], e["step"], e["workers"]) for e in events] == [("start", 0, 2), ("resume", 10, 1)]
    assert events[1]["sample"] == 0 and events[1]["epoch"] == events[0]["epoch"]
    assert [x["step"] for x in jsonl(tmp_path / "mw" / "metrics.jsonl")] == list(range(1, 21))


def test_one_worker_resumes_on_two(prepared, tmp_path, ray_local):
    common = ["optim.max_steps=16", "run.log_every=4", "run.checkpoint_every=8", "run.eval_every=8",
              "masking.phase_ends=[4,8,12,14,16]"]
    # The first leg checkpoints by wall-clock time (at every log step here), not by step count.
    pretrain(load_tiny(prepared, tmp_path, "grow", *common, "run.stop_after=8", "run.checkpoint_every=1000",
                       "run.checkpoint_minutes=0.0001"))
    assert sorted(p.name for p in (tmp_path / "grow").glob("step_*")) == ["step_00000004", "step_00000008"]
    summary = pretrain(load_tiny(prepared, tmp_path, "grow", *common, *TWO))
    assert summary["finished"] and summary["step"] == 16
    events = jsonl(tmp_path / "grow" / "events.jsonl")
    assert [(e["event"], e["step"], e["workers"], e["sample"]) for e in events] == [
        ("start", 0, 1, 0), ("resume", 8, 2, 0)]
    m = jsonl(tmp_path / "grow" / "metrics.jsonl")
    assert [x["step"] for x in m] == [4, 8, 12, 16]
    assert m[-1]["eval_span_k_loss"] is not None


def _train_worker_pids():
    """PIDs of this cluster's live Ray Train workers (Ray names them ray::RayTrainWorker...); workers
    of any other Ray cluster on the host are left alone (their raylet runs another session)."""
    import psutil
    import ray

    session = Path(ray._private.worker._global_node.get_session_dir_path()).name
    pids = []
    for p in psutil.process_iter(["cmdline"]):
        if not " ".join(p.info["cmdline"] or []).startswith("ray::RayTrainWorker"):
            continue
        try:
            if any(session in " ".join(parent.cmdline()) for parent in p.parents()):
                pids.append(p.pid)
        except psutil.Error:
            continue
    return pids


def test_survives_a_killed_worker_of_two_and_resumes_from_its_checkpoint(prepared, tmp_path, ray_local):
    cfg = load_tiny(prepared, tmp_path, "ft", *TWO, "optim.grad_accum=2", "optim.max_steps=60",
                    "run.checkpoint_every=20", "run.max_failures=2", "run.restart_backoff_s=2",
                    "masking.phase_ends=[12,24,36,48,60]")
    result = {}
    thread = threading.Thread(target=lambda: result.update(summary=pretrain(cfg)))
    thread.start()
    run = tmp_path / "ft"
    snapshot = run / "checkpoint_manager_snapshot.json"

    def registered() -> bool:  # uploaded *and* registered by the controller (an unregistered one is lost)
        return snapshot.exists() and "step_00000020" in snapshot.read_text()

    deadline = time.monotonic() + 300
    while not registered() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert registered(), "no checkpoint appeared"
    pids = _train_worker_pids()
    assert len(pids) == 2
    killed_at = time.time()
    os.kill(pids[1], signal.SIGKILL)
    thread.join(timeout=500)
    assert result["summary"]["finished"] and result["summary"]["step"] == 60
    events = jsonl(run / "events.jsonl")
    assert events[0]["event"] == "start" and events[-1]["event"] == "resume"
    assert events[-1]["step"] >= 20 and events[-1]["step"] % 20 == 0 and events[-1]["workers"] == 2
    m = jsonl(run / "metrics.jsonl")
    assert [x["step"] for x in m] == list(range(5, 61, 5))  # each step once: history restored, not replayed
    fault_figures("Train worker process killed (1 of 2)", m, killed_at, events[-1])
    masker = make_masker(cfg.masking.strategy, cfg.data.k, **cfg.masking.params())
    for x in m:
        assert x["span_max"] == masker.span_bounds(x["step"] - 1)[1]
    assert (run / "final" / "model.safetensors").exists()
