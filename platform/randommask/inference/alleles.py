"""Variant alleles as they are scored: each ALT of a record on its own, trimmed to its minimal
representation, and either an SNV of A/C/G/T or a row with the reason it is not scored. Contig names
of the variants are matched to the FASTA's with or without a ``chr`` prefix (``chrM`` and ``MT``
too) where exactly one FASTA contig fits.

Trimming, as ``bcftools norm`` and ``vt normalize`` do for the bases alleles share: first the common
suffix, then the common prefix (moving POS right), keeping at least one base in each allele. A padded
SNV (``AC>GC``) becomes ``A>G`` at the same POS; ``CA>CG`` becomes ``A>G`` at POS + 1."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Iterable

ACGT = frozenset("ACGT")
REASONS = ("symbolic", "indel", "MNV", "non-ACGT", "contig", "position", "REF mismatch", "N nearby")


@dataclass(frozen=True)
class Allele:
    """One ALT of one input record: as given (chrom, pos, id, ref, alt) and as scored (norm_*);
    ``reason`` is empty for an SNV that can be scored."""

    chrom: str
    pos: int  # 1-based, as in VCF
    id: str
    ref: str
    alt: str
    norm_pos: int
    norm_ref: str
    norm_alt: str
    reason: str


def is_symbolic(alt: str) -> bool:
    """A symbolic allele (``<DEL>``), a breakend (``N[chr2:5[``), the spanning deletion ``*`` or a
    missing ALT ``.``: no sequence to score."""
    return alt.startswith("<") or alt in ("*", ".", "") or "[" in alt or "]" in alt


def trim(pos: int, ref: str, alt: str) -> tuple[int, str, str]:
    """The minimal representation of ``ref>alt`` at ``pos`` (module docstring)."""
    while len(ref) > 1 and len(alt) > 1 and ref[-1] == alt[-1]:
        ref, alt = ref[:-1], alt[:-1]
    while len(ref) > 1 and len(alt) > 1 and ref[0] == alt[0]:
        ref, alt, pos = ref[1:], alt[1:], pos + 1
    return pos, ref, alt


def allele(chrom: str, pos: int, vid: str, ref: str, alt: str) -> Allele:
    """One ALT, normalized and classified (docs/inference.md lists the reasons)."""
    if is_symbolic(alt):
        return Allele(chrom, pos, vid, ref, alt, pos, ref.upper(), alt, f"symbolic: ALT {alt} has no sequence to score")
    p, r, a = trim(pos, ref.upper(), alt.upper())
    reason = ""
    if len(r) != len(a):
        reason = f"indel: {r}>{a} after trimming ({len(r)} bp > {len(a)} bp); only SNVs are scored"
    elif len(r) > 1:
        changed = sum(x != y for x, y in zip(r, a))
        reason = f"MNV: {r}>{a} changes {changed} bases; only SNVs are scored"
    elif not {r, a} <= ACGT:
        reason = f"non-ACGT: REF/ALT {r}/{a}; only A, C, G and T alleles are scored"
    return Allele(chrom, pos, vid, ref, alt, p, r, a, reason)


def record_alleles(chrom: str, pos: int, vid: str, ref: str, alts: str) -> list[Allele]:
    """Every ALT of a record (``alts`` comma-separated, as in a VCF's ALT column)."""
    return [allele(chrom, pos, vid, ref, alt) for alt in alts.split(",")]


def contig_aliases(names: Iterable[str], fasta_contigs: Collection[str]) -> dict[str, str]:
    """For each name not in the FASTA, the FASTA contig it means (``chr1`` <-> ``1``, ``chrM`` <->
    ``MT``), where exactly one fits; names that fit none or several are left out (their rows say so)."""
    out = {}
    for name in set(names):
        if name in fasta_contigs:
            continue
        bare = name[3:] if name.lower().startswith("chr") else name
        candidates = {bare, "chr" + bare}
        if bare.upper() in ("M", "MT"):
            candidates |= {"MT", "M", "chrM", "chrMT"}
        hits = sorted(c for c in candidates - {name} if c in fasta_contigs)
        if len(hits) == 1:
            out[name] = hits[0]
    return out


def reason_kind(reason: str) -> str:
    """The kind of a row's reason (its text up to the first colon): what summaries count."""
    return reason.split(":", 1)[0] if reason else ""
