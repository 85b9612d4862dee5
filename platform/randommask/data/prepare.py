"""``randommask data prepare``: FASTA files (local or object storage) -> shards + ``manifest.json``.

Layout under DST (see docs/data.md):

    manifest.json                     written last, atomically; the only entry point
    shards/<run>/f00000-000.bin       1 byte per base (code | soft-mask bit), whole records
    shards/<run>/nruns.npy            (n, 2) int64 runs of non-ACGT bases, in global coordinates

``<run>`` is a digest of the inputs and options: a re-run over the same DST writes the same
objects (each atomically), and a re-run with other inputs writes a new run directory, switches
the manifest to it, and only then deletes the old one. A failed run never touches the manifest.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from randommask.common import storage
from randommask.data.genome import (
    CODE_MASK,
    HEAD_BYTES,
    SOFT_BIT,
    HashingReader,
    check_head,
    gzip_errors,
    is_fasta_name,
    open_decompressed,
    parse_fasta,
)
from randommask.data.records import list_files, table_delimiter
from randommask.data.shards import FORMAT_VERSION, MANIFEST, ShardWriter, build_manifest, read_manifest
from randommask.data.tokenizer import INVALID
from randommask.errors import UserError

if TYPE_CHECKING:
    from randommask.data.corpus import CorpusOptions

DEFAULT_SHARD_BYTES = 256 << 20
# Ray resources of one prepare task (one input file): what a cluster's CPU nodes must fit
# (cluster/kuberay: the `cpu` worker group).
TASK_CPUS = 1


# ---- finding the inputs -------------------------------------------------------------------------
def expand_sources(sources: list[str], storage_options: dict | None = None) -> list[dict[str, Any]]:
    """Files, directories (searched recursively for FASTA and table names) or globs -> [{uri, size, tag}]."""
    found: list[dict[str, Any]] = []
    for src in sources:
        kind, infos = list_files(src, lambda p: is_fasta_name(p) or table_delimiter(p) is not None, storage_options)
        if not infos and kind == "glob":
            raise UserError(f"{src}: the pattern matches no file")
        if not infos:
            raise UserError(f"{src}: directory holds no FASTA file (.fa .fasta .fna) or table (.csv .tsv), "
                            "optionally .gz")
        for info in infos:
            uri = info["uri"]
            tag = info.get("ETag") or info.get("mtime") or info.get("LastModified") or ""
            found.append({"uri": uri, "size": int(info.get("size") or 0), "tag": str(tag)})
    uris = [f["uri"] for f in found]
    dupes = sorted({u for u in uris if uris.count(u) > 1})
    if dupes:
        raise UserError(f"{dupes[0]}: named twice among the sources")
    return found


def check_sources(inputs: list[dict[str, Any]], storage_options: dict | None = None) -> None:
    """Read the first 64 KiB of every input and check it is FASTA (gzip framing, '>' header, sequence
    bytes) in this process, before Ray starts: a wrong file fails in a second with the line the
    full parse would give. Reads run in parallel: thousands of remote inputs stay quick."""
    from concurrent.futures import ThreadPoolExecutor

    def head(src: dict[str, Any]) -> None:
        data = storage.read_bytes(src["uri"], storage_options, 0, HEAD_BYTES) if src["size"] else b""
        check_head(data, src["uri"], complete=src["size"] <= HEAD_BYTES)

    with ThreadPoolExecutor(min(16, max(1, len(inputs)))) as pool:
        for _ in pool.map(head, inputs):  # the first failure, in input order, is raised
            pass


# ---- one input file, in a Ray task --------------------------------------------------------------
@dataclass
class _Record:
    name: str
    chunks: list[bytes] = field(default_factory=list)  # held only until min_length is reached
    length: int = 0
    n_bases: int = 0
    soft_bases: int = 0
    nruns: list[tuple[int, int]] = field(default_factory=list)
    shard: str | None = None
    offset: int = 0


def _runs_of_invalid(codes: np.ndarray, base: int) -> list[tuple[int, int]]:
    bad = (codes & CODE_MASK) == INVALID
    if not bad.any():
        return []
    edges = np.flatnonzero(np.diff(np.concatenate(([False], bad, [False])).astype(np.int8)))
    return [(base + int(s), base + int(e)) for s, e in zip(edges[::2], edges[1::2])]


def prepare_file(file_index: int, uri: str, run_uri: str, storage_options: dict | None, min_length: int,
                 shard_bytes: int, progress: Any = None) -> dict[str, Any]:
    """Parse, validate and shard one FASTA file. Returns its records, shards and checksum, or an error."""
    writer = ShardWriter(run_uri, file_index, shard_bytes, storage_options)
    records: list[dict[str, Any]] = []
    skipped = 0
    pending = 0
    last_report = time.monotonic()

    def finish(rec: _Record | None) -> None:
        nonlocal skipped
        if rec is None:
            return
        if rec.length < min_length or rec.length == 0:
            skipped += 1
            return
        records.append({"name": rec.name, "length": rec.length, "n_bases": rec.n_bases,
                        "soft_bases": rec.soft_bases, "shard": rec.shard, "offset": rec.offset,
                        "nruns": np.asarray(rec.nruns, dtype=np.int64).reshape(-1, 2)})

    try:
        fs, path = storage.filesystem(uri, storage_options)
        try:
            handle = fs.open(path, "rb", block_size=8 << 20) if not storage.is_local(uri) else open(path, "rb")
        except Exception as e:
            raise UserError(storage.describe_error(e, uri)) from None
        with handle:
            raw = HashingReader(handle)
            rec: _Record | None = None
            for kind, value in parse_fasta(open_decompressed(raw, uri), uri):
                if kind == "record":
                    finish(rec)
                    rec = _Record(value)
                    continue
                arr = np.frombuffer(value, dtype=np.uint8)
                runs = _runs_of_invalid(arr, rec.length)
                if runs and rec.nruns and rec.nruns[-1][1] == runs[0][0]:  # a run across chunks
                    runs[0] = (rec.nruns.pop()[0], runs[0][1])
                rec.nruns += runs
                rec.n_bases += int(np.count_nonzero((arr & CODE_MASK) == INVALID))
                rec.soft_bases += int(np.count_nonzero(arr & SOFT_BIT))
                if rec.shard is None:
                    rec.chunks.append(value)
                    if rec.length + len(value) >= min_length:  # long enough: start writing it
                        rec.shard, rec.offset = writer.begin_record()
                        for c in rec.chunks:
                            writer.write(c)
                        rec.chunks = []
                else:
                    writer.write(value)
                rec.length += len(value)
                pending += len(value)
                if progress is not None and time.monotonic() - last_report > 0.5:
                    progress.add.remote(pending)
                    pending, last_report = 0, time.monotonic()
            finish(rec)
            raw.drain()
        shards = writer.finish()
        if progress is not None and pending:
            progress.add.remote(pending)
        return {"ok": True, "index": file_index, "records": records, "shards": shards, "skipped": skipped,
                "source": {"uri": uri, "bytes": raw.bytes_read, "sha256": raw.sha256.hexdigest()}}
    except UserError as e:
        return {"ok": False, "index": file_index, "error": str(e)}
    except gzip_errors() as e:
        return {"ok": False, "index": file_index,
                "error": f"{uri}: truncated or corrupt gzip ({e}); re-download or re-compress the file"}
    except Exception as e:  # storage failures mid-read
        return {"ok": False, "index": file_index, "error": storage.describe_error(e, uri)}
    finally:
        writer.cleanup()


# ---- the driver ---------------------------------------------------------------------------------
def _progress_actor():
    import ray

    @ray.remote(num_cpus=0)
    class Progress:
        def __init__(self) -> None:
            self.bases = 0

        def add(self, n: int) -> None:
            self.bases += n

        def get(self) -> int:
            return self.bases

    return Progress.remote()


def parse_resources(text: str | None) -> dict[str, float] | None:
    """``--resources``: a JSON object of Ray resource names to positive amounts (None if not given)."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"--resources {text!r}: not JSON ({e.msg}); give an object such as "
                        "'{\"randommask_cpu_node\": 1}'") from None
    if not (isinstance(value, dict) and value and all(
            isinstance(k, str) and k and isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
            for k, v in value.items())):
        raise UserError(f"--resources {text!r}: give an object of resource names to positive amounts, "
                        "such as '{\"randommask_cpu_node\": 1}'")
    if {"CPU", "GPU", "memory"} & set(value):
        raise UserError(f"--resources {text!r}: CPU, GPU and memory are Ray's own; name custom resources only")
    return {k: float(v) for k, v in value.items()}


def prepare(sources: list[str], out: str, val_fraction: float = 0.01, seed: int = 0, min_length: int = 1,
            storage_options: dict | None = None, shard_bytes: int = DEFAULT_SHARD_BYTES,
            show_progress: bool = True, resources: dict[str, float] | None = None,
            corpus: CorpusOptions | None = None) -> dict[str, Any]:
    """Prepare FASTA ``sources`` into shards and a manifest at ``out``; returns the manifest. Each
    task asks for TASK_CPUS and ``resources`` (custom Ray resources: where a cluster lets it run).
    Tables, ``corpus.pack`` or ``corpus.exclude`` make a packed corpus of short records (corpus.py)."""
    import ray

    from randommask.common.ray_runtime import ensure_ray
    from randommask.data.corpus import CorpusOptions, prepare_corpus  # imports this module

    if not sources:
        raise UserError("no sources given; pass FASTA files, directories or globs")
    if not 0 <= val_fraction < 0.5:
        raise UserError(f"--val-fraction must be in [0, 0.5), got {val_fraction}")
    if min_length < 1:
        raise UserError(f"--min-length must be >= 1, got {min_length}")
    with storage.preflight():  # a wrong path, endpoint or key fails in seconds, before Ray starts
        inputs = expand_sources(sources, storage_options)
    if (corpus or CorpusOptions()).applies(inputs):
        return prepare_corpus(inputs, out, corpus or CorpusOptions(), val_fraction=val_fraction, seed=seed,
                              min_length=min_length, storage_options=storage_options, shard_bytes=shard_bytes)
    with storage.preflight():
        check_sources(inputs, storage_options)
        # Check the destination before any work: a bad endpoint or key fails here, in one line.
        old_run = None
        if storage.exists(storage.join(out, MANIFEST), storage_options):
            old_run = read_manifest(out, storage_options).get("run")
    identity = json.dumps({"inputs": inputs, "min_length": min_length, "version": FORMAT_VERSION}, sort_keys=True)
    run = hashlib.sha256(identity.encode()).hexdigest()[:16]
    run_uri = storage.join(out, "shards", run)

    ensure_ray()
    task = ray.remote(num_cpus=TASK_CPUS, max_retries=2, resources=resources or None)(prepare_file)
    progress = _progress_actor()
    total_bytes = sum(i["size"] for i in inputs)
    refs = [task.remote(i, src["uri"], run_uri, storage_options, min_length, shard_bytes, progress)
            for i, src in enumerate(inputs)]
    results = _wait_with_progress(refs, progress, total_bytes, show_progress)

    def fail(message: str) -> None:
        if run != old_run:  # never delete what the current manifest points to
            storage.remove(run_uri, storage_options, recursive=True)
        raise UserError(message)

    errors = sorted((r for r in results if not r["ok"]), key=lambda r: r["index"])
    if errors:
        fail(errors[0]["error"] + (f" (and {len(errors) - 1} more file(s) failed)" if len(errors) > 1 else ""))
    results.sort(key=lambda r: r["index"])
    seen: dict[str, str] = {}
    for r in results:
        for rec in r["records"]:
            if rec["name"] in seen:
                fail(f"{r['source']['uri']}: record {rec['name']!r} is also in {seen[rec['name']]}; "
                     "record names must be unique across inputs")
            seen[rec["name"]] = r["source"]["uri"]
    records = [(r, rec) for r in results for rec in r["records"]]
    if not records:
        fail(f"no record of at least {min_length} bp in the sources")

    manifest = build_manifest(inputs, results, records, run, val_fraction, seed, min_length, out, storage_options)
    storage.write_bytes(storage.join(out, MANIFEST), (json.dumps(manifest, indent=1) + "\n").encode(), storage_options)
    if old_run and old_run != run:
        storage.remove(storage.join(out, "shards", old_run), storage_options, recursive=True)
    return manifest


def _wait_with_progress(refs, progress, total_bytes: int, show: bool) -> list[dict]:
    import ray

    from randommask.common.progress import progress as progress_bar

    bar = progress_bar(None, "prepare", "bp", show, unit_scale=True)
    results, pending = [], list(refs)
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=len(pending), timeout=0.5)
            results += ray.get(done)
            bases = ray.get(progress.get.remote())
            bar.update(bases - bar.n)
            bar.set_postfix_str(f"{len(results)}/{len(refs)} files")
    finally:
        bar.close()
    return results
