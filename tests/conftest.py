"""Shared fixtures. Real data lives in ../shared beside the repository; tests that need it skip
with a clear reason where it is absent (a user's clone)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
GENOMES = SHARED / "data" / "genomes"
ECOLI = GENOMES / "ecoli_536.fna.gz"
LAMBDA = GENOMES / "lambda_phage.fa.gz"


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


# ---- a real Ray cluster and a real S3-compatible server -------------------------------------------
import os

from randommask.s3server import local_s3

S3_KEY, S3_SECRET = "randommask-test-key", "randommask-test-secret"


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
def ray_local(s3):
    """One local Ray cluster (token auth on, Ray's default) for the in-process tests."""
    import ray

    from randommask.ray_runtime import ensure_ray

    os.environ.pop("RAY_ADDRESS", None)
    ensure_ray(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def prepared(ray_local, ecoli, tmp_path_factory):
    """E. coli 536 prepared once for the session (1% validation, the default)."""
    from randommask.prepare import prepare

    out = tmp_path_factory.mktemp("prepared") / "ecoli"
    prepare([str(ecoli)], str(out), show_progress=False)
    return str(out)


@pytest.fixture(scope="session")
def tiny_run(prepared, tmp_path_factory):
    """The tiny test config (jobs/configs/pretrain-tiny.yaml) pretrained once on E. coli, 150 steps:
    (run directory, summary, config). Pretraining tests check its outputs; inference tests use its model."""
    from randommask.config import load_config
    from randommask.train import pretrain

    storage = tmp_path_factory.mktemp("tiny-run")
    cfg = load_config(REPO / "jobs" / "configs" / "pretrain-tiny.yaml",
                      [f"data.prepared={prepared}", f"run.storage_path={storage}", "run.name=outputs",
                       "observability.progress=false"])
    return storage / "outputs", pretrain(cfg), cfg
