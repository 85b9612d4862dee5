"""KubeRay deployment, checked without a Kubernetes API server (tests/kustomized.py renders every
kustomization with the real kustomize): RayClusters and RayJobs, Kueue's objects and the PodMonitors
are validated strictly against their CRD schemas (an undeclared field is an error: the API server
would prune it silently), core objects and every pod template against Kubernetes' own schemas; and
the manifests are checked against the code they run: entrypoints, configs, Ray version, the pinned
stack, credentials. How the jobs are retried, queued, placed and monitored: test_cluster_operations.py."""

import copy
import json
import re
import shlex
from importlib import metadata
from pathlib import Path

import kubernetes_validate
import pytest
import tomllib
import yaml

from conftest import REPO
from kustomized import (
    GPU_OVERLAYS,
    GPUS_PER_NODE,
    K8S_VERSION,
    KUEUE_OVERLAYS,
    OVERLAYS,
    RAY_VERSION,
    all_objects,
    cluster_specs,
    configmap_files,
    configs,
    containers,
    crd_errors,
    crd_validators,
    gpu_group,
    jobs,
    pod_specs,
    ray_containers,
    rendered,
)
from randommask.cli import build_parser
from randommask.sweep.driver import load_sweep
from randommask.training.config import load_config

APP = "/home/ray/app/"  # where the Dockerfile puts the repository's jobs/
JOB_COMMANDS = {"pretrain.py": ["pretrain"], "prepare.py": ["data", "prepare"], "sweep.py": ["sweep"],
                "finetune.py": ["finetune"]}
__all__ = ["crd_validators", "rendered"]  # module fixtures, shared with test_cluster_operations.py


# ---- schemas ------------------------------------------------------------------------------------
def test_each_overlay_renders_the_cluster_four_jobs_and_configs(rendered):
    four = ["randommask-finetune", "randommask-prepare", "randommask-pretrain", "randommask-sweep"]
    for name in (*OVERLAYS, "base"):
        clusters = [o["metadata"]["name"] for o in rendered[name] if o["kind"] == "RayCluster"]
        # queued: no standing cluster holding quota; every workload is a RayJob
        assert clusters == ([] if name in KUEUE_OVERLAYS else ["randommask"]), name
        assert sorted(jobs(rendered[name])) == four, name
        assert any(o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("randommask-configs-")
                   for o in rendered[name])
        if name != "base":  # the overlays give every job its cluster
            assert all("rayClusterSpec" in j["spec"] for j in jobs(rendered[name]).values()), name


def test_every_custom_object_validates_strictly_against_its_crd(rendered, crd_validators):
    checked: dict[str, int] = {}
    for obj in all_objects(rendered):
        if obj["kind"] in crd_validators:
            assert crd_errors(crd_validators, obj) == [], f"{obj['kind']}/{obj['metadata']['name']}"
            checked[obj["kind"]] = checked.get(obj["kind"], 0) + 1
    assert checked == {"RayCluster": 4, "RayJob": 24, "ClusterQueue": 2, "LocalQueue": 2, "ResourceFlavor": 2,
                       "WorkloadPriorityClass": 8, "PodMonitor": 3}, checked
    kinds_rendered = {o["kind"] for o in all_objects(rendered)}
    assert kinds_rendered <= set(crd_validators) | {"ConfigMap", "Deployment", "Service"}, kinds_rendered


def test_strict_validation_rejects_fields_the_crd_does_not_declare(rendered, crd_validators):
    job = next(o for o in rendered["dev"] if o["kind"] == "RayJob")
    typo = copy.deepcopy(job)
    typo["spec"]["shutdownAfterJobFinish"] = typo["spec"].pop("shutdownAfterJobFinishes")
    assert any("shutdownAfterJobFinish" in e for e in crd_errors(crd_validators, typo))
    nested = copy.deepcopy(job)
    head = nested["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    head["resource"] = head.pop("resources")
    assert any("resource" in e for e in crd_errors(crd_validators, nested))
    wrong_type = copy.deepcopy(job)
    wrong_type["spec"]["backoffLimit"] = "three"
    assert crd_errors(crd_validators, wrong_type)
    cq = copy.deepcopy(next(o for o in rendered["kueue"] if o["kind"] == "ClusterQueue"))
    cq["spec"]["resourceGroups"][0]["flavors"][0]["resources"][0]["nominalQuotas"] = 1  # a typo Kueue would drop
    assert crd_errors(crd_validators, cq)
    pm = copy.deepcopy(next(o for o in rendered["monitoring"] if o["kind"] == "PodMonitor"))
    pm["spec"]["podMetricsEndpoints"][0]["targetport"] = 8080
    assert crd_errors(crd_validators, pm)


def test_core_objects_and_every_pod_template_validate_against_kubernetes_schemas(rendered):
    checked = 0
    for obj in all_objects(rendered):
        if obj["apiVersion"] in ("v1", "apps/v1"):
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
            checked += 1
        for _where, pod in pod_specs(obj):  # the CRDs embed pod templates; check them as real Pods too
            kubernetes_validate.validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": pod},
                                         K8S_VERSION, strict=True)
            checked += 1
    assert checked >= 92  # 92 pod templates (4 RayClusters and 20 RayJob clusters with their groups, 24 submitters, the S3 server), core objects
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
                                      "spec": {"containers": [{"name": "c", "imagee": "x"}]}}, K8S_VERSION, strict=True)


# ---- what the manifests run -----------------------------------------------------------------------
def _entrypoint(job: dict) -> tuple[str, list[str]]:
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[0] == "python" and argv[1].startswith(APP), job["spec"]["entrypoint"]
    return argv[1][len(APP):], argv[2:]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_entrypoints_exist_parse_and_their_configs_validate(rendered, overlay, tmp_path):
    docs = rendered[overlay]
    args_by_job = {}
    for job in jobs(docs).values():
        head = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]  # where the driver runs
        mounts = {m["mountPath"]: m["name"] for m in head["containers"][0]["volumeMounts"]}
        volumes = {v["name"]: v for v in head["volumes"]}
        config_dir = next(p for p, n in mounts.items() if "configMap" in volumes[n])
        files = configmap_files(docs, volumes[mounts[config_dir]]["configMap"]["name"])
        for name, text in files.items():  # the ConfigMap as the head sees it
            (tmp_path / name).write_text(text)
        script, args = _entrypoint(job)
        assert (REPO / script).is_file(), script
        command = JOB_COMMANDS[Path(script).name]
        assert f"main({json.dumps(command)[:-1]}, *sys.argv[1:]])" in (REPO / script).read_text(), script
        for i, a in enumerate(args):
            if a == "--config":
                assert args[i + 1].startswith(config_dir + "/"), args[i + 1]
                local = tmp_path / args[i + 1][len(config_dir) + 1:]
                assert local.is_file(), f"{args[i + 1]} is not in the mounted ConfigMap"
                args[i + 1] = str(local)
        parsed = build_parser().parse_args(command + args)  # every flag exists in the CLI
        args_by_job[job["metadata"]["name"]] = parsed

    cfg = load_config(args_by_job["randommask-pretrain"].config)  # PretrainConfig, unknown keys forbidden
    sweep, base = load_sweep(args_by_job["randommask-sweep"].config)
    # The four jobs are one pipeline: prepare writes what pretraining reads, fine-tuning reads its result.
    assert args_by_job["randommask-prepare"].out.rstrip("/") == cfg.data.prepared.rstrip("/")
    assert args_by_job["randommask-finetune"].checkpoint == f"{cfg.run.storage_path}/{cfg.run.name}/final"
    assert base["data"]["prepared"] == cfg.data.prepared
    # Resumption after a lost head pod needs durable storage: checkpoints and Tune state on S3.
    for uri in (cfg.run.storage_path, cfg.data.prepared, sweep.storage_path, args_by_job["randommask-finetune"].out):
        assert uri.startswith("s3://"), uri


def test_gpu_workers_are_whole_nodes_that_fit_the_configs_and_dev_needs_no_gpu(rendered, tmp_path):
    for overlay in OVERLAYS:
        docs = rendered[overlay]
        cfg, sweep, trial_workers = configs(docs, tmp_path)
        for job_name, job in jobs(docs).items():
            spec = job["spec"]["rayClusterSpec"]  # dev: its one CPU group stands in for the GPU group
            group = spec["workerGroupSpecs"][0] if overlay == "dev" else gpu_group(spec)
            pod = group["template"]["spec"]
            res = pod["containers"][0]["resources"]
            gpus = int(res["requests"].get("nvidia.com/gpu", 0))
            if overlay == "dev":
                assert not cfg.scaling.use_gpu and "nvidia.com/gpu" not in json.dumps(docs)
                assert float(res["requests"]["cpu"]) >= cfg.scaling.cpus_per_worker + 1
                continue
            # One pod per node, all 8 GPUs: NCCL sees NVLink inside it, not 8 hosts on the pod network.
            assert gpus == GPUS_PER_NODE and res["limits"]["nvidia.com/gpu"] == res["requests"]["nvidia.com/gpu"]
            assert "nvidia.com/gpu.product" in pod["nodeSelector"]
            assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
            shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
            assert shm["emptyDir"]["medium"] == "Memory" and int(shm["emptyDir"]["sizeLimit"].rstrip("Gi")) >= 64
            assert any(m["mountPath"] == "/dev/shm" for m in pod["containers"][0]["volumeMounts"])
            # each Train worker's CPUs, and at least one more for Ray Data, on every node
            assert float(res["requests"]["cpu"]) >= cfg.scaling.cpus_per_worker * gpus + 1
            nodes = group["maxReplicas"]
            # scaling.num_workers counts GPUs, in whole nodes
            assert cfg.scaling.use_gpu and cfg.scaling.gpus_per_worker == 1
            assert cfg.scaling.num_workers % GPUS_PER_NODE == 0
            if job_name == "randommask-pretrain":
                assert cfg.scaling.num_workers <= nodes * gpus, (overlay, job_name)
            if job_name == "randommask-sweep":
                assert sweep.search.max_concurrent * trial_workers <= nodes * gpus, (overlay, job_name)
    rdma = gpu_group(next(o for o in rendered["gpu-rdma"] if o["kind"] == "RayCluster")["spec"])
    worker = rdma["template"]["spec"]["containers"][0]
    assert worker["resources"]["requests"]["rdma/rdma_shared_device_a"] == "1"
    assert "IPC_LOCK" in worker["securityContext"]["capabilities"]["add"]
    assert {e["name"] for e in worker["env"]} >= {"NCCL_IB_HCA", "NCCL_SOCKET_IFNAME"}


def test_head_stays_on_demand_workers_may_use_spot_and_disk_is_requested(rendered):
    for overlay in OVERLAYS:
        for obj in rendered[overlay]:
            for spec in cluster_specs(obj):
                head = spec["headGroupSpec"]["template"]["spec"]
                terms = head["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
                excluded = {(e["key"], v) for t in terms["nodeSelectorTerms"] for e in t["matchExpressions"]
                            if e["operator"] == "NotIn" for v in e["values"]}
                assert {("karpenter.sh/capacity-type", "spot"), ("cloud.google.com/gke-spot", "true")} <= excluded
                pods = [head] + [g["template"]["spec"] for g in spec["workerGroupSpecs"]]
                for pod in pods:  # Ray's logs and spilled objects: the scheduler must count the disk
                    assert "ephemeral-storage" in pod["containers"][0]["resources"]["requests"], overlay
                if overlay in GPU_OVERLAYS:
                    tolerated = {t["key"] for t in gpu_group(spec)["template"]["spec"]["tolerations"]}
                    assert {"cloud.google.com/gke-spot", "kubernetes.azure.com/scalesetpriority"} <= tolerated


def test_ray_version_is_the_one_pinned_in_pyproject(rendered):
    docker = (REPO / "cluster" / "Dockerfile").read_text()
    assert re.search(rf"^ARG RAY_VERSION={re.escape(RAY_VERSION)}$", docker, re.M)
    assert re.search(r"^FROM rayproject/ray:\$\{RAY_VERSION\}-py311-\$\{VARIANT\}$", docker, re.M)
    images = set()
    for obj in all_objects(rendered):
        for spec in cluster_specs(obj):
            assert spec["rayVersion"] == RAY_VERSION
        for _, pod in pod_specs(obj):
            images |= {c["image"] for c in containers(pod)}
    ours = {i for i in images if i.split(":")[0].endswith("randommask")}
    assert ours and all(f"-ray{RAY_VERSION}" in i.split(":")[1] for i in ours), ours
    assert all(":" in i and not i.endswith(":latest") for i in images), images
    # Submitters only run `ray job submit`: Ray's small CPU image of the same version, never the GPU one.
    for overlay in OVERLAYS:
        for job in jobs(rendered[overlay]).values():
            submitter = job["spec"]["submitterPodTemplate"]["spec"]["containers"][0]["image"]
            assert submitter == f"rayproject/ray:{RAY_VERSION}-py311-cpu", submitter


def _pins(path: Path) -> dict[str, str]:
    """A constraints file's pins: normalized name -> version."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_one_pinned_stack_for_the_tests_and_the_image():
    """cluster/constraints.txt pins every dependency; make venv and the Dockerfile both install with
    it, and this test environment runs exactly those versions."""
    pins = _pins(REPO / "cluster" / "constraints.txt")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] + project["optional-dependencies"]["dev"]
    for dep in deps:
        name = re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", dep).group(0)).lower()
        assert name in pins, f"{dep} is not pinned in cluster/constraints.txt"
    assert pins["ray"] == RAY_VERSION and pins["torch"] == "2.13.0"
    for name in ("torch", "transformers", "s3fs", "fsspec", "botocore", "numpy", "pydantic", "ray"):
        assert metadata.version(name).split("+")[0] == pins[name], f"{name}: tests ran {metadata.version(name)}"
    docker = (REPO / "cluster" / "Dockerfile").read_text()
    assert "COPY --chown=1000:100 cluster/constraints.txt ./constraints.txt" in docker
    installs = re.findall(r"pip install [^\n]*", docker)
    assert len(installs) == 2 and all("-c constraints.txt" in i for i in installs), installs
    make = (REPO / "Makefile").read_text()
    assert re.search(r"pip install .*-c cluster/constraints\.txt -e '\.\[dev\]'", make)
    # The GPU image also pins torch's CUDA stack, by exact versions (or NVIDIA's release series)
    # that do not contradict the common pins.
    gpu = _pins(REPO / "cluster" / "constraints-gpu.txt")
    assert {"triton", "cuda-toolkit", "nvidia-cudnn-cu13", "nvidia-nccl-cu13", "nvidia-cublas"} <= set(gpu)
    assert not set(gpu) & set(pins) and all(re.fullmatch(r"\d+(\.\d+)+(\.\*)?", v) for v in gpu.values()), gpu
    assert "COPY --chown=1000:100 cluster/constraints-gpu.txt ./constraints-gpu.txt" in docker
    assert re.search(r'if \[ "\$VARIANT" = gpu \]; then set -- -c constraints-gpu.txt; fi', docker)
    # ARG VARIANT again after FROM, or $VARIANT is empty in RUN and the GPU pins are silently skipped
    assert re.search(r"^FROM .*\n(.*\n)*ARG VARIANT\n(.*\n)*.*\$VARIANT\b", docker, re.M)
    assert '-c constraints.txt "$@"' in installs[0] and "pip freeze > installed-stack.txt" in docker
    assert re.search(r"^\$\(STAMP\): .*cluster/constraints\.txt", make, re.M)


def test_no_literal_credentials_anywhere(rendered):
    secretish = re.compile(r"KEY|SECRET|TOKEN|PASSWORD", re.I)
    for obj in all_objects(rendered):
        assert obj["kind"] != "Secret", "Secrets are created by the operator (docs), never committed"
        for where, pod in pod_specs(obj):
            for c in containers(pod):
                for e in c.get("env", []):
                    if secretish.search(e["name"]):
                        assert "valueFrom" in e and "value" not in e, f"{where} {c['name']} {e['name']}"
    text = "\n".join(yaml.safe_dump_all(docs) for docs in rendered.values()) + (REPO / "cluster" / "Dockerfile").read_text()
    assert not re.search(r"AKIA[0-9A-Z]{16}", text)
    assert not re.search(r"auth_token:\s*\S", text) and not re.search(r"RAY_AUTH_TOKEN\W+value", text)
    assert not re.search(r"(?im)^\s*(ENV|ARG)\s+\S*(KEY|SECRET|TOKEN|PASSWORD)", (REPO / "cluster" / "Dockerfile").read_text())


def test_every_container_requests_resources_and_runs_non_root(rendered):
    seen = 0
    for obj in all_objects(rendered):
        autoscaler = [(f"{obj['kind']}/{obj['metadata']['name']} autoscaler", {}, spec["autoscalerOptions"])
                      for spec in cluster_specs(obj) if spec.get("enableInTreeAutoscaling")]
        pods = [(w, pod, c) for w, pod in pod_specs(obj) for c in containers(pod)]
        for where, pod, c in pods + autoscaler:
            req = c.get("resources", {}).get("requests", {})
            assert "cpu" in req and "memory" in req, f"{where} {c.get('name', '')}: no CPU/memory requests"
            sc = {**pod.get("securityContext", {}), **c.get("securityContext", {})}
            assert sc.get("runAsNonRoot") is True and sc.get("runAsUser", 1) != 0, f"{where} {c.get('name', '')}"
            assert sc.get("allowPrivilegeEscalation") is False, f"{where} {c.get('name', '')}"
            seen += 1
    assert seen >= 75  # the containers of 61 pod templates, the autoscalers, the S3 server's init container
    docker = (REPO / "cluster" / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", docker, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert "[dev]" not in docker and "COPY --chown=1000:100 jobs" in docker


def test_token_auth_is_managed_by_the_operator_on_every_cluster(rendered):
    """authOptions on every cluster spec: the operator then sets the token on the head, the workers,
    the autoscaler and the submitters, and sends it on its own dashboard calls. Nothing sets it by hand."""
    specs = 0
    for obj in all_objects(rendered):
        for spec in cluster_specs(obj):
            assert spec["authOptions"] == {"mode": "token", "secretName": "randommask-ray-token"}
            specs += 1
        if obj["kind"] == "RayJob":
            assert "rayClusterSpec" in obj["spec"] or obj in rendered["base"], "a job without a cluster (and auth)"
        for where, c in ray_containers(obj):
            names = {e["name"] for e in c.get("env", [])}
            assert not names & {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"}, f"{where}: set by hand, the operator sets them"
            assert "randommask-ray-token" not in json.dumps(c.get("envFrom", [])), where
    assert specs == 4 + 20  # 4 RayClusters, 20 RayJob clusters (the base's jobs get theirs in an overlay)


