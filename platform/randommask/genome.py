"""Reading FASTA genomes (plain or gzip) into records, and cutting windows from them."""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from randommask.errors import UserError
from randommask.tokenizer import codes_from_bytes

_STRIP = b"\r\n \t"  # CRLF files and wrapped lines


def read_fasta(path: str | os.PathLike) -> Iterator[tuple[str, bytes]]:
    """Yield ``(name, sequence bytes)`` for each record of a local FASTA file (gzip allowed)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such genome file; pass a FASTA (.fa/.fasta/.fna, optionally .gz)")
    raw = p.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise UserError(f"{p}: truncated or corrupt gzip ({e}); re-download the file") from None
    start = raw.find(b">")
    if start < 0 or raw[:start].strip():
        raise UserError(f"{p}: not FASTA: no '>' header at the start of the file")
    for chunk in raw[start + 1 :].split(b"\n>"):
        header, _, body = chunk.partition(b"\n")
        name = header.split(None, 1)[0].decode("ascii", "replace") if header.strip() else ""
        yield name, body.translate(None, _STRIP)


def genome_codes(path: str | os.PathLike) -> np.ndarray:
    """All records of a FASTA file concatenated as nucleotide codes (for demos and benchmarks)."""
    return np.concatenate([codes_from_bytes(seq) for _, seq in read_fasta(path)])


def cut_windows(codes: np.ndarray, window_bp: int, n: int, seed: int = 0) -> np.ndarray:
    """``n`` windows of ``window_bp`` codes at seeded random starts, shape (n, window_bp)."""
    if len(codes) < window_bp:
        raise UserError(f"genome of {len(codes)} bp is shorter than one {window_bp}-bp window")
    starts = np.random.default_rng(seed).integers(0, len(codes) - window_bp + 1, size=n)
    return codes[starts[:, None] + np.arange(window_bp)[None, :]]
