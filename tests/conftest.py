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


@pytest.fixture
def ecoli() -> Path:
    return _need(ECOLI)


@pytest.fixture
def lambda_phage() -> Path:
    return _need(LAMBDA)
