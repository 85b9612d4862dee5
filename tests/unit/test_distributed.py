"""Restarts of the worker group back off (the multi-worker runs themselves are in
tests/integration/test_distributed.py)."""

import random

from randommask.training.worker import restart_delay


def test_restarts_back_off_doubling_jittered_and_capped():
    random.seed(0)
    assert restart_delay(0, 10) == 0.0 and restart_delay(3, 0) == 0.0  # a first start, or backoff off: no wait
    for n, full in ((1, 10), (2, 20), (3, 40), (6, 300), (12, 300)):
        delays = [restart_delay(n, 10) for _ in range(200)]
        assert full / 2 <= min(delays) and max(delays) <= full  # jitter in [half, all] of the doubled wait
        assert len(set(delays)) > 100  # really jittered: restarts of many workers spread out


def test_a_restart_after_a_preemption_notice_does_not_wait_and_notices_do_not_count(tmp_path, monkeypatch):
    import randommask.training.worker as worker
    from conftest import load_tiny

    cfg = load_tiny(tmp_path / "prepared", tmp_path / "runs", "r", "run.restart_backoff_s=100")
    run = cfg.run_dir()
    run.append_event({"event": "start", "step": 0, "time": 100.0})
    run.append_event({"event": "preemption", "step": 47, "time": 130.0})
    # restarted by Ray Train after the drain deadline: the checkpoint is fresh and the node gone
    assert worker.restart_backoff(cfg, launched=50.0) == 0.0
    run.append_event({"event": "resume", "step": 47, "time": 170.0})
    # a later restart (a crash) counts the start and the resume, not the notice: restart 2's wait
    waited: list[float] = []
    monkeypatch.setattr(worker.time, "sleep", waited.append)
    delay = worker.restart_backoff(cfg, launched=50.0)
    assert waited == [delay] and 100 <= delay <= 200  # 100 x 2^1, jittered into [half, all]
