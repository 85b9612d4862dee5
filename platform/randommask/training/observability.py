"""Training metrics for Prometheus: through Ray's metrics endpoint on a cluster (``ray.util.metrics``,
scraped by KubeRay's PodMonitor; Ray prefixes the names with ``ray_``), and through
``prometheus_client`` on a port of your choosing for runs outside a cluster.

Two sources: rank 0 sets ``GAUGES`` at every logged step (the live curves), and the Ray Train
controller sets ``CONTROLLER_GAUGES`` from every rank's reports (``ControllerMetrics``): per-rank
throughput and data wait (stragglers), MFU, checkpoint time, GPU memory. The controller outlives
worker-group restarts, so those series do not stop with a dead rank."""

from __future__ import annotations

from typing import Any

# metrics.jsonl key -> (metric name, description)
GAUGES = {
    "step": ("randommask_step", "optimizer steps done"),
    "loss": ("randommask_loss", "training MLM loss, all labelled positions"),
    "acc": ("randommask_masked_accuracy", "training accuracy, all labelled positions"),
    "mask_loss": ("randommask_mask_loss", "training MLM loss on positions whose input is [MASK]"),
    "mask_acc": ("randommask_mask_accuracy", "training accuracy on positions whose input is [MASK]"),
    "tokens_per_s": ("randommask_tokens_per_second", "training tokens per second, all workers"),
    "span_min": ("randommask_span_min", "shortest masked span (tokens)"),
    "span_max": ("randommask_span_boundary", "current RandomMask span boundary (tokens)"),
    "lr": ("randommask_lr", "learning rate"),
    "masked_fraction": ("randommask_masked_fraction", "fraction of tokens selected for the loss"),
    "data_wait": ("randommask_data_wait_fraction", "fraction of step time spent waiting for data"),
    "eval_span_k_loss": ("randommask_eval_span_k_loss", "validation loss, fixed span-k masking"),
    "eval_span_2k_loss": ("randommask_eval_span_2k_loss", "validation loss, fixed span-2k masking"),
    "eval_span_k_acc": ("randommask_eval_span_k_accuracy", "validation masked accuracy, span-k masking"),
    "eval_span_2k_acc": ("randommask_eval_span_2k_accuracy", "validation masked accuracy, span-2k masking"),
    "eval_span_k_mask_loss": ("randommask_eval_span_k_mask_loss", "validation loss on [MASK] inputs, span-k masking"),
    "eval_span_2k_mask_loss": ("randommask_eval_span_2k_mask_loss", "validation loss on [MASK] inputs, span-2k masking"),
    "eval_span_k_mask_acc": ("randommask_eval_span_k_mask_accuracy", "validation accuracy on [MASK] inputs, span-k"),
    "eval_span_2k_mask_acc": ("randommask_eval_span_2k_mask_accuracy", "validation accuracy on [MASK] inputs, span-2k"),
    "eval_span_k_base_loss": ("randommask_eval_span_k_base_loss", "validation loss per hidden base, span-k (nats)"),
    "eval_span_2k_base_loss": ("randommask_eval_span_2k_base_loss", "validation loss per hidden base, span-2k (nats)"),
    # floors.json: set once per run, so dashboards draw the losses against them
    "context_free": ("randommask_floor_context_free", "context-free floor: k-mer frequencies only (nats)"),
    "eval_span_k_overlap": ("randommask_floor_span_k_overlap", "span-k overlap reference of the eval set (nats, approx.)"),
    "eval_span_2k_overlap": ("randommask_floor_span_2k_overlap", "span-2k overlap reference of the eval set (nats, approx.)"),
    "overlap_only_span_k": ("randommask_floor_overlap_only_span_k",
                            "span-k [MASK] loss of a perfect overlap reader that knows no DNA (nats)"),
    "overlap_only_span_2k": ("randommask_floor_overlap_only_span_2k",
                             "span-2k [MASK] loss of a perfect overlap reader that knows no DNA (nats)"),
    "base_table_best": ("randommask_floor_base_table_best", "per-base loss of the best flank count table (nats)"),
    "best_counting_span_k": ("randommask_floor_best_counting_span_k",
                             "per-base loss of the best count table in the span-k eval set's geometry (nats)"),
    "best_counting_span_2k": ("randommask_floor_best_counting_span_2k",
                              "per-base loss of the best count table in the span-2k eval set's geometry (nats)"),
}


# report key -> (metric name, description, per rank?): set by the controller from the reports
CONTROLLER_GAUGES = {
    "rank_tokens_per_s": ("randommask_rank_tokens_per_second", "training tokens per second of one rank", True),
    "rank_data_wait": ("randommask_rank_data_wait_fraction", "fraction of one rank's step time spent waiting for data",
                       True),
    "gpu_memory_bytes": ("randommask_rank_gpu_memory_bytes", "peak GPU memory allocated by one rank (torch)", True),
    "mfu": ("randommask_mfu", "model FLOPs utilisation: model FLOP/s over the GPUs' dense bf16 peak", False),
    "checkpoint_s": ("randommask_checkpoint_seconds", "seconds the last checkpoint took to save and register", False),
    "step": ("randommask_reported_step", "the step of the last report the controller received", False),
}


def controller_figures(reports: list[dict[str, Any]]) -> list[tuple[str, float, dict[str, str]]]:
    """(metric key, value, extra tags) for one round of reports, one dict per rank (rank order)."""
    out = []
    for rank, report in enumerate(reports):
        for key, (_, _, per_rank) in CONTROLLER_GAUGES.items():
            value = report.get(key)
            if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if per_rank:
                out.append((key, float(value), {"rank": str(rank)}))
            elif rank == 0:
                out.append((key, float(value), {}))
    return out


def _controller_callback_base():
    import ray.train

    return ray.train.UserCallback


class ControllerMetrics(_controller_callback_base()):
    """A Ray Train ``UserCallback``: it runs in the controller actor and sets ``CONTROLLER_GAUGES``
    from each round of reports (every evaluation and checkpoint)."""

    def __init__(self, run: str) -> None:
        self.run = run
        self.gauges: dict[str, Any] | None = None  # made in the controller, not where it is pickled

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        if self.gauges is None:
            from ray.util.metrics import Gauge

            self.gauges = {key: Gauge(name, description=desc, tag_keys=("run", "rank") if per_rank else ("run",))
                           for key, (name, desc, per_rank) in CONTROLLER_GAUGES.items()}
        for key, value, tags in controller_figures(metrics):
            self.gauges[key].set(value, tags={"run": self.run, **tags})


class TrainMetrics:
    """Sets one gauge per metric from each metrics.jsonl line (rank 0 only)."""

    def __init__(self, run: str, ray_metrics: bool = True, prometheus_port: int | None = None,
                 prometheus_host: str = "127.0.0.1") -> None:
        self.run = run
        self.ray_gauges: dict[str, Any] = {}
        self.prom_gauges: dict[str, Any] = {}
        if ray_metrics:
            from ray.util.metrics import Gauge

            for key, (name, desc) in GAUGES.items():
                self.ray_gauges[key] = Gauge(name, description=desc, tag_keys=("run",))
        if prometheus_port is not None:
            import prometheus_client as pc

            registry = pc.CollectorRegistry()
            for key, (name, desc) in GAUGES.items():
                self.prom_gauges[key] = pc.Gauge(name, desc, ["run"], registry=registry)
            self.server, _ = pc.start_http_server(prometheus_port, addr=prometheus_host, registry=registry)

    def update(self, line: dict[str, Any]) -> None:
        for key, value in line.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            if key in self.ray_gauges:
                self.ray_gauges[key].set(float(value), tags={"run": self.run})
            if key in self.prom_gauges:
                self.prom_gauges[key].labels(run=self.run).set(float(value))

    def set_floors(self, floors: dict[str, Any] | None) -> None:
        floors = dict(floors or {})
        tables = [v for v in (floors.get("base_table") or {}).values() if v is not None]
        floors["base_table_best"] = min(tables) if tables else None
        self.update({key: floors[key] for key in ("context_free", "eval_span_k_overlap", "eval_span_2k_overlap",
                                                  "overlap_only_span_k", "overlap_only_span_2k", "base_table_best",
                                                  "best_counting_span_k", "best_counting_span_2k")
                     if floors.get(key) is not None})

    def close(self) -> None:
        server = getattr(self, "server", None)
        if server is not None:
            server.shutdown()
