"""Training metrics for Prometheus: through Ray's metrics endpoint on a cluster (``ray.util.metrics``,
scraped by KubeRay's PodMonitor; Ray prefixes the names with ``ray_``), and through
``prometheus_client`` on a port of your choosing for runs outside a cluster."""

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
    # floors.json: set once per run, so dashboards draw the losses against them
    "context_free": ("randommask_floor_context_free", "context-free floor: k-mer frequencies only (nats)"),
    "eval_span_k_overlap": ("randommask_floor_span_k_overlap", "span-k overlap reference of the eval set (nats, approx.)"),
    "eval_span_2k_overlap": ("randommask_floor_span_2k_overlap", "span-2k overlap reference of the eval set (nats, approx.)"),
}


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
        self.update({key: floors[key] for key in ("context_free", "eval_span_k_overlap", "eval_span_2k_overlap")
                     if floors and floors.get(key) is not None})

    def close(self) -> None:
        server = getattr(self, "server", None)
        if server is not None:
            server.shutdown()
