"""Checkpoints to fine-tune from: any pretraining output or DNABERT-compatible directory, local or
on S3 (fetched once per node, since trials run on other nodes than the driver)."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

from randommask.common import storage
from randommask.errors import UserError


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and (path / "vocab.txt").is_file()


def resolve_checkpoint(ckpt: str, cache_dir: str | None = None, storage_options: dict | None = None,
                       what: str = "--checkpoint") -> str:
    """A local Hugging Face directory for CKPT: a pretraining ``final/``, a Ray checkpoint
    (``step_*/`` with ``model/``), a run directory (its ``final/`` or latest checkpoint), or any
    DNABERT-compatible directory (config.json + vocab.txt). ``s3://`` ones are downloaded first.
    Errors name the checkpoint as ``what`` (the flag or config key it came from)."""
    if not storage.is_local(ckpt):
        fs, path = storage.filesystem(ckpt, storage_options)
        local = Path(cache_dir or tempfile.mkdtemp(prefix="randommask-ckpt-")) / "checkpoint"
        try:
            files = [f for f in fs.find(path) if not f.rstrip("/").endswith("/")]
            if not files:
                raise UserError(f"{what} {ckpt}: no such checkpoint (no objects under it)")
            for f in files:
                rel = f[len(path.rstrip("/")) + 1 :]
                (local / rel).parent.mkdir(parents=True, exist_ok=True)
                fs.get_file(f, str(local / rel))
        except UserError:
            raise
        except Exception as e:
            raise UserError(storage.describe_error(e, ckpt)) from None
        return resolve_checkpoint(str(local), what=what)
    p = Path(ckpt)
    if not p.is_dir():
        raise UserError(f"{what} {ckpt}: no such directory")
    for candidate in (p, p / "model", p / "final"):
        if _is_model_dir(candidate):
            return str(candidate.resolve())
    steps = sorted(p.glob("step_*/model"))
    if steps and _is_model_dir(steps[-1]):
        return str(steps[-1].resolve())
    raise UserError(f"{what} {ckpt}: not a model directory (needs config.json and vocab.txt), a run's final/ "
                    "or a checkpoint step_*/")


def node_checkpoint(ckpt: str, storage_options: dict | None = None, what: str = "--checkpoint") -> str:
    """A local copy of a remote checkpoint on this node, downloaded once per node: trials run on
    other pods than the driver and cannot read its disk. Concurrent trials race safely (rename)."""
    if storage.is_local(ckpt):
        return resolve_checkpoint(ckpt, what=what)
    fs, path = storage.filesystem(ckpt, storage_options)
    try:  # keyed by the objects' identities too: a checkpoint rewritten under the same URI is fetched anew
        fs.invalidate_cache()  # a fresh listing, not one cached earlier in this process (buckets included)
        listing = sorted((k, v.get("size"), v.get("ETag") or v.get("LastModified") or v.get("mtime"))
                         for k, v in fs.find(path, detail=True).items())
    except Exception as e:
        raise UserError(storage.describe_error(e, ckpt)) from None
    root = Path(tempfile.gettempdir()) / "randommask-checkpoints"
    final = root / hashlib.sha1(repr((ckpt, listing)).encode()).hexdigest()[:16]
    if not final.is_dir():
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=".download-"))
        resolve_checkpoint(ckpt, cache_dir=str(tmp), storage_options=storage_options, what=what)
        try:
            tmp.rename(final)
        except OSError:  # another trial on this node got there first
            shutil.rmtree(tmp, ignore_errors=True)
    return resolve_checkpoint(str(final / "checkpoint"), what=what)


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt")


def weights_digest(local_dir: str) -> str:
    """sha256 over a local model directory's weight files (names and bytes, in name order): the
    checkpoint's identity, wherever it was copied to. Config and tokenizer files do not enter it."""
    root = Path(local_dir)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if not files:
        raise UserError(f"{local_dir}: no weight file ({', '.join(WEIGHT_SUFFIXES)}) in this checkpoint")
    h = hashlib.sha256()
    for p in files:
        h.update(str(p.relative_to(root)).encode() + b"\0")
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()


def provenance(command: str, checkpoint: str, settings: dict[str, Any],
               storage_options: dict | None = None) -> dict[str, Any]:
    """The record of one run of ``command``: settings are the options that change the values."""
    from randommask import __version__

    return {"command": command, "checkpoint": checkpoint,
            "weights_sha256": weights_digest(node_checkpoint(checkpoint, storage_options)),
            "settings": dict(sorted(settings.items())), "randommask": __version__}
