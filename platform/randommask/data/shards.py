"""The prepared format, shared by genome (prepare.py) and corpus (corpus.py) preparation: shard files
written whole-record by ``ShardWriter``, and ``manifest.json`` (built by ``build_manifest``, read by
``read_manifest``). docs/data.md describes both."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tempfile
import time
from typing import Any

import numpy as np

from randommask.common import storage
from randommask.data.split import validation_blocks
from randommask.errors import UserError

MANIFEST = "manifest.json"
FORMAT = "randommask-shards"
FORMAT_VERSION = 1


class ShardWriter:
    """Packs whole records into local shard files and uploads each one when it is full."""

    def __init__(self, run_uri: str, file_index: int, shard_bytes: int, storage_options: dict | None):
        self.run_uri, self.file_index, self.shard_bytes = run_uri, file_index, shard_bytes
        self.storage_options = storage_options
        self.tmpdir = tempfile.mkdtemp(prefix="randommask-prepare-")
        self.shards: list[dict[str, Any]] = []
        self.f = None
        self.name = ""
        self.size = 0
        self.sha = hashlib.sha256()

    def begin_record(self) -> tuple[str, int]:
        if self.f is None or self.size >= self.shard_bytes:
            self._close()
            self.name = f"f{self.file_index:05d}-{len(self.shards):03d}.bin"
            self.f = open(os.path.join(self.tmpdir, self.name), "wb")
            self.size = 0
            self.sha = hashlib.sha256()
        return self.name, self.size

    def write(self, data: bytes) -> None:
        self.f.write(data)
        self.sha.update(data)
        self.size += len(data)

    def _close(self) -> None:
        if self.f is None:
            return
        self.f.close()
        local = os.path.join(self.tmpdir, self.name)
        if self.size:
            storage.put_file(local, storage.join(self.run_uri, self.name), self.storage_options)
            self.shards.append({"name": self.name, "bytes": self.size, "sha256": self.sha.hexdigest()})
        os.unlink(local)
        self.f = None

    def finish(self) -> list[dict[str, Any]]:
        self._close()
        return self.shards

    def cleanup(self) -> None:
        if self.f is not None:
            self.f.close()
        shutil.rmtree(self.tmpdir, ignore_errors=True)


def read_manifest(prepared: str, storage_options: dict | None = None) -> dict[str, Any]:
    uri = storage.join(prepared, MANIFEST)
    if not storage.exists(uri, storage_options):
        raise UserError(f"{prepared}: no {MANIFEST}; run 'randommask data prepare SRC --out {prepared}' first")
    manifest = json.loads(storage.read_bytes(uri, storage_options))
    if manifest.get("format") != FORMAT or manifest.get("version") != FORMAT_VERSION:
        raise UserError(f"{uri}: not a randommask {FORMAT} v{FORMAT_VERSION} manifest; re-run data prepare")
    return manifest


def build_manifest(inputs, results, records, run, val_fraction, seed, min_length, out, storage_options, val=None):
    lengths = np.array([rec["length"] for _, rec in records], dtype=np.int64)
    offsets = np.concatenate(([0], np.cumsum(lengths)))
    nruns = [rec["nruns"] + offsets[i] for i, (_, rec) in enumerate(records)]
    nruns_arr = np.concatenate(nruns) if nruns else np.zeros((0, 2), dtype=np.int64)
    buf = io.BytesIO()
    np.save(buf, nruns_arr.astype(np.int64))
    storage.write_bytes(storage.join(out, "shards", run, "nruns.npy"), buf.getvalue(), storage_options)
    val = validation_blocks(lengths, val_fraction, seed) if val is None else val  # corpora: whole records
    val_bases = sum(e - s for _, s, e in val)
    n_total = int(sum(rec["n_bases"] for _, rec in records))
    soft_total = int(sum(rec["soft_bases"] for _, rec in records))
    source_of = {r["index"]: r["source"] for r in results}
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "run": run,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "options": {"val_fraction": val_fraction, "seed": seed, "min_length": min_length},
        "encoding": "1 byte per base: bits 0-2 code (A=0 T=1 C=2 G=3 other=4), bit 3 lowercase",
        "sources": [{"uri": source_of[r["index"]]["uri"], "bytes": source_of[r["index"]]["bytes"],
                     "sha256": source_of[r["index"]]["sha256"], "records": len(r["records"]),
                     "skipped_records": r["skipped"]} for r in results],
        "shards": [{"path": f"shards/{run}/{s['name']}", "bytes": s["bytes"], "sha256": s["sha256"]}
                   for r in results for s in r["shards"]],
        "nruns": f"shards/{run}/nruns.npy",
        "records": [{"name": rec["name"], "source": r["index"], "length": rec["length"],
                     "n_fraction": round(rec["n_bases"] / rec["length"], 6),
                     "soft_fraction": round(rec["soft_bases"] / rec["length"], 6),
                     "shard": f"shards/{run}/{rec['shard']}", "offset": rec["offset"],
                     "global_offset": int(offsets[i])} for i, (r, rec) in enumerate(records)],
        "validation": [{"record": r, "start": s, "end": e} for r, s, e in val],
        "totals": {"files": len(results), "records": len(records), "bases": int(lengths.sum()),
                   "n_bases": n_total, "soft_bases": soft_total,
                   "skipped_records": sum(r["skipped"] for r in results),
                   "validation_bases": int(val_bases), "train_bases": int(lengths.sum() - val_bases),
                   "validation_fraction": round(val_bases / max(1, int(lengths.sum())), 6)},
    }
