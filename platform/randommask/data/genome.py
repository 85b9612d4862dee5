"""FASTA parsing (plain, gzip or bgzip; local or remote streams) with validation, and the stored
base encoding used by prepared shards.

Shards store one byte per base: bits 0-2 hold the nucleotide code (A=0, T=1, C=2, G=3, anything
else 4, as the tokenizer numbers them) and bit 3 marks a lowercase (soft-masked) base. A window is
then a plain byte slice: no decoding, and the tokenizer reads ``byte & 7`` directly.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import zlib
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

from randommask.data.tokenizer import ALPHABET, INVALID
from randommask.errors import UserError

SOFT_BIT = 8
CODE_MASK = 7
FASTA_SUFFIXES = (".fa", ".fasta", ".fna", ".fas")
COMPRESSED_SUFFIXES = (".gz", ".bgz", ".gzip")

_WHITESPACE = b"\r\n\t "
_IUPAC = b"ACGTURYSWKMBDHVN"
_SEQUENCE_BYTES = _IUPAC + _IUPAC.lower() + b"-."
_ALLOWED = _SEQUENCE_BYTES + _WHITESPACE
_HEADER = re.compile(rb"^>[^\n]*", re.M)

_STORE = np.full(256, INVALID, dtype=np.uint8)
for _byte in _IUPAC + b"-.":
    _STORE[_byte] = INVALID
    if chr(_byte).isalpha():
        _STORE[ord(chr(_byte).lower())] = INVALID | SOFT_BIT
for _code, _base in enumerate(ALPHABET):
    _STORE[ord(_base)] = _code
    _STORE[ord(_base.lower())] = _code | SOFT_BIT
STORE_TABLE = _STORE.tobytes()


def is_fasta_name(name: str) -> bool:
    lower = name.lower()
    for suffix in COMPRESSED_SUFFIXES:
        if lower.endswith(suffix):
            lower = lower[: -len(suffix)]
            break
    return lower.endswith(FASTA_SUFFIXES)


class HashingReader(io.RawIOBase):
    """Reads a binary stream while computing its SHA-256 and counting raw bytes."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.sha256 = hashlib.sha256()
        self.bytes_read = 0
        self._pending = b""

    def readable(self) -> bool:
        return True

    def peek2(self) -> bytes:
        if not self._pending:
            self._pending = self._take(2)
        return self._pending

    def _take(self, n: int) -> bytes:
        data = self.raw.read(n)
        self.sha256.update(data)
        self.bytes_read += len(data)
        return data

    def read(self, n: int = -1) -> bytes:
        head, self._pending = self._pending, b""
        if n is not None and 0 <= n <= len(head):
            self._pending = head[n:]
            return head[:n]
        rest = self._take(-1 if n is None or n < 0 else n - len(head))
        return head + rest

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        """Read to the end, so that the checksum covers the whole file."""
        while self.read(1 << 24):
            pass


def _first_bad_byte(seq: bytes, bad: bytes) -> int:
    return min(seq.find(bytes([b])) for b in set(bad[:256]))


def _describe_bad(byte: int) -> str:
    if byte == 0 or byte >= 0x80 or (byte < 0x20 and byte not in b"\t\r\n"):
        return "binary content (byte 0x%02x)" % byte
    return f"{chr(byte)!r} is not a nucleotide code (protein or other non-DNA FASTA?)"


def parse_fasta(stream: BinaryIO, where: str, block_size: int = 1 << 23) -> Iterator[tuple[str, object]]:
    """Yield ``("record", name)`` then ``("seq", stored bytes)`` events for a decompressed stream.

    Validates as it goes and raises :class:`UserError` naming ``where`` and the line: an empty
    file, sequence before any ``>`` header, an empty or repeated record name, protein letters or
    binary bytes. CRLF endings, lowercase and IUPAC codes are valid.
    """
    leftover = b""
    line_no = 1  # line number of the first byte of the next chunk
    started = False
    names: set[str] = set()
    total_bytes = 0
    while True:
        block = stream.read(block_size)
        total_bytes += len(block)
        eof = not block
        buf = leftover + block
        if not eof:
            cut = buf.rfind(b"\n")
            tail = buf[cut + 1 :]
            if tail.startswith(b">"):
                # a header line in progress: wait for its end
                buf, leftover = buf[: cut + 1], tail
            else:
                leftover = b""  # sequence bytes can be used before their line ends
        else:
            leftover = b""
        if not buf:
            if eof:
                break
            continue
        pos, pos_line = 0, line_no
        for m in _HEADER.finditer(buf):
            yield from _sequence(buf[pos : m.start()], pos_line, started, where)
            pos_line += buf.count(b"\n", pos, m.start())
            header = m.group(0)[1:].strip()
            name = header.split(None, 1)[0].decode("utf-8", "replace") if header else ""
            if not name:
                raise UserError(f"{where}: line {pos_line}: record header without a name")
            if name in names:
                raise UserError(f"{where}: line {pos_line}: record name {name!r} appears twice in this file")
            names.add(name)
            started = True
            yield "record", name
            pos = m.end()
        yield from _sequence(buf[pos:], pos_line, started, where)
        line_no = pos_line + buf.count(b"\n", pos)
        if eof:
            break
    if total_bytes == 0:
        raise UserError(f"{where}: empty file; expected FASTA with '>' headers")


def _sequence(seq: bytes, first_line: int, started: bool, where: str) -> Iterator[tuple[str, object]]:
    if not seq:
        return
    if not started:
        stripped = seq.lstrip()
        if stripped:
            line = first_line + seq.count(b"\n", 0, len(seq) - len(stripped))
            if stripped[0] >= 0x80 or (stripped[0] < 0x20 and stripped[0] not in _WHITESPACE):
                raise UserError(f"{where}: line {line}: {_describe_bad(stripped[0])}; expected FASTA")
            raise UserError(f"{where}: line {line}: not FASTA: no '>' header before the sequence")
        return
    bad = seq.translate(None, _ALLOWED)
    if bad:
        i = _first_bad_byte(seq, bad)
        line = first_line + seq.count(b"\n", 0, i)
        raise UserError(f"{where}: line {line}: {_describe_bad(seq[i])}")
    body = seq.translate(None, _WHITESPACE)
    if body:
        yield "seq", body.translate(STORE_TABLE)


def encode_sequence(seq: bytes, where: str, line: int) -> bytes:
    """One sequence given whole (a table's field) in the stored encoding, validated like FASTA lines:
    IUPAC codes in either case, '-' and '.'; anything else is a UserError naming ``where`` and ``line``."""
    bad = seq.translate(None, _SEQUENCE_BYTES)
    if bad:
        raise UserError(f"{where}: line {line}: {_describe_bad(seq[_first_bad_byte(seq, bad)])}")
    return seq.translate(STORE_TABLE)


def open_decompressed(raw: HashingReader, where: str) -> BinaryIO:
    """The decompressed stream (gzip and bgzip are detected by their magic bytes)."""
    if raw.peek2() == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=raw, mode="rb")
    return raw


def gzip_errors() -> tuple[type[BaseException], ...]:
    return (EOFError, gzip.BadGzipFile, zlib.error)


HEAD_BYTES = 64 << 10


def check_head(head: bytes, where: str, complete: bool) -> None:
    """Validate the first bytes of a FASTA file (``complete``: they are the whole file) the way the
    full parse would: gzip framing, a '>' header first, valid sequence bytes. Raises UserError with
    the same one line, so a wrong input fails at once instead of inside a worker."""
    if head[:2] == b"\x1f\x8b":
        try:
            head = zlib.decompressobj(wbits=31).decompress(head, HEAD_BYTES)
        except zlib.error as e:
            raise UserError(f"{where}: truncated or corrupt gzip ({e}); re-download or re-compress the file") from None
        complete = complete and len(head) < HEAD_BYTES
    if not complete:
        head = head[: head.rfind(b"\n") + 1]  # whole lines only: a cut line is not an error
        if not head:
            return
    for _ in parse_fasta(io.BytesIO(head), where):
        pass


# ---- whole local files: demos and benchmarks ----------------------------------------------------
def read_fasta(path: str | Path) -> Iterator[tuple[str, bytes]]:
    """``(name, stored bytes)`` per record of a local FASTA file, validated."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such genome file; pass a FASTA (.fa/.fasta/.fna, optionally .gz)")
    with open(p, "rb") as f:
        raw = HashingReader(f)
        name, chunks = None, []
        try:
            for kind, value in parse_fasta(open_decompressed(raw, str(p)), str(p)):
                if kind == "record":
                    if name is not None:
                        yield name, b"".join(chunks)
                    name, chunks = value, []
                else:
                    chunks.append(value)
        except gzip_errors() as e:
            raise UserError(f"{p}: truncated or corrupt gzip ({e}); re-download or re-compress the file") from None
        if name is not None:
            yield name, b"".join(chunks)


def genome_codes(path: str | Path) -> np.ndarray:
    """All records of a FASTA file concatenated as nucleotide codes (for demos and benchmarks)."""
    parts = [np.frombuffer(seq, dtype=np.uint8) & CODE_MASK for _, seq in read_fasta(path)]
    if not parts:
        raise UserError(f"{path}: no sequence records")
    return np.concatenate(parts)


def cut_windows(codes: np.ndarray, window_bp: int, n: int, seed: int = 0) -> np.ndarray:
    """``n`` windows of ``window_bp`` codes at seeded random starts, shape (n, window_bp)."""
    if len(codes) < window_bp:
        raise UserError(f"genome of {len(codes)} bp is shorter than one {window_bp}-bp window")
    starts = np.random.default_rng(seed).integers(0, len(codes) - window_bp + 1, size=n)
    return codes[starts[:, None] + np.arange(window_bp)[None, :]]

