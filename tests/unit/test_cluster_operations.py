"""How the KubeRay manifests behave on a real cluster, read against KubeRay's, Kueue's and Ray's own
rules (rendered by tests/kustomized.py with the real kustomize, no API server): what is retried and
what is not, when a job's cluster and quota go, where CPU-only work runs, Kueue's admission with and
without RDMA, GPU node selection per cloud, and what Prometheus and the Ray dashboard are pointed at."""

import copy
import json
import os
import re
import shlex
import textwrap

import pytest
import yaml

from conftest import REPO
from kustomized import (
    GPUS_PER_NODE,
    KUEUE_OVERLAYS,
    OVERLAYS,
    RAY_VERSION,
    RDMA,
    cluster_specs,
    configs,
    crd_validators,
    gpu_group,
    group,
    jobs,
    kustomize,
    offered,
    qty,
    rendered,
    requests,
)
from randommask.cli import build_parser
from randommask.data.prepare import TASK_CPUS, parse_resources
from randommask.training.observability import CONTROLLER_GAUGES, GAUGES, controller_figures

__all__ = ["crd_validators", "rendered"]  # module fixtures (tests/kustomized.py)
KUBERAY = REPO / "cluster" / "kuberay"
AUTOSCALED = ("gpu", "gpu-rdma", "dev")


# ---- retries, clean-up, deadlines -----------------------------------------------------------------
def test_rayjobs_clean_up_retry_and_run_on_the_rayclusters_spec(rendered):
    for overlay in OVERLAYS:
        docs = rendered[overlay]
        source = {"kueue": "gpu", "kueue-rdma": "gpu-rdma"}.get(overlay, overlay)
        cluster = next(o for o in rendered[source] if o["kind"] == "RayCluster")
        for name, job in jobs(docs).items():
            s = job["spec"]
            # Kueue frees the quota when the job finishes: the cluster goes at once there.
            assert s["shutdownAfterJobFinishes"] is True
            assert s["ttlSecondsAfterFinished"] == 0 if overlay in KUEUE_OVERLAYS else s["ttlSecondsAfterFinished"] > 0
            assert s["backoffLimit"] >= 1 and s["submitterConfig"]["backoffLimit"] >= 1
            assert "env_vars" in yaml.safe_load(s["runtimeEnvYAML"])
            assert "clusterSelector" not in s
            spec = copy.deepcopy(s["rayClusterSpec"])
            if overlay in KUEUE_OVERLAYS or name == "randommask-prepare":  # fixed sizes; prepare holds no GPU
                for g, original in zip(spec["workerGroupSpecs"], cluster["spec"]["workerGroupSpecs"]):
                    for key in ("replicas", "minReplicas", "maxReplicas"):
                        g[key] = original[key]
            if overlay in KUEUE_OVERLAYS:  # no autoscaler, nor its port and label
                spec["enableInTreeAutoscaling"] = True
                spec["autoscalerOptions"] = cluster["spec"]["autoscalerOptions"]
                head = spec["headGroupSpec"]["template"]
                head["metadata"] = cluster["spec"]["headGroupSpec"]["template"]["metadata"]
                head["spec"]["containers"][0]["ports"] = cluster["spec"]["headGroupSpec"]["template"]["spec"][
                    "containers"][0]["ports"]
            assert spec == cluster["spec"], f"{overlay} {name}: a RayJob's cluster differs from the RayCluster"


def _sentences(text: str) -> list[str]:
    return [" ".join(x.split()) for x in re.split(r"(?<=[.;])\s+", text) if x.strip()]


def _deadline_claims(name: str, text: str) -> list[str]:
    """What a file says about deadlines and retries, one unit each: a Markdown table row whole,
    prose by sentence, YAML comments by sentence (a comment block counts as about the deadline when
    it or the three lines after it mention one, as a comment above the deadline's patch does)."""
    units = []
    if name.endswith(".md"):
        prose = [line for line in text.splitlines() if not line.startswith("|")]
        units = [line for line in text.splitlines() if line.startswith("|")]
        units += _sentences("\n".join(prose))
    else:
        lines = text.splitlines()
        i = 0
        while i < len(lines):
            block = []
            while i < len(lines) and "#" in lines[i]:
                block.append(lines[i].split("#", 1)[1])
                i += 1
            if block:
                about = "activeDeadlineSeconds" in "\n".join(lines[i:i + 3])
                units += [("deadline: " if about else "") + x for x in _sentences(" ".join(block))]
            i += 1
    return [u for u in units if re.search(r"deadline", u, re.I) and re.search(r"\bretr", u, re.I)]


def _says_retried(claim: str) -> bool:
    """Whether any mention of a retry in ``claim`` is not negated ("not retried", "retries no")."""
    for m in re.finditer(r"\bretr\w*", claim, re.I):
        before, after = claim[max(0, m.start() - 40):m.start()], claim[m.end():m.end() + 4]
        if not (re.search(r"\b(not|never|no)\b", before, re.I) or re.match(r"\s+no\b", after)):
            return True
    return False


def test_no_doc_or_comment_says_a_deadline_is_retried(rendered):
    """KubeRay retries a failed RayJob (backoffLimit) unless it failed with DeadlineExceeded; the
    deadline counts from each attempt's start. Production jobs run for days: they have none."""
    # the checker finds the claims this issue found (the old failure table row and dev comment)
    assert _says_retried(_deadline_claims("x.md", "| a job stuck past its deadline (dev: 1 h) | failed, then "
                                                  "retried as above |")[0])
    old_dev = ("  - patch: |-   # a dev job that runs an hour is stuck: fail it, and let the retry resume\n"
               "      - {op: add, path: /spec/activeDeadlineSeconds, value: 3600}\n")
    assert _says_retried(_deadline_claims("x.yaml", old_dev)[0])
    files = [*REPO.glob("docs/*.md"), REPO / "README.md", *KUBERAY.rglob("*.yaml")]
    claims = [(f.name, c) for f in files for c in _deadline_claims(f.name, f.read_text())]
    assert len(claims) >= 4, claims  # the failure table, section 5, the dev overlay, rayjobs.yaml
    assert [c for c in claims if _says_retried(c[1])] == []
    table = (REPO / "docs" / "deploy-kuberay.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| a job past its deadline"))
    assert "DeadlineExceeded" in row and "not retried" in row, row
    for overlay in OVERLAYS:
        for name, job in jobs(rendered[overlay]).items():
            deadline = job["spec"].get("activeDeadlineSeconds")
            assert deadline is None if overlay != "dev" else deadline >= 3600, (overlay, name)


# ---- where work runs ----------------------------------------------------------------------------
@pytest.mark.parametrize("overlay", ("gpu", "gpu-rdma"))
def test_cpu_work_has_a_cpu_group_and_data_prepare_starts_no_gpu_node(rendered, overlay):
    docs = rendered[overlay]
    cluster = next(o for o in docs if o["kind"] == "RayCluster")["spec"]
    assert [g["groupName"] for g in cluster["workerGroupSpecs"]] == ["gpu", "cpu"]
    cpu = group(cluster, "cpu")
    pod = cpu["template"]["spec"]
    # autoscaled from zero, never on a GPU node (no GPU request, no toleration of the GPU taint)
    assert cpu["replicas"] == cpu["minReplicas"] == 0 < cpu["maxReplicas"]
    assert not any("gpu" in r for r in requests(pod)) and "nvidia.com/gpu" not in str(pod.get("tolerations"))
    assert requests(pod)["cpu"] >= TASK_CPUS and requests(pod)["memory"] >= 16 * 2**30
    for name, job in jobs(docs).items():
        spec = job["spec"]["rayClusterSpec"]
        gpu_nodes = gpu_group(spec)["maxReplicas"]
        if name == "randommask-prepare":  # the autoscaler has no GPU node to start for its tasks
            assert gpu_nodes == 0 and group(spec, "cpu")["maxReplicas"] >= 1
        else:
            assert gpu_nodes == gpu_group(cluster)["maxReplicas"] > 0, name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_data_prepare_tasks_ask_for_what_only_cpu_nodes_offer(rendered, overlay):
    """On any cluster of the overlay, the standing one too: each prepare task asks for a custom
    resource that only the CPU group's nodes offer, so no GPU node can run it, and the autoscaler
    never starts one for it (the CPU group has room for at least one task)."""
    docs = rendered[overlay]
    prepare = jobs(docs)["randommask-prepare"]
    asked = parse_resources(build_parser().parse_args(["data", "prepare", *shlex.split(
        prepare["spec"]["entrypoint"])[2:]]).resources)
    assert asked, "data prepare asks for no custom resource"
    for obj in docs:
        for spec in cluster_specs(obj):
            for g in spec["workerGroupSpecs"]:
                offer = offered(g)
                fits = all(offer.get(k, 0) >= v for k, v in asked.items())
                has_gpu = any("gpu" in r for r in requests(g["template"]["spec"]))
                assert fits != has_gpu, (overlay, obj["metadata"]["name"], g["groupName"], offer)
                if fits:
                    assert requests(g["template"]["spec"])["cpu"] >= TASK_CPUS


def test_dev_runs_everything_on_its_one_cpu_group(rendered):
    cluster = next(o for o in rendered["dev"] if o["kind"] == "RayCluster")["spec"]
    assert [g["groupName"] for g in cluster["workerGroupSpecs"]] == ["cpu"]
    assert requests(cluster["workerGroupSpecs"][0]["template"]["spec"])["cpu"] >= TASK_CPUS


@pytest.mark.parametrize("component, selector", [
    ("gpu-node-gke", {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}),
    ("gpu-node-eks", {"node.kubernetes.io/instance-type": "p5.48xlarge"})])
def test_gpu_node_selection_for_gke_and_eks(tmp_path, component, selector):
    """The overlay docs/deploy-kuberay.md gives for GKE and EKS: every GPU group, the RayCluster's and
    each job's, selects the cloud's label instead of GPU feature discovery's."""
    here = os.path.relpath(KUBERAY, tmp_path)  # kustomize takes no absolute paths
    (tmp_path / "kustomization.yaml").write_text(textwrap.dedent(f"""\
        apiVersion: kustomize.config.k8s.io/v1beta1
        kind: Kustomization
        resources: [{here}/base]
        components: [{here}/components/{component}, {here}/components/cluster-in-jobs,
                     {here}/components/prepare-on-cpu]
        """))
    docs = kustomize(tmp_path)
    specs = [s for o in docs for s in cluster_specs(o)]
    assert len(specs) == 5
    for spec in specs:
        assert gpu_group(spec)["template"]["spec"]["nodeSelector"] == selector
        assert "nodeSelector" not in group(spec, "cpu")["template"]["spec"]
    guide = (REPO / "docs" / "deploy-kuberay.md").read_text()
    assert f"../../components/{component}" in guide


# ---- Kueue ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("overlay", KUEUE_OVERLAYS)
def test_kueue_admits_each_job_whole_with_pretraining_first(rendered, tmp_path, overlay):
    docs = rendered[overlay]
    cfg, sweep, trial_workers = configs(docs, tmp_path)
    by_kind: dict[str, dict] = {}
    for o in docs:
        by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
    local_queue = next(iter(by_kind["LocalQueue"].values()))
    cq = by_kind["ClusterQueue"][local_queue["spec"]["clusterQueue"]]
    assert len(cq["spec"]["resourceGroups"]) == 1
    flavors = cq["spec"]["resourceGroups"][0]["flavors"]
    assert [f["name"] for f in flavors] == list(by_kind["ResourceFlavor"])
    covered = cq["spec"]["resourceGroups"][0]["coveredResources"]
    # Kueue: every flavor lists every covered resource, in order
    assert all([r["name"] for r in f["resources"]] == covered for f in flavors)
    quota = {r["name"]: r["nominalQuota"] for r in flavors[0]["resources"]}
    assert quota["nvidia.com/gpu"] == 64
    priority = {n: o["value"] for n, o in by_kind["WorkloadPriorityClass"].items()}
    for name, job in jobs(docs).items():
        labels = job["metadata"]["labels"]
        assert labels["kueue.x-k8s.io/queue-name"] == local_queue["metadata"]["name"]
        assert labels["kueue.x-k8s.io/priority-class"] in priority
        spec = job["spec"]["rayClusterSpec"]
        assert spec["enableInTreeAutoscaling"] is False and "autoscalerOptions" not in spec
        assert all(g["replicas"] == g["minReplicas"] == g["maxReplicas"] for g in spec["workerGroupSpecs"])
        # What Kueue admits: head + each group's fixed workers + the submitter, covered and within quota.
        pods = [(spec["headGroupSpec"]["template"]["spec"], 1), (job["spec"]["submitterPodTemplate"]["spec"], 1)]
        pods += [(g["template"]["spec"], g["replicas"]) for g in spec["workerGroupSpecs"]]
        total: dict[str, float] = {}
        for pod, count in pods:
            for r, v in requests(pod).items():
                total[r] = total.get(r, 0) + v * count
        assert set(total) <= set(covered), (name, set(total) - set(covered))
        assert all(total[r] <= qty(quota[r]) for r in total), (name, total)
        gpu = gpu_group(spec)
        if name == "randommask-pretrain":
            assert gpu["replicas"] * GPUS_PER_NODE == cfg.scaling.num_workers
        if name == "randommask-sweep":
            assert gpu["replicas"] * GPUS_PER_NODE >= sweep.search.max_concurrent * trial_workers
        cpu = group(spec, "cpu")
        if name == "randommask-prepare":  # no GPU held for CPU work: one CPU node its tasks fit
            assert gpu["replicas"] == 0 and cpu["replicas"] == 1
            assert requests(cpu["template"]["spec"])["cpu"] >= TASK_CPUS
        else:
            assert cpu["replicas"] == 0 and gpu["replicas"] >= 1
    job_priority = {n: priority[j["metadata"]["labels"]["kueue.x-k8s.io/priority-class"]] for n, j in jobs(docs).items()}
    assert job_priority["randommask-pretrain"] > job_priority["randommask-finetune"] > job_priority["randommask-sweep"]
    assert cq["spec"]["preemption"]["withinClusterQueue"] == "LowerPriority"
    # With RDMA, the ClusterQueue covers the device resource, one per GPU node of the pool.
    rdma = overlay == "kueue-rdma"
    assert (RDMA in covered) == rdma == (RDMA in str(docs))
    if rdma:
        assert qty(quota[RDMA]) == qty(quota["nvidia.com/gpu"]) / GPUS_PER_NODE


# ---- monitoring -------------------------------------------------------------------------------------
def _pod_labels(obj: dict, where: str, spec: dict) -> list[tuple[dict, dict]]:
    """(labels, pod spec) of a cluster's pods: KubeRay's labels and the template's own."""
    out = [({"ray.io/is-ray-node": "yes", "ray.io/node-type": "head",
             **spec["headGroupSpec"]["template"].get("metadata", {}).get("labels", {})},
            spec["headGroupSpec"]["template"]["spec"])]
    out += [({"ray.io/is-ray-node": "yes", "ray.io/node-type": "worker",
              **g["template"].get("metadata", {}).get("labels", {})}, g["template"]["spec"])
            for g in spec["workerGroupSpecs"]]
    return out


def test_podmonitors_scrape_only_ports_that_exist(rendered):
    """KubeRay's sample scrapes the head's metrics, autoscaler and dashboard ports and each worker's
    metrics. Here a PodMonitor endpoint never points at a port a pod it selects does not declare,
    and the autoscaler's port is declared (and scraped) exactly where an autoscaler runs."""
    monitors = [o for o in rendered["monitoring"] if o["kind"] == "PodMonitor"]
    endpoints = sorted(e["port"] for m in monitors for e in m["spec"]["podMetricsEndpoints"])
    assert endpoints == ["as-metrics", "dash-metrics", "metrics", "metrics"]
    for overlay in OVERLAYS:
        for obj in rendered[overlay]:
            for spec in cluster_specs(obj):
                for labels, pod in _pod_labels(obj, overlay, spec):
                    ports = {p["name"]: p["containerPort"] for c in pod["containers"] for p in c.get("ports", [])}
                    selected = [m for m in monitors if m["spec"]["selector"]["matchLabels"].items() <= labels.items()]
                    assert selected, (overlay, labels)
                    for m in selected:
                        for e in m["spec"]["podMetricsEndpoints"]:
                            assert e["port"] in ports, (overlay, obj["metadata"]["name"], m["metadata"]["name"], e)
                    if labels["ray.io/node-type"] == "head":
                        assert ("as-metrics" in ports) == spec["enableInTreeAutoscaling"], overlay
                        assert (ports.get("as-metrics"), ports["dash-metrics"]) in ((44217, 44227), (None, 44227))
                start = {"head": spec["headGroupSpec"], **{g["groupName"]: g for g in spec["workerGroupSpecs"]}}
                for g in start.values():
                    ports = {p["name"]: p["containerPort"] for p in g["template"]["spec"]["containers"][0]["ports"]}
                    assert g["rayStartParams"]["metrics-export-port"] == str(ports["metrics"])
    assert {o for o in OVERLAYS if any(s["enableInTreeAutoscaling"] for x in rendered[o]
                                       for s in cluster_specs(x))} == set(AUTOSCALED)


def test_the_ray_dashboard_reads_the_shipped_prometheus_and_grafana(rendered):
    """Without RAY_GRAFANA_HOST and RAY_PROMETHEUS_HOST the dashboard's metrics tab stays empty. They
    name kube-prometheus-stack's services for the release the PodMonitors are labelled for."""
    release = {o["metadata"]["labels"]["release"] for o in rendered["monitoring"] if o["kind"] == "PodMonitor"}
    assert release == {"prometheus"}
    for overlay in OVERLAYS:
        for obj in rendered[overlay]:
            for spec in cluster_specs(obj):
                env = {e["name"]: e.get("value") for e in spec["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]}
                assert re.fullmatch(r"http://prometheus-kube-prometheus-prometheus\.[a-z-]+\.svc:9090",
                                    env["RAY_PROMETHEUS_HOST"]), overlay
                assert re.fullmatch(r"http://prometheus-grafana\.[a-z-]+\.svc:80", env["RAY_GRAFANA_HOST"]), overlay
                assert env["RAY_GRAFANA_IFRAME_HOST"].startswith("http://")
    guide = (REPO / "docs" / "deploy-kuberay.md").read_text()
    assert "--namespace prometheus-system" in guide and "RAY_GRAFANA_IFRAME_HOST" in guide
    # Grafana refuses iframes unless embedding is allowed, and the iframes carry no login: the
    # values the guide installs with allow both, for viewers only, and load our dashboards' label.
    assert "-f cluster/monitoring/kube-prometheus-stack-values.yaml" in guide
    values = yaml.safe_load((REPO / "cluster" / "monitoring" / "kube-prometheus-stack-values.yaml").read_text())
    ini = values["grafana"]["grafana.ini"]
    assert ini["security"]["allow_embedding"] is True
    assert ini["auth.anonymous"] == {"enabled": True, "org_role": "Viewer"}
    labelled = {k for o in rendered["monitoring"] if o["kind"] == "ConfigMap" for k in o["metadata"]["labels"].items()}
    sidecar = values["grafana"]["sidecar"]["dashboards"]
    assert (sidecar["label"], sidecar["labelValue"]) in labelled and sidecar["searchNamespace"] == "ALL"


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
