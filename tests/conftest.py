"""Shared fixtures and helpers of both tiers: tests/unit (no Ray, no server, a few minutes) and
tests/integration (a real Ray cluster, a real S3-compatible server, real runs). Real data lives in
../shared beside the repository; tests that need it skip with a clear reason where it is absent (a
user's clone).

Test modules import the constants and helpers below with ``from conftest import ...``: pytest puts
this folder on ``sys.path`` when it loads this file (its default "prepend" import mode), and the
tiers are packages (``__init__.py``) so that a file may have the same name in both."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from randommask.tools.mlflow_server import local_mlflow
from randommask.tools.s3server import local_s3

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
GENOMES = SHARED / "data" / "genomes"
ECOLI = GENOMES / "ecoli_536.fna.gz"
LAMBDA = GENOMES / "lambda_phage.fa.gz"
GUE_DIR = SHARED / "data" / "gue"
GUE_BASELINES = SHARED / "data" / "gue-published-baselines.csv"  # the published scores (finetune --baselines)
TINY_CONFIG = REPO / "jobs" / "configs" / "pretrain-tiny.yaml"  # the tiny test config
UNIT = Path(__file__).resolve().parent / "unit"
MLFLOW_SERVER = REPO / ".venv-mlflow" / "bin" / "mlflow"  # the tracking server's own environment (Makefile)

# Ray Train's controller polls its workers every 2 s by default, so a run's end (and each report) is
# seen up to 2 s late; the suite runs about fifty pretrainings. Every driver started from the tests
# inherits this (Ray Train passes it on to its controller); a missed poll only counts toward the
# 10-minute worker health timeout.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")

S3_KEY, S3_SECRET = "randommask-test-key", "randommask-test-secret"
# What the unit tier must not start: a Ray cluster, an S3 server, or anything built on them.
SERVER_FIXTURES = {"s3", "ray_local", "prepared", "tiny_run", "mlflow"}


# ---- helpers ----------------------------------------------------------------------------------------
def write_fasta(path: Path, records: dict[str, str], width: int = 60, gz: bool = False, crlf: bool = False) -> Path:
    """``records`` ({name: sequence}) as a FASTA file, ``width`` bases a line, gzipped or with CRLF endings."""
    nl = "\r\n" if crlf else "\n"
    text = "".join(f">{name} test record{nl}" + nl.join(seq[i : i + width] for i in range(0, len(seq), width)) + nl
                   for name, seq in records.items())
    data = text.encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def random_dna(n: int, rng: int | np.random.Generator = 0) -> str:
    """``n`` uniform random bases from ``rng`` (a seed, or a generator that successive calls advance)."""
    return "".join(np.random.default_rng(rng).choice(list("ACGT"), n))


def jsonl(path: str | Path) -> list[dict]:
    """The rows of a local JSONL file (metrics.jsonl, events.jsonl)."""
    return [json.loads(x) for x in Path(path).read_text().splitlines()]


def step_at(lines: list[dict], t: float) -> float:
    """The step a run was at, at wall-clock time ``t``, from its metrics lines (step, time): interpolated
    between two lines, or extrapolated at the pace of the last ones."""
    for a, b in zip(lines, lines[1:]):
        if a["time"] <= t < b["time"]:
            return a["step"] + (t - a["time"]) / (b["time"] - a["time"]) * (b["step"] - a["step"])
    a, b = lines[max(0, len(lines) - 4)], lines[-1]
    pace = (b["step"] - a["step"]) / (b["time"] - a["time"]) if b["time"] > a["time"] else 0.0
    return b["step"] + max(0.0, t - b["time"]) * pace


def fault_figures(what: str, lines: list[dict], fault_at: float, resume: dict) -> str:
    """One line for the failure table (docs/pretraining.md): the steps a fault cost and the seconds from
    the fault to training again. ``lines`` are the run's final metrics lines (those up to the resumed
    step are the first attempt's), ``resume`` its resume event."""
    before = [x for x in lines if x["step"] <= resume["step"]]
    at = step_at(before, fault_at)
    line = (f"{what}: at about step {at:.0f}, resumed from step {resume['step']} (about "
            f"{max(0.0, at - resume['step']):.0f} steps lost), {resume['time'] - fault_at:.0f} s from the fault "
            "to training again")
    print("\nFAULT " + line)
    return line


def run_cli(*args: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """``python -m randommask ARGS`` in a fresh process, its output captured as text."""
    return subprocess.run([sys.executable, "-m", "randommask", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def run_main(capsys, *args) -> tuple[int, str, str]:
    """``randommask ARGS`` in this process, without an interpreter's start-up (seconds of imports):
    (exit status, stdout, stderr). ``run_cli`` checks what a real process prints."""
    from randommask.cli import main

    capsys.readouterr()
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def load_tiny(prepared, storage, name: str, *overrides: str):
    """The tiny test config on ``prepared``, writing run ``name`` under ``storage``, no progress bar."""
    from randommask.training.config import load_config

    return load_config(TINY_CONFIG, [f"data.prepared={prepared}", f"run.storage_path={storage}", f"run.name={name}",
                                     "observability.progress=false", *overrides])


def pytest_collection_modifyitems(config, items):
    """The unit tier starts no Ray cluster and no server: a unit test that asks for one is an error."""
    for item in items:
        if UNIT in Path(str(item.path)).resolve().parents:
            used = SERVER_FIXTURES & set(getattr(item, "fixturenames", ()))
            if used or item.get_closest_marker("ray"):
                raise pytest.UsageError(f"{item.nodeid}: a unit test uses {sorted(used) or 'the ray marker'}; "
                                        "it belongs in tests/integration")


# ---- real data --------------------------------------------------------------------------------------
def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data {path} is absent (it ships in ../shared beside the repository)")
    return path


@pytest.fixture(scope="session")
def ecoli() -> Path:
    return _need(ECOLI)


@pytest.fixture(scope="session")
def lambda_phage() -> Path:
    return _need(LAMBDA)


@pytest.fixture(scope="session")
def gue_dir() -> Path:
    return _need(GUE_DIR)


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """This test's own node cache (fetched and decompressed genomes, indexes), not the user's."""
    monkeypatch.setenv("RANDOMMASK_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny model directory as pretraining writes it (model + tokenizer files), seed 0. Read only:
    a test that changes a checkpoint copies it first."""
    import torch

    from randommask.data.tokenizer import KmerTokenizer
    from randommask.training.model import build_mlm

    d = tmp_path_factory.mktemp("ckpt") / "final"
    torch.manual_seed(0)
    build_mlm("tiny").save_pretrained(d)
    KmerTokenizer(6).save_pretrained(d)
    return d


def _build_sharp(d: Path) -> None:
    """The sharp model's recipe (``sharp_checkpoint``); its source enters the cache key."""
    import torch

    from randommask.data.tokenizer import KmerTokenizer
    from randommask.training.model import build_mlm

    torch.manual_seed(1)
    mlm = build_mlm("tiny", 6)
    with torch.no_grad():
        mlm.cls.predictions.decoder.weight.mul_(40)
    mlm.save_pretrained(d)
    KmerTokenizer(6).save_pretrained(d)


MODEL_MANIFEST = "randommask-test-manifest.json"  # written last: a folder without a matching one is not used


def _files_digest(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.iterdir()) if p.is_file() and p.name != MODEL_MANIFEST}


def _complete(d: Path) -> bool:
    """Every file the manifest names is there with its bytes, and nothing else: not partial, not edited."""
    try:
        return json.loads((d / MODEL_MANIFEST).read_text()) == _files_digest(d)
    except (OSError, ValueError):
        return False


def cached_model_dir(build: Callable[[Path], None], inputs: tuple[str, ...], root: Path | None = None) -> Path:
    """The folder ``build`` fills, built once per machine and reused by later processes (mutmut runs
    every mutant in a fresh one): under the system temporary folder, named by a hash of ``build``'s
    source, of the package files it reads (``inputs``, relative to the package) and of the versions of
    torch, transformers and safetensors, so a change to any of them builds a new one. It is built in a
    temporary sibling, a manifest of its files' sha256 written last, and renamed into place; a folder
    whose files do not match its manifest (partial, edited) is moved aside and built again."""
    import importlib.metadata
    import inspect
    import shutil
    import tempfile

    import randommask

    h = hashlib.sha256(inspect.getsource(build).encode())
    package = Path(randommask.__file__).parent
    for rel in inputs:
        h.update(rel.encode() + b"\0" + (package / rel).read_bytes())
    for dist in ("torch", "transformers", "safetensors"):
        h.update(f"{dist}=={importlib.metadata.version(dist)}".encode())
    root = root or Path(tempfile.gettempdir()) / "randommask-test-models"
    final = root / f"{build.__name__.strip('_')}-{h.hexdigest()[:20]}"
    if _complete(final):
        return final
    root.mkdir(parents=True, exist_ok=True)
    if final.exists():  # partial or edited: out of the way (a rename is atomic), then removed
        stale = Path(tempfile.mkdtemp(dir=root, prefix=".stale-"))
        try:
            final.rename(stale / "old")
        except OSError:
            pass  # another process moved it first
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".build-"))
    try:
        build(tmp)
        (tmp / MODEL_MANIFEST).write_text(json.dumps(_files_digest(tmp)))
        os.chmod(tmp, 0o755)
        tmp.rename(final)  # fails if another process renamed a (complete) one first: then use that one
    except OSError:
        if not _complete(final):
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


@pytest.fixture(scope="session")
def sharp_checkpoint() -> Path:
    """A tiny model (seed 1) whose output layer is scaled up 40 times: its predictions are far from
    uniform, so the covering tokens and the two strands visibly disagree and every way of combining
    them gives a different number. Read only: it is cached on disk across processes (``cached_model_dir``)."""
    return cached_model_dir(_build_sharp, ("training/model.py", "data/tokenizer.py"))


# ---- a real Ray cluster and a real S3-compatible server (integration tier) ---------------------------
@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """``rclone serve s3`` on a free loopback port; the standard AWS variables point at it, as users
    set them. Ray starts after this fixture, so its workers inherit them."""
    root = tmp_path_factory.mktemp("s3root")
    with local_s3(root, S3_KEY, S3_SECRET, log=root.parent / "rclone.log") as server:
        saved = {k: os.environ.get(k) for k in server.env()}
        os.environ.update(server.env())
        try:
            yield server
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


@pytest.fixture(scope="session")
def mlflow(tmp_path_factory):
    """A real MLflow tracking server (``mlflow server``, SQLite backend) on a free loopback port,
    shared by the tracking tests; each test finds its own runs by their keys."""
    root = tmp_path_factory.mktemp("mlflow")
    with local_mlflow(root, log=root / "server.log", executable=str(MLFLOW_SERVER)) as server:
        yield server


def mlflow_runs(uri: str, key: str | None = None, parent: str | None = None) -> tuple[object, list]:
    """(client, runs) of the ``randommask`` experiment: the run keyed ``key``, or the children of ``parent``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("randommask")
    where = f"tags.`randommask.key` = '{key}'" if key else f"tags.`mlflow.parentRunId` = '{parent}'"
    return client, client.search_runs([exp.experiment_id], filter_string=where)


def mlflow_run(uri: str, key: str):
    """(client, run): the one MLflow run keyed ``key``."""
    client, runs = mlflow_runs(uri, key=key)
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return client, runs[0]


def metric_history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    """(step, value) of metric ``key`` as the server holds it, by step."""
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


@pytest.fixture(scope="session")
def ray_local(s3):
    """One local Ray cluster (token auth on, Ray's default) for the in-process tests."""
    import ray

    from randommask.common.ray_runtime import ensure_ray

    os.environ.pop("RAY_ADDRESS", None)
    # Workers push metrics to the node's agent every 10 s by default; a test that reads the endpoint
    # waits less at 2 s (the exported series are the same).
    os.environ.setdefault("RAY_metrics_report_interval_ms", "2000")
    ensure_ray(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def prepared(ray_local, ecoli, tmp_path_factory):
    """E. coli 536 prepared once for the session (1% validation, the default)."""
    from randommask.data.prepare import prepare

    out = tmp_path_factory.mktemp("prepared") / "ecoli"
    prepare([str(ecoli)], str(out), show_progress=False)
    return str(out)


@pytest.fixture(scope="session")
def tiny_run(prepared, tmp_path_factory):
    """The tiny test config (jobs/configs/pretrain-tiny.yaml) pretrained once on E. coli, 150 steps:
    (run directory, summary, config). Pretraining tests check its outputs; inference tests use its model."""
    from randommask.training.driver import pretrain

    storage = tmp_path_factory.mktemp("tiny-run")
    cfg = load_tiny(prepared, storage, "outputs")
    return storage / "outputs", pretrain(cfg), cfg
