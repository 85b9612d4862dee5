"""What produced an inference output: the checkpoint (path and a digest of its weights) and every
setting that changes the values. It is written to ``--out/_provenance.json`` before any result, and
into each Parquet file's metadata (key ``randommask``). A rerun into a non-empty ``--out`` resumes
only when its provenance is the same; otherwise it stops before touching anything, naming the
difference, unless ``--overwrite`` clears the old results first."""

from __future__ import annotations

import json
from typing import Any, Callable

from randommask.common import storage
from randommask.errors import UserError

MANIFEST = "_provenance.json"  # a leading "_": Parquet readers (pyarrow, pandas, Ray) skip it
METADATA_KEY = "randommask"


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What differs between two records in what makes the values (not the checkpoint's path, not
    the package version), one phrase each."""
    out = []
    if old.get("command") != new["command"]:
        out.append(f"written by `randommask {old.get('command')}`, not `{new['command']}`")
    if old.get("weights_sha256") != new["weights_sha256"]:
        out.append(f"checkpoint {old.get('checkpoint')} (weights {str(old.get('weights_sha256'))[:12]}) there, "
                   f"{new['checkpoint']} (weights {new['weights_sha256'][:12]}) now")
    was, now = old.get("settings") or {}, new["settings"]
    for key in sorted(set(was) | set(now)):
        if was.get(key) != now.get(key):
            out.append(f"{key} {was.get(key)!r} there, {now.get(key)!r} now")
    return out


def recorded(out: str, storage_options: dict | None = None) -> dict[str, Any] | None:
    """The provenance of the results in ``out``: its manifest, else the first Parquet file's
    metadata; None where ``out`` holds no result."""
    import pyarrow.parquet as pq

    from randommask.inference.runtime import parquet_files

    manifest = storage.join(out, MANIFEST)
    if storage.exists(manifest, storage_options):
        try:
            return json.loads(storage.read_bytes(manifest, storage_options))
        except json.JSONDecodeError as e:
            raise UserError(f"--out {out}: {MANIFEST} is not JSON ({e}); use a new --out, or --overwrite") from None
    files = parquet_files(out, storage_options)
    if not files:
        return None
    fs, _ = storage.filesystem(out, storage_options)
    with fs.open(files[0], "rb") as f:
        meta = pq.read_schema(f).metadata or {}
    raw = meta.get(METADATA_KEY.encode())
    if raw is None:
        raise UserError(f"--out {out}: holds {len(files)} Parquet file(s) that record nothing about what produced "
                        "them (written before randommask recorded provenance); use a new --out, or --overwrite "
                        "to replace them")
    return json.loads(raw)


def claim(out: str, prov: dict[str, Any], overwrite: bool = False, storage_options: dict | None = None,
          log: Callable[[str], None] = print) -> None:
    """Make ``out`` the home of results of ``prov``: resume where they match, refuse (changing
    nothing) where they differ, clear our old results first with ``overwrite``."""
    from randommask.inference.runtime import parquet_files

    old = recorded(out, storage_options) if not overwrite else None
    if old is not None:
        diff = differences(old, prov)
        if diff:
            raise UserError(f"--out {out} holds results of other settings ({'; '.join(diff)}): use a new --out, "
                            "or --overwrite to replace them")
        if old.get("checkpoint") != prov["checkpoint"]:
            log(f"note     {out} was written from {old.get('checkpoint')}; the same weights, so it resumes")
    if overwrite:
        files = parquet_files(out, storage_options)
        fs, _ = storage.filesystem(out, storage_options)
        for name in files:
            fs.rm(name)
        if files:
            log(f"overwrite removed {len(files)} Parquet file(s) from {out}")
    storage.write_bytes(storage.join(out, MANIFEST), (json.dumps(prov, indent=1) + "\n").encode(), storage_options)


def with_metadata(table, prov: dict[str, Any]):
    """``table`` carrying ``prov`` in its schema metadata (written into each Parquet file's footer)."""
    meta = dict(table.schema.metadata or {})
    meta[METADATA_KEY.encode()] = json.dumps(prov, separators=(",", ":")).encode()
    return table.replace_schema_metadata(meta)
