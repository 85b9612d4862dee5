"""``data prepare`` for corpora of short records: sequence tables and multi-record FASTA, read whole
(records.py), exact duplicates kept once, records sharing a k-mer with an ``--exclude`` set dropped
(decontaminate.py), and the rest packed into contigs joined by runs of N.

A contig is a manifest record like a genome's, so streaming is unchanged. The joins are
``join_n`` N bases (at least the tokenizer's k: no k-mer spans two records), and the validation
split holds whole records: each held-out block is widened to the record boundaries it cuts.
Everything runs in one process, before anything is written: bad input leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from randommask.common import storage
from randommask.data.decontaminate import DEFAULT_KMER, check_k, kmer_set, overlapping
from randommask.data.genome import CODE_MASK
from randommask.data.records import expand_exclude, read_source, table_delimiter
from randommask.data.shards import (
    FORMAT_VERSION,
    MANIFEST,
    ShardWriter,
    build_manifest,
    read_manifest,
)
from randommask.data.split import record_aligned_blocks
from randommask.data.tokenizer import INVALID
from randommask.errors import UserError

DEFAULT_JOIN_N = 6  # the default tokenizer k: 6-mers never span two records
CONTIG_BP = 1 << 20  # records are packed into contigs of about this size
_UPPER = bytes(b & CODE_MASK for b in range(256))  # the stored byte without its soft-mask bit


@dataclass(frozen=True)
class CorpusOptions:
    """How short records become a corpus: exclusion sets, their k, and the joins between records."""

    exclude: tuple[str, ...] = ()
    exclude_kmer: int = DEFAULT_KMER
    join_n: int = DEFAULT_JOIN_N
    pack: bool = False  # pack FASTA records too (tables and --exclude always pack)

    def applies(self, inputs: list[dict[str, Any]]) -> bool:
        return self.pack or bool(self.exclude) or any(table_delimiter(i["uri"]) for i in inputs)


@dataclass(frozen=True)
class Excluded:
    """The excluded files and their k-mers."""

    files: list[dict[str, Any]]
    kmers: Any  # decontaminate.KmerSet


def load_exclusion(options: CorpusOptions, storage_options: dict | None) -> Excluded | None:
    if not options.exclude:
        return None
    check_k(options.exclude_kmer)
    files, records = [], []
    for uri in expand_exclude(list(options.exclude), storage_options):
        src = read_source(uri, storage_options)
        files.append({"uri": uri, "bytes": src.bytes, "sha256": src.sha256, "sequences": len(src.records)})
        records += src.records
    return Excluded(files=files, kmers=kmer_set(records, options.exclude_kmer))


def _select(inputs, exclusion: Excluded | None, min_length: int, storage_options) -> list[dict[str, Any]]:
    """Each input's kept records and counts: read, under min_length, duplicates (of any record kept
    or dropped before it, in any input), dropped for a shared k-mer (counted among the unique ones)."""
    seen: set[bytes] = set()
    out = []
    for src in inputs:
        got = read_source(src["uri"], storage_options)
        long_enough = [r for r in got.records if len(r) >= min_length]
        unique = []
        for r in long_enough:
            key = hashlib.blake2b(r.translate(_UPPER), digest_size=16).digest()  # case is soft-masking only
            if key not in seen:
                seen.add(key)
                unique.append(r)
        dropped = overlapping(unique, exclusion.kmers) if exclusion else np.zeros(len(unique), dtype=bool)
        kept = [r for r, d in zip(unique, dropped) if not d]
        out.append({"source": {"uri": got.uri, "bytes": got.bytes, "sha256": got.sha256}, "kept": kept,
                    "counts": {"records_read": len(got.records), "skipped_records": len(got.records) - len(long_enough),
                               "duplicates": len(long_enough) - len(unique), "dropped_overlap": int(dropped.sum()),
                               "records_kept": len(kept), "bases_kept": sum(map(len, kept))}})
    return out


def _runs(codes: np.ndarray) -> np.ndarray:
    """(n, 2) runs of non-ACGT codes in one contig."""
    bad = np.concatenate(([False], (codes & CODE_MASK) == INVALID, [False])).astype(np.int8)
    edges = np.flatnonzero(np.diff(bad))
    return edges.reshape(-1, 2).astype(np.int64)


def _pack(index: int, kept: list[bytes], join_n: int, writer: ShardWriter):
    """Kept records -> contigs of about CONTIG_BP joined by ``join_n`` N; the manifest records and the
    (contig-local) member spans (start, end) of each contig."""
    join = bytes([INVALID]) * join_n
    contigs, members, i = [], [], 0
    while i < len(kept):
        j, size = i, 0
        while j < len(kept) and (size < CONTIG_BP or j == i):
            size += len(kept[j]) + join_n
            j += 1
        data = join.join(kept[i:j])
        lengths = np.array([len(r) for r in kept[i:j]], dtype=np.int64)
        starts = np.concatenate(([0], np.cumsum(lengths + join_n)[:-1]))
        members.append(np.stack([starts, starts + lengths], axis=1))
        codes = np.frombuffer(data, dtype=np.uint8)
        shard, offset = writer.begin_record()
        writer.write(data)
        contigs.append({"name": f"f{index:05d}-c{len(contigs):06d}", "length": len(data), "shard": shard,
                        "offset": offset, "n_bases": int(np.count_nonzero((codes & CODE_MASK) == INVALID)),
                        "soft_bases": int(np.count_nonzero(codes & 8)), "nruns": _runs(codes)})
        i = j
    return contigs, members


def _held_out_records(members: np.ndarray, val: list[tuple[int, int, int]]) -> int:
    held = 0
    for r, s, e in val:
        rows = members[members[:, 0] == r]
        held += int(np.count_nonzero((rows[:, 1] >= s) & (rows[:, 2] <= e)))
    return held


def prepare_corpus(inputs: list[dict[str, Any]], out: str, options: CorpusOptions, *, val_fraction: float,
                   seed: int, min_length: int, storage_options: dict | None, shard_bytes: int) -> dict[str, Any]:
    """Read, deduplicate, decontaminate and pack ``inputs`` (expanded sources) into shards and a manifest."""
    if options.join_n < 1:
        raise UserError(f"--join-n must be >= 1, got {options.join_n}")
    with storage.preflight():
        exclusion = load_exclusion(options, storage_options)
        selected = _select(inputs, exclusion, min_length, storage_options)
        old_run = read_manifest(out, storage_options).get("run") if storage.exists(
            storage.join(out, MANIFEST), storage_options) else None
    if not any(s["kept"] for s in selected):
        raise UserError(f"no record kept from the sources ({sum(s['counts']['records_read'] for s in selected)} read); "
                        "check --min-length and --exclude")
    identity = json.dumps({"inputs": inputs, "min_length": min_length, "version": FORMAT_VERSION,
                           "join_n": options.join_n, "exclude_kmer": options.exclude_kmer,
                           "excluded": [f["sha256"] for f in exclusion.files] if exclusion else []}, sort_keys=True)
    run = hashlib.sha256(identity.encode()).hexdigest()[:16]
    run_uri = storage.join(out, "shards", run)
    try:
        return _write(selected, inputs, out, run, options, exclusion, val_fraction, seed, min_length,
                      storage_options, shard_bytes, old_run)
    except BaseException:
        if run != old_run:  # never delete what the current manifest points to
            storage.remove(run_uri, storage_options, recursive=True)
        raise


def _write(selected, inputs, out, run, options, exclusion, val_fraction, seed, min_length, storage_options,
           shard_bytes, old_run) -> dict[str, Any]:
    run_uri = storage.join(out, "shards", run)
    results, member_rows = [], []
    for index, sel in enumerate(selected):
        writer = ShardWriter(run_uri, index, shard_bytes, storage_options)
        try:
            contigs, members = _pack(index, sel["kept"], options.join_n, writer)
            shards = writer.finish()
        finally:
            writer.cleanup()
        results.append({"index": index, "records": contigs, "shards": shards, "source": sel["source"],
                        "skipped": sel["counts"]["skipped_records"]})
        member_rows += members
    records = [(r, rec) for r in results for rec in r["records"]]
    members = np.concatenate([np.column_stack([np.full(len(m), c, dtype=np.int64), m])
                              for c, m in enumerate(member_rows)])
    lengths = np.array([rec["length"] for _, rec in records], dtype=np.int64)
    val = record_aligned_blocks(lengths, members, val_fraction, seed)
    manifest = build_manifest(inputs, results, records, run, val_fraction, seed, min_length, out, storage_options,
                              val=val)
    buf = io.BytesIO()
    np.save(buf, members)
    storage.write_bytes(storage.join(run_uri, "members.npy"), buf.getvalue(), storage_options)
    counts = [s["counts"] for s in selected]
    for source, c in zip(manifest["sources"], counts):
        source.update(c)
    manifest["options"].update(join_n=options.join_n, exclude_kmer=options.exclude_kmer)
    manifest["packing"] = {"join_n": options.join_n, "contig_bp": CONTIG_BP, "members": f"shards/{run}/members.npy",
                           "records": len(members), "validation_records": _held_out_records(members, val)}
    manifest["exclude"] = {"kmer": options.exclude_kmer, "strands": "both",
                           "files": exclusion.files if exclusion else [],
                           "kmers": int(len(exclusion.kmers.kmers)) if exclusion else 0}
    for key in ("records_read", "duplicates", "dropped_overlap", "records_kept", "bases_kept"):
        manifest["totals"][key] = sum(c[key] for c in counts)
    storage.write_bytes(storage.join(out, MANIFEST), (json.dumps(manifest, indent=1) + "\n").encode(), storage_options)
    if old_run and old_run != run:
        storage.remove(storage.join(out, "shards", old_run), storage_options, recursive=True)
    return manifest
