"""Short records read whole: sequence tables (CSV or TSV with a ``sequence`` column, as GUE's
``train.csv``) and multi-record FASTA, each record in the stored encoding (genome.py).

Used by corpus preparation (corpus.py) for its inputs and for ``--exclude`` sets: a corpus of
short records is deduplicated across all inputs, so each input is read whole, in one process.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import posixpath
from dataclasses import dataclass
from typing import Any, Callable

from randommask.common import storage
from randommask.data.genome import COMPRESSED_SUFFIXES, encode_sequence, gzip_errors, parse_fasta
from randommask.errors import UserError

TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t", ".tab": "\t"}  # name suffix -> delimiter
SEQUENCE_COLUMN = "sequence"
# ``--exclude`` given a directory (a GUE root): its held-out tables, <dataset>/{dev,test}.csv.
HELD_OUT_STEMS = ("dev", "test")


@dataclass(frozen=True)
class SourceRecords:
    """One input read whole: its records (stored bytes, in file order) and what identifies the file."""

    uri: str
    bytes: int
    sha256: str
    records: list[bytes]


def _strip_compression(name: str) -> str:
    lower = name.lower()
    for suffix in COMPRESSED_SUFFIXES:
        if lower.endswith(suffix):
            return lower[: -len(suffix)]
    return lower


def table_delimiter(name: str) -> str | None:
    """The delimiter of a table name (``.csv``, ``.tsv``, ``.tab``, optionally ``.gz``), else None."""
    return TABLE_SUFFIXES.get(posixpath.splitext(_strip_compression(name))[1])


def is_held_out_table(name: str) -> bool:
    stem, _ = posixpath.splitext(_strip_compression(posixpath.basename(name)))
    return table_delimiter(name) is not None and stem in HELD_OUT_STEMS


def read_source(uri: str, storage_options: dict | None = None) -> SourceRecords:
    """Every record of a table or FASTA file (plain or gzip, detected by content), validated: a UserError
    names the file and line of a missing ``sequence`` column or a character that is not a nucleotide code."""
    raw = storage.read_bytes(uri, storage_options)
    data = raw
    if raw[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(raw)
        except gzip_errors() as e:
            raise UserError(f"{uri}: truncated or corrupt gzip ({e}); re-download or re-compress the file") from None
    delimiter = table_delimiter(uri)
    records = _table_records(data, uri, delimiter) if delimiter else _fasta_records(data, uri)
    return SourceRecords(uri=uri, bytes=len(raw), sha256=hashlib.sha256(raw).hexdigest(), records=records)


def _fasta_records(data: bytes, uri: str) -> list[bytes]:
    records: list[bytes] = []
    chunks: list[bytes] | None = None
    for kind, value in parse_fasta(io.BytesIO(data), uri):
        if kind == "record":
            if chunks is not None:
                records.append(b"".join(chunks))
            chunks = []
        else:
            chunks.append(value)
    if chunks is not None:
        records.append(b"".join(chunks))
    return records


def _table_records(data: bytes, uri: str, delimiter: str) -> list[bytes]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise UserError(f"{uri}: line {line}: binary content (byte 0x{data[e.start]:02x}); expected a "
                        "CSV/TSV table") from None
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader, None)
        if header is None:
            raise UserError(f"{uri}: empty table; expected a header row with a '{SEQUENCE_COLUMN}' column")
        names = [h.strip().lower() for h in header]
        if SEQUENCE_COLUMN not in names:
            shown = ", ".join(repr(h) for h in header[:6]) + (", ..." if len(header) > 6 else "")
            raise UserError(f"{uri}: no '{SEQUENCE_COLUMN}' column (header: {shown}); name the column of "
                            f"sequences '{SEQUENCE_COLUMN}'")
        col = names.index(SEQUENCE_COLUMN)
        records = []
        for row in reader:
            if not row:  # a blank line is no record
                continue
            if len(row) <= col:
                raise UserError(f"{uri}: line {reader.line_num}: {len(row)} field(s), no '{SEQUENCE_COLUMN}' "
                                f"field (column {col + 1})")
            records.append(encode_sequence(row[col].strip().encode(), uri, reader.line_num))
        return records
    except csv.Error as e:
        raise UserError(f"{uri}: line {reader.line_num}: not a valid table ({e})") from None


def list_files(src: str, keep: Callable[[str], bool], storage_options: dict | None = None,
               missing_ok: bool = False) -> tuple[str, list[dict[str, Any]]]:
    """A file, a glob or a directory (its files whose names ``keep`` accepts, recursively) -> (kind, infos),
    kind one of "file", "glob", "directory", "missing" (only with ``missing_ok``); each info has ``uri``."""
    scheme, _ = storage.split_uri(src)
    fs, path = storage.filesystem(src, storage_options)
    prefix = "" if scheme == "file" else f"{scheme}://"
    try:
        if any(c in path for c in "*?["):
            kind, infos = "glob", [i for i in map(fs.info, sorted(fs.glob(path))) if i.get("type") != "directory"]
        elif missing_ok and not fs.exists(path):
            kind, infos = "missing", []
        else:
            info = fs.info(path)
            if info.get("type") == "directory":
                kind, infos = "directory", [fs.info(p) for p in sorted(fs.find(path)) if keep(p)]
            else:
                kind, infos = "file", [info]
    except Exception as e:
        raise UserError(storage.describe_error(e, src)) from None
    for info in infos:
        name = info["name"]
        info["uri"] = name if scheme == "file" or "://" in name else prefix + name
    return kind, infos


def expand_exclude(paths: list[str], storage_options: dict | None = None) -> list[str]:
    """``--exclude`` paths -> file URIs: a file, a glob, or a directory (a GUE root), which means every
    dev and test table under it. A path that matches nothing is a UserError."""
    found: list[str] = []
    for src in paths:
        _, infos = list_files(src, is_held_out_table, storage_options, missing_ok=True)
        if not infos:
            raise UserError(f"--exclude {src}: matches nothing; give a FASTA or table file, a glob, or a GUE root "
                            "holding <dataset>/dev.csv and test.csv")
        found += [i["uri"] for i in infos]
    return list(dict.fromkeys(found))  # a file named twice is read once
