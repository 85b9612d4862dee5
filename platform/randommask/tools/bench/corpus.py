"""Benchmark of corpus decontamination: which records share a 31-mer with an excluded set."""

from __future__ import annotations

import time

import numpy as np

from randommask.data.decontaminate import kmer_set, overlapping
from randommask.data.genome import genome_codes
from randommask.data.records import expand_exclude, read_source
from randommask.tools.bench.common import resolve_genome

_TEXT = np.frombuffer(b"ATCGNNNN", dtype=np.uint8)
_COMP = str.maketrans("ACGT", "TGCA")


def _excluded(exclude: list[str] | None, codes: np.ndarray, rng: np.random.Generator, record_bp: int) -> list[bytes]:
    if exclude:
        return [r for uri in expand_exclude(exclude) for r in read_source(uri).records]
    # GUE's dev and test sets hold ~17,600 sequences of 70-100 bp: as many random ones, 1% of them cut
    # from the genome so that some corpus records share 31-mers with them.
    fake = [rng.integers(0, 4, record_bp).astype(np.uint8).tobytes() for _ in range(17_424)]
    starts = rng.integers(0, len(codes) - record_bp, 176)
    return fake + [codes[s : s + record_bp].tobytes() for s in starts]


def _baseline(records: list[bytes], excluded: list[bytes], k: int) -> list[bool]:
    """The plain way: Python sets of k-mer strings, both strands, one substring lookup at a time."""
    table: set[str] = set()
    for r in excluded:
        s = _TEXT[np.frombuffer(r, dtype=np.uint8) & 7].tobytes().decode()
        for i in range(len(s) - k + 1):
            m = s[i : i + k]
            if "N" not in m:
                table.add(m)
                table.add(m.translate(_COMP)[::-1])
    out = []
    for r in records:
        s = _TEXT[np.frombuffer(r, dtype=np.uint8) & 7].tobytes().decode()
        out.append(any(s[i : i + k] in table for i in range(len(s) - k + 1)))
    return out


def bench_exclude(genome: str | None = None, corpus_mbp: float = 100.0, record_bp: int = 100,
                  exclude: list[str] | None = None, kmer: int = 31, baseline_mbp: float = 10.0, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    codes = genome_codes(resolve_genome(genome))
    n = int(corpus_mbp * 1e6 / record_bp)
    starts = rng.integers(0, len(codes) - record_bp, n)
    records = [codes[s : s + record_bp].tobytes() for s in starts]
    excluded = _excluded(exclude, codes, rng, record_bp)

    t0 = time.perf_counter()
    kmers = kmer_set(excluded, kmer)
    t1 = time.perf_counter()
    hit = overlapping(records, kmers)
    t2 = time.perf_counter()
    n_base = int(baseline_mbp * 1e6 / record_bp)
    t3 = time.perf_counter()
    slow = _baseline(records[:n_base], excluded, kmer)
    t4 = time.perf_counter()
    if slow != hit[:n_base].tolist():
        raise AssertionError("exclude baseline and ours disagree")
    ours_bp_s = n * record_bp / (t2 - t0)
    base_bp_s = n_base * record_bp / (t4 - t3)
    return {
        "bench": "exclude", "corpus_bp": n * record_bp, "records": n, "excluded_sequences": len(excluded),
        "excluded_kmers": int(len(kmers.kmers)), "k": kmer, "dropped": int(hit.sum()),
        "ours_s": round(t2 - t0, 2), "ours_index_s": round(t1 - t0, 2), "ours_bp_per_s": round(ours_bp_s),
        "baseline_bp": n_base * record_bp, "baseline_bp_per_s": round(base_bp_s), "ratio": round(ours_bp_s / base_bp_s, 1),
        "baseline": "python sets of k-mer strings, both strands (set built inside the timing)",
    }
