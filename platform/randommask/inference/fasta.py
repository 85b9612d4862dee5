"""Random access into a genome for inference: ``pyfaidx`` over an indexed FASTA, local or on S3.

- plain FASTA: indexed beside it (``.fai``, built when missing, and said so); when its folder is
  read-only, beside a link to it in the node-local cache;
- bgzip FASTA: read by pyfaidx through Biopython's BGZF reader, with ``.fai`` and ``.gzi`` built
  the same way;
- plain gzip FASTA (how genomes usually ship, and what pyfaidx cannot seek in): decompressed once
  per node into the cache, and said so;
- ``s3://`` FASTA: fetched once per node into the cache, with its ``.fai``/``.gzi`` when present.

The cache is ``$RANDOMMASK_CACHE`` or the system temporary folder, under ``randommask-fasta/``.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from randommask.common import storage
from randommask.common.cache import cache_dir as node_cache
from randommask.errors import UserError


def cache_dir() -> Path:
    return node_cache("fasta")


def _head(path: Path, n: int = 18) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def is_gzip(path: Path) -> bool:
    return _head(path, 2) == b"\x1f\x8b"


def is_bgzf(path: Path) -> bool:
    """BGZF (bgzip) is gzip whose first member carries the 'BC' extra subfield."""
    head = _head(path)
    return len(head) >= 14 and head[:2] == b"\x1f\x8b" and head[3] & 4 and head[12:14] == b"BC"


def _key(*parts: object) -> str:
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:16]


def _atomic_copy(write: Callable[[Path], None], final: Path) -> None:
    """Make ``final`` by writing a temporary file in its folder, then renaming: concurrent workers
    on one node race safely and nobody reads a half-written genome."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=".partial-")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def node_copy(uri: str, storage_options: dict | None, log: Callable[[str], None],
              sidecars: tuple[str, ...] = (".fai", ".gzi")) -> Path:
    """A copy of remote ``uri`` in this node's cache, fetched once per node (keyed by its size and
    ETag, so a rewritten object is fetched anew), with the ``sidecars`` (indexes) found beside it."""
    fs, path = storage.filesystem(uri, storage_options)
    try:
        info = fs.info(path)
    except Exception as e:
        raise UserError(storage.describe_error(e, uri)) from None
    folder = cache_dir() / _key(uri, info.get("size"), info.get("ETag") or info.get("LastModified"))
    local = folder / Path(path).name
    if not local.is_file():
        log(f"fetching {uri} to this node's cache {folder}")
        _atomic_copy(lambda tmp: fs.get_file(path, str(tmp)), local)
        for suffix in sidecars:  # an index shipped beside it saves building one
            if fs.exists(path + suffix):
                _atomic_copy(lambda tmp, s=suffix: fs.get_file(path + s, str(tmp)), Path(str(local) + suffix))
    return local


def seekable(path: Path, uri: str, flag: str, plain_suffix: str, log: Callable[[str], None]) -> Path:
    """``path`` itself, or for plain gzip (which neither pyfaidx nor htslib can seek in) a copy
    decompressed once per node into the cache, and said so."""
    if not (is_gzip(path) and not is_bgzf(path)):
        return path
    st = path.stat()
    name = path.name[:-3] if path.name.endswith(".gz") else path.name + plain_suffix
    plain = cache_dir() / _key(str(path.resolve()), st.st_size, st.st_mtime_ns) / name
    if not plain.is_file():
        log(f"{uri} is plain gzip, which cannot be read at random: decompressing it once to {plain} "
            "(bgzip it to skip this)")

        def unzip(tmp: Path) -> None:
            with gzip.open(path, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 22)

        try:
            _atomic_copy(unzip, plain)
        except (OSError, EOFError) as e:
            raise UserError(f"{flag} {uri}: cannot decompress ({e})") from None
    return plain


def local_fasta(uri: str, storage_options: dict | None = None, log: Callable[[str], None] = print) -> Path:
    """A local FASTA that pyfaidx can index and seek in, with its index next to it (see module doc)."""
    path = node_copy(uri, storage_options, log) if not storage.is_local(uri) else Path(uri).expanduser()
    if not path.is_file():
        raise UserError(f"--fasta {uri}: no such file")
    path = seekable(path, uri, "--fasta", ".fa", log)
    index = Path(str(path) + ".fai")
    if not index.is_file() and not os.access(path.parent, os.W_OK):
        # A read-only folder (a shared genome store): index beside a link in the cache instead.
        link = cache_dir() / _key(str(path.resolve())) / path.name
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.symlink(path.resolve(), link)
            except FileExistsError:
                pass
        path = link
    return path


@functools.lru_cache(maxsize=8)
def _open(path: str):
    import pyfaidx

    return pyfaidx.Fasta(path, as_raw=True, sequence_always_upper=False, rebuild=False, build_index=True)


def open_fasta(uri: str, storage_options: dict | None = None, log: Callable[[str], None] = print):
    """A ``pyfaidx.Fasta`` for ``uri`` (cached per process); builds the index when missing."""
    path = local_fasta(uri, storage_options, log)
    if not Path(str(path) + ".fai").is_file():
        log(f"indexing {path} (writing {path}.fai{' and .gzi' if is_bgzf(path) else ''})")
    try:
        return _open(str(path))
    except UserError:
        raise
    except Exception as e:  # pyfaidx's own errors: not FASTA, bad line lengths, missing Biopython
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"--fasta {uri}: cannot index it ({first})") from None


def contig_lengths(fa) -> dict[str, int]:
    return {name: len(fa[name]) for name in fa.keys()}
