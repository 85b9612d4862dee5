"""Regions to embed: BED intervals checked against the genome, and tiles that fit the model."""

from __future__ import annotations

import io
from dataclasses import dataclass

from randommask.errors import UserError

BED_STRANDS = ("+", "-", ".")


@dataclass(frozen=True)
class Region:
    chrom: str
    start: int  # 0-based
    end: int  # exclusive
    name: str
    strand: str = "."  # BED column 6: "+", "-", or "." (none)


def read_bed(uri: str, contigs: dict[str, int], k: int, storage_options: dict | None = None) -> list[Region]:
    """BED intervals (0-based, half-open; the 4th column is the name, else ``chrom:start-end``; the
    6th the strand), each checked against the genome: a clear line names the file, line and fix for
    the first bad one."""
    from randommask.inference.runtime import read_text

    regions = []
    for line_no, line in enumerate(io.StringIO(read_text(uri, "--regions", storage_options)), start=1):
        fields = line.rstrip("\n\r").split("\t") if "\t" in line else line.split()
        if not fields or not fields[0] or fields[0].startswith(("#", "track", "browser")):
            continue
        where = f"--regions {uri}: line {line_no}"
        if len(fields) < 3:
            raise UserError(f"{where}: expected at least 3 columns (chrom, start, end), got {len(fields)}")
        chrom = fields[0]
        try:
            start, end = int(fields[1]), int(fields[2])
        except ValueError:
            raise UserError(f"{where}: start and end must be integers, got {fields[1]!r} {fields[2]!r}") from None
        if chrom not in contigs:
            known = ", ".join(list(contigs)[:5]) + (" ..." if len(contigs) > 5 else "")
            raise UserError(f"{where}: contig {chrom!r} is not in the FASTA (it has {known})")
        if start < 0 or end <= start:
            raise UserError(f"{where}: empty or reversed interval {start}-{end}; BED is 0-based and half-open, "
                            "so end must be greater than start")
        if end > contigs[chrom]:
            raise UserError(f"{where}: ends at {end}, past the end of {chrom} ({contigs[chrom]} bp)")
        if end - start < k:
            raise UserError(f"{where}: {end - start} bp is shorter than one {k}-mer; nothing to embed")
        name = fields[3] if len(fields) > 3 and fields[3] else f"{chrom}:{start}-{end}"
        strand = fields[5] if len(fields) > 5 and fields[5] else "."
        if strand not in BED_STRANDS:
            raise UserError(f"{where}: strand (column 6) {strand!r}; BED strands are +, - or .")
        regions.append(Region(chrom, start, end, name, strand))
    if not regions:
        raise UserError(f"--regions {uri}: no intervals in it")
    return regions


def tiles(length_bp: int, max_kmers: int, k: int, stride: int = 1) -> list[tuple[int, int]]:
    """Tiles ``(start, end)`` (relative) of a ``length_bp`` region whose k-mers fit ``max_kmers``
    tokens each. Consecutive tiles overlap by ``k - stride`` bases, so every k-mer of the region is
    in exactly one tile: a mean over the tiles' tokens counts each k-mer once, and every base is
    covered."""
    n_kmers = (length_bp - k) // stride + 1
    out = []
    for first in range(0, n_kmers, max_kmers):
        last = min(first + max_kmers, n_kmers) - 1
        out.append((first * stride, last * stride + k))
    return out
