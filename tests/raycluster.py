"""Real Ray clusters of several nodes on this one machine: a head started with `ray start --head
--block` and worker nodes with `ray start --block --address`, each its own raylet, object store and
process group, token auth on. A node is lost the way a reclaimed spot VM or a deleted pod loses it:
SIGKILL to its whole process group. Never `ray stop`: it kills every Ray process on the host,
including the suite's other cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from randommask.tools.s3server import free_port

BIN = Path(sys.executable).parent
# A node's own object store: small, since several share this machine's memory.
OBJECT_STORE_BYTES = 300 * 1024 * 1024


def http_get(url: str, headers: dict | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""
    except OSError:
        return 0, ""


def node_ports(names: tuple[str, ...]) -> tuple[int, dict[str, int]]:
    """A worker-port range and distinct ports outside it. Ray refuses to start when a component's port
    lies in the worker range (a ~3% chance when both are drawn at random): draw the range first."""
    worker_lo = free_port() // 100 * 100 % 50000 + 10000
    ports: dict[str, int] = {}
    for name in names:
        port = free_port()
        while worker_lo <= port < worker_lo + 100 or port in ports.values():
            port = free_port()
        ports[name] = port
    return worker_lo, ports


class RayNode:
    """One `ray start --block` process and everything it starts, in its own process group."""

    COMPONENTS = ("metrics", "agent", "agent_grpc", "rt_env", "node", "object")

    def __init__(self, args: list[str], env: dict[str, str], log: Path, ports: dict[str, int], worker_lo: int) -> None:
        self.env, self.log, self.ports = env, log, ports
        self.ray_id: str | None = None  # its node id, set by RayHead.add_node once the GCS lists it
        self.metrics_port = ports["metrics"]
        self.proc = subprocess.Popen(
            [BIN / "ray", "start", "--block", f"--metrics-export-port={ports['metrics']}",
             f"--dashboard-agent-listen-port={ports['agent']}", f"--dashboard-agent-grpc-port={ports['agent_grpc']}",
             f"--runtime-env-agent-port={ports['rt_env']}", f"--node-manager-port={ports['node']}",
             f"--object-manager-port={ports['object']}", f"--min-worker-port={worker_lo}",
             f"--max-worker-port={worker_lo + 99}", "--disable-usage-stats", *args],
            env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """Lose the node at once: its raylet, object store, workers and agents (SIGKILL to the group)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(30)

    def terminate(self) -> None:
        """SIGTERM to `ray start`, as Kubernetes sends a pod's first process; does not wait."""
        self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        """SIGTERM to `ray start` (it stops its own processes), the group killed if it hangs."""
        if not self.alive():
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.kill()


class RayHead(RayNode):
    """A real Ray head, token auth on, in its own session (HOME holds its token)."""

    def __init__(self, home: Path, log: Path, num_cpus: int = 2, extra: tuple[str, ...] = (),
                 env: dict[str, str] | None = None) -> None:
        home.mkdir(exist_ok=True)
        env = {**os.environ, "HOME": str(home), "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_AUTH_MODE": "token",
               "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "2", "RAY_TRAIN_ENABLE_PRINT_PATCH": "0", **(env or {})}
        env.pop("RAY_ADDRESS", None)
        if not (home / ".ray" / "auth_token").exists():
            token = subprocess.run([BIN / "ray", "get-auth-token", "--generate"], env=env, capture_output=True,
                                   text=True, timeout=60)
            assert token.returncode == 0, token.stderr
        worker_lo, ports = node_ports(("gcs", "dash", "client", *self.COMPONENTS))
        self.gcs_port = ports["gcs"]
        self.gcs_address = f"127.0.0.1:{self.gcs_port}"
        super().__init__(["--head", f"--port={ports['gcs']}", "--dashboard-host=127.0.0.1",
                          f"--dashboard-port={ports['dash']}", f"--ray-client-server-port={ports['client']}",
                          f"--num-cpus={num_cpus}", *extra], env, log, ports, worker_lo)
        self.address = f"http://127.0.0.1:{ports['dash']}"
        self.workers: dict[str, RayNode] = {}
        deadline = time.monotonic() + 120
        while http_get(f"{self.address}/api/version")[0] not in (200, 401):
            if not self.alive() or time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"the Ray head did not come up: {log.read_text()[-3000:]}")
            time.sleep(0.5)

    def driver_env(self) -> dict[str, str]:
        """The environment of a driver (e.g. `randommask pretrain`) that joins this cluster."""
        return {**self.env, "RAY_ADDRESS": self.gcs_address}

    def add_node(self, name: str, num_cpus: int, resources: dict[str, float], wait: float = 180,
                 env: dict[str, str] | None = None) -> RayNode:
        """A worker node with ``resources`` and a ``node_<name>`` resource that identifies it."""
        worker_lo, ports = node_ports(self.COMPONENTS)
        tagged = {**resources, f"node_{name}": 1}
        # A node of this name that was just lost stays ALIVE in the GCS until its health checks fail
        # (seconds): the new node is the one with a node id not seen before it started.
        before = {n["node_id"] for n in self.nodes() if f"node_{name}" in (n.get("resources_total") or {})}
        node = RayNode([f"--address={self.gcs_address}", f"--num-cpus={num_cpus}",
                        f"--object-store-memory={OBJECT_STORE_BYTES}", f"--resources={json.dumps(tagged)}"],
                       {**self.env, "RAY_ADDRESS": self.gcs_address, **(env or {})},
                       self.log.with_name(f"{name}.log"), ports, worker_lo)
        self.workers[name] = node
        deadline = time.monotonic() + wait
        while node.ray_id is None:
            if not node.alive() or time.monotonic() > deadline:
                raise AssertionError(f"node {name} did not join: {node.log.read_text()[-3000:]}")
            time.sleep(1)
            node.ray_id = next((n["node_id"] for n in self.nodes() if n.get("state") == "ALIVE"
                                 and f"node_{name}" in (n.get("resources_total") or {})
                                 and n["node_id"] not in before), None)
        return node

    def nodes(self) -> list[dict]:
        """`ray list nodes` (the state API, served by the dashboard), one dict per node ever seen."""
        out = subprocess.run([BIN / "ray", "list", "nodes", "--address", self.address, "--format", "json",
                              "--detail", "--limit", "100"], env=self.env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr[-2000:]
        if not out.stdout.lstrip().startswith("["):  # "No resource in the cluster" while it starts
            return []
        return json.loads(out.stdout)

    def node_id(self, name: str) -> str | None:
        """The id of the node ``name`` that this head started last, while it is alive (else None)."""
        wanted = self.workers[name].ray_id if name in self.workers else None
        alive = {n["node_id"] for n in self.nodes() if n.get("state") == "ALIVE"}
        return wanted if wanted in alive else None

    def name_of(self, node_id: str) -> str | None:
        for n in self.nodes():
            if n["node_id"] == node_id:
                tags = [k[5:] for k in (n.get("resources_total") or {}) if k.startswith("node_")]
                return tags[0] if tags else "head"
        return None

    def drain(self, name: str, reason: str, deadline_s: int = 30) -> subprocess.CompletedProcess:
        """Ray's drain request for node ``name``, as KubeRay's autoscaler or a cloud's notice sends it."""
        node = self.node_id(name)
        assert node is not None, f"node {name} is not alive: there is nothing to drain"
        return subprocess.run([BIN / "ray", "drain-node", "--address", self.gcs_address, "--node-id",
                               node, "--reason", reason, "--reason-message", "test",
                               "--deadline-remaining-seconds", str(deadline_s)],
                              env=self.env, capture_output=True, text=True, timeout=60)

    def stop(self, lose: bool = False) -> None:
        """Worker nodes first, then the head: SIGTERM to its PID or, to lose the head as a deleted pod
        does, SIGKILL to its whole process group."""
        for node in getattr(self, "workers", {}).values():
            node.kill()
        if lose:
            self.kill()
        else:
            super().stop()
        # `ray start` records its address for later "auto" lookups; a stopped head must not stay there.
        current = Path("/tmp/ray/ray_current_cluster")
        if current.exists() and current.read_text().strip().endswith(f":{self.gcs_port}"):
            current.unlink()
