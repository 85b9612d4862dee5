"""The read task's own retry of a chunk (data.stream.ReadChunk.read), past the storage layer's: a
transient fault that outlasts the storage window is retried READ_RETRIES more times, then surfaces.
The storage layer's retry window absorbs the integration fault tests' outages, so only this test
reaches the task's loop (the storage layer's own retries are in tests/integration/test_storage.py)."""

import numpy as np
import pytest

from randommask.common import storage
from randommask.data import stream
from randommask.data.config import DataSection
from randommask.data.stream import READ_RETRIES, ReadChunk

BASES = "ATCG"  # code order: A=0, T=1, C=2, G=3


@pytest.fixture
def chunk(tmp_path):
    """A shard of 64 known bases and one chunk row that reads two 16-base windows of it (bases 8-24 and
    24-40), as build_plan writes rows."""
    codes = np.random.default_rng(0).integers(0, 4, 64).astype(np.uint8)
    (tmp_path / "shard.bin").write_bytes(codes.tobytes())
    row = {"chunk": 0, "first_sample": 0, "num_samples": 2, "shard": ["shard.bin"], "read_start": [8],
           "num_windows": [2], "global_start": [1000]}
    reader = ReadChunk(DataSection(prepared=str(tmp_path), window_bp=16, k=3), seed=0, epoch=0, train=False)
    return codes, row, reader


def faulty(monkeypatch, failures: int) -> dict:
    """storage.cat_ranges raising TransientStorageError ``failures`` times, then reading; waits recorded,
    not slept."""
    real, seen = storage.cat_ranges, {"calls": 0, "sleeps": []}

    def cat_ranges(*args, **kwargs):
        seen["calls"] += 1
        if seen["calls"] <= failures:
            raise storage.TransientStorageError("s3://x: endpoint down (still failing after 180 s of retries)")
        return real(*args, **kwargs)

    monkeypatch.setattr(storage, "cat_ranges", cat_ranges)
    monkeypatch.setattr(stream.time, "sleep", seen["sleeps"].append)
    return seen


def kmer_ids(window: np.ndarray, k: int = 3) -> list[int]:
    """[CLS] k-mer ids [SEP], by hand: k-mer id = 5 + its digits in base 4 (A=0, T=1, C=2, G=3)."""
    ids = [sum(int(window[i + j]) * 4 ** (k - 1 - j) for j in range(k)) + 5 for i in range(len(window) - k + 1)]
    return [2, *ids, 3]


@pytest.mark.parametrize("failures", [1, READ_RETRIES])
def test_a_chunk_read_that_fails_transiently_is_retried_and_reads_the_same_windows(chunk, monkeypatch, failures):
    codes, row, reader = chunk
    seen = faulty(monkeypatch, failures)
    out = reader.read(row)
    assert seen["calls"] == failures + 1 and len(seen["sleeps"]) == failures
    assert all(0 < s <= 60 for s in seen["sleeps"])  # spaced, capped at a minute
    assert out["input_ids"].tolist() == [kmer_ids(codes[8:24]), kmer_ids(codes[24:40])]
    assert out["coord"].tolist() == [1000, 1016] and out["sample"].tolist() == [0, 1]


def test_a_fault_that_outlasts_the_retries_reaches_the_caller(chunk, monkeypatch):
    _, row, reader = chunk
    seen = faulty(monkeypatch, READ_RETRIES + 1)
    with pytest.raises(storage.TransientStorageError, match="endpoint down"):
        reader.read(row)
    assert seen["calls"] == READ_RETRIES + 1 and len(seen["sleeps"]) == READ_RETRIES
