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
