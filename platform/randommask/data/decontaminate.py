"""Decontamination: which records share a k-mer (either strand) with a set of excluded sequences.

K-mers are 2-bit packed into uint64 (k <= 32) and canonical (the smaller of the k-mer and its
reverse complement, in the stored codes A=0 T=1 C=2 G=3, where complementing is ``code ^ 1``), so
one lookup covers both strands. A k-mer holding any other code (N, IUPAC, '-') matches nothing.
Everything is numpy over long concatenations of records: no Python loop per k-mer or per record.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from randommask.data.genome import CODE_MASK
from randommask.errors import UserError

DEFAULT_KMER = 31
MAX_KMER = 32  # 2 bits a base in a uint64
CHUNK_BASES = 1 << 22  # k-mers are computed this many bases at a time: bounded memory


@dataclass(frozen=True)
class KmerSet:
    """Sorted unique canonical k-mers of the excluded sequences, and a hashed bitmap of them: a k-mer
    whose bit is clear is surely absent, so the binary search runs only for the few whose bit is set."""

    k: int
    kmers: np.ndarray  # uint64, sorted, unique
    bitmap: np.ndarray  # bool, 2**BITMAP_BITS: any k-mer hashes here


BITMAP_BITS = 24  # 16 MiB: a few % false positives for ~1 M excluded k-mers
_HASH = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: the top bits of kmer * odd constant


def _slot(kmers: np.ndarray) -> np.ndarray:
    return (kmers * _HASH) >> np.uint64(64 - BITMAP_BITS)


def check_k(k: int) -> None:
    if not 1 <= k <= MAX_KMER:
        raise UserError(f"--exclude-kmer must be in [1, {MAX_KMER}], got {k}")


def canonical_kmers(codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Canonical k-mers of a code array (values 0-3 ACGT, anything else breaks k-mers) and their start
    positions, for every start whose k bases are all ACGT."""
    n = len(codes) - k + 1
    if n <= 0:
        return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
    bad = (codes & CODE_MASK) > 3
    bad_before = np.concatenate(([0], np.cumsum(bad, dtype=np.int64)))
    starts = np.flatnonzero(bad_before[k:] == bad_before[:n])
    # Doubling: k-mers of length a and b combine into a+b with one shift and one OR per strand, so
    # 31-mers take 8 combinations (1, 2, 4, 8, 16, then 24, 28, 30, 31) instead of 31 steps.
    fw = (codes & 3).astype(np.uint64)
    rc = fw ^ np.uint64(1)
    length = 1
    parts = {}
    while length * 2 <= k:
        parts[length] = (fw, rc)
        fw, rc = _combine(fw, rc, length, fw, rc, length)
        length *= 2
    for size in sorted(parts, reverse=True):
        if length + size <= k:
            fw, rc = _combine(fw, rc, length, *parts[size], size)
            length += size
    np.minimum(fw[:n], rc[:n], out=fw[:n])
    return fw[starts], starts


def _combine(fw_a: np.ndarray, rc_a: np.ndarray, a: int, fw_b: np.ndarray, rc_b: np.ndarray, b: int):
    """K-mers of length a+b from those of length a (at i) and b (at i+a), both strands."""
    m = min(len(fw_a), len(fw_b) - a)
    fw = fw_a[:m] << np.uint64(2 * b)
    fw |= fw_b[a : a + m]
    rc = rc_b[a : a + m] << np.uint64(2 * a)
    rc |= rc_a[:m]
    return fw, rc


def _concatenated(records: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Records joined by one non-ACGT separator (so no k-mer spans two), and each one's start."""
    lengths = np.fromiter((len(r) for r in records), dtype=np.int64, count=len(records))
    starts = np.concatenate(([0], np.cumsum(lengths + 1)[:-1])) if len(records) else np.zeros(0, np.int64)
    codes = np.frombuffer(b"\x04".join(records), dtype=np.uint8)
    return codes, starts


def _record_kmers(records: list[bytes], k: int):
    """(canonical k-mers, their positions, record starts) in batches of about CHUNK_BASES bases; the
    record of position p is ``searchsorted(starts, p, "right") - 1`` (asked only for hits)."""
    i = 0
    while i < len(records):
        size, j = 0, i
        while j < len(records) and (size < CHUNK_BASES or j == i):
            size += len(records[j]) + 1
            j += 1
        codes, starts = _concatenated(records[i:j])
        kmers, pos = canonical_kmers(codes, k)
        yield kmers, pos, starts
        i = j


def kmer_set(records: list[bytes], k: int) -> KmerSet:
    """The canonical k-mers of ``records``, for lookups."""
    check_k(k)
    parts = [kmers for kmers, _, _ in _record_kmers(records, k)]
    kmers = np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.uint64)
    bitmap = np.zeros(1 << BITMAP_BITS, dtype=bool)
    bitmap[_slot(kmers)] = True
    return KmerSet(k=k, kmers=kmers, bitmap=bitmap)


def contains(kmer_set: KmerSet, kmers: np.ndarray) -> np.ndarray:
    """Which of ``kmers`` are in the set (a sorted-array lookup)."""
    table = kmer_set.kmers
    found = np.zeros(len(kmers), dtype=bool)
    if not len(table) or not len(kmers):
        return found
    maybe = np.flatnonzero(kmer_set.bitmap[_slot(kmers)])
    at = np.minimum(np.searchsorted(table, kmers[maybe]), len(table) - 1)
    found[maybe] = table[at] == kmers[maybe]
    return found


def overlapping(records: list[bytes], kmer_set: KmerSet) -> np.ndarray:
    """Boolean per record: it shares at least one k-mer (either strand) with the excluded set."""
    hit = np.zeros(len(records), dtype=bool)
    first = 0
    for kmers, pos, starts in _record_kmers(records, kmer_set.k):
        hit[first + np.searchsorted(starts, pos[contains(kmer_set, kmers)], side="right") - 1] = True
        first += len(starts)
    return hit
