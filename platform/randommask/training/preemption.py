"""Graceful preemption: a drain notice for a node that runs a worker becomes a checkpoint at the next
log step, and the workers then wait for Ray Train to restart them elsewhere.

The notice is Ray's own. A spot reclaim reaches the GCS as a drain request with reason
``DRAIN_NODE_REASON_PREEMPTION`` and a deadline (KubeRay's autoscaler, a cloud's termination
handler, or ``ray drain-node``); Ray Train's PreemptionWatcher polls the drained nodes and hands the
notice to every worker, and ``ray.train.get_preemption_info()`` returns it, the same on every rank
(it is a broadcast from rank 0, so every rank calls it at the same steps: after each step). Ray
Train's controller then restarts the run once the deadline passes, on nodes that are not draining,
from the newest checkpoint: the one written here. Training on after the checkpoint would be lost
work and log steps a resume repeats, so the workers wait instead.

A drain that is not a preemption (the autoscaler removing an idle node) never reaches a node with a
worker: Ray refuses to drain a busy node for idleness, and the watcher only reports our nodes.
"""

from __future__ import annotations

import time
from typing import Any

from randommask.common.rundir import RunDir

# Past the deadline the controller restarts the workers at once (``preemption_grace_s`` 0); a worker
# still waiting this long after it fails with a clear message instead of hanging.
RESTART_GRACE_S = 120.0
NO_DEADLINE_WAIT_S = 120.0  # Ray Train's own fallback when a drain names no deadline


class PreemptionGuard:
    def __init__(self, run_dir: RunDir, run_name: str, rank: int) -> None:
        self.run_dir, self.run_name, self.rank = run_dir, run_name, rank
        self.notice: Any = None  # ray.train.PreemptionInfo once noticed
        self.enabled = True

    def check(self, step: int) -> bool:
        """True the first time a preemption notice covers this run's nodes. Every rank calls this
        after every step (the call is a collective: one actor call, about 3 ms on the 2-core machine)."""
        if not self.enabled or self.notice is not None:
            return False
        import ray.train

        try:
            info = ray.train.get_preemption_info()
        except (AttributeError, RuntimeError):  # a Ray without notices, or not in a Train worker
            self.enabled = False
            return False
        if info is None:
            return False
        self.notice = info
        deadline = info.deadline_ms / 1000 if info.deadline_ms else None
        if self.rank == 0:
            self.run_dir.append_event({"event": "preemption", "step": step, "nodes": info.preempted_node_ids,
                                       "ranks": info.preempted_ranks, "deadline": deadline,
                                       "time": round(time.time(), 1)})
            left = f"{deadline - time.time():.0f} s before the node goes" if deadline else "no deadline given"
            print(f"[{self.run_name}] preemption notice for node(s) {', '.join(n[:12] for n in info.preempted_node_ids)} "
                  f"at step {step} ({left}): checkpointing now", flush=True)
        return True

    def wait(self) -> None:
        """After the checkpoint: wait for Ray Train to stop these workers and restart the run."""
        deadline = self.notice.deadline_ms / 1000 if self.notice.deadline_ms else time.time() + NO_DEADLINE_WAIT_S
        limit = deadline + RESTART_GRACE_S
        while time.time() < limit:
            time.sleep(1.0)
        raise RuntimeError(f"preemption notice: the run was not restarted within {RESTART_GRACE_S:.0f} s of the "
                           "drain deadline; it continues from the checkpoint just written")
