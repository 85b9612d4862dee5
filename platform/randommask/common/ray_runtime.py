"""Starting or joining Ray the same way everywhere: quiet, token-authenticated, no stale addresses."""

from __future__ import annotations

import logging
import os

# Quiet settings for Ray 2.60 (verified in the team's Ray notes, shared/notes/ray-2.60.md): without the
# print patch a worker's print appears once, not twice; the variable, unlike DataContext, also reaches
# datasets built inside Tune trials, so no per-dataset progress bars there either.
# Ray Train's preemption watcher stays on (its default): on spot/preemptible nodes it tells a
# preemption from a crash, at the cost of one harmless log line per run.
QUIET_ENV = {
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
}


def ensure_ray(num_cpus: int | None = None) -> None:
    """Join the cluster named by ``RAY_ADDRESS`` (``ray job submit`` sets it), else start a local one.

    A local cluster uses token authentication, Ray's default. ``address="local"`` avoids joining a
    dead cluster that a stale ``/tmp/ray/ray_current_cluster`` still names.
    """
    import ray

    if ray.is_initialized():
        return
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    address = os.environ.get("RAY_ADDRESS")
    kwargs = dict(logging_level=logging.WARNING, configure_logging=True)
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=True, **kwargs)
    configure_data_context()


def configure_data_context() -> None:
    """Deterministic, quiet Ray Data: windows arrive in plan order, so position-based resume holds."""
    from ray.data import DataContext

    logging.getLogger("ray.data").setLevel(logging.WARNING)  # no per-dataset execution banners
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.execution_options.preserve_order = True
