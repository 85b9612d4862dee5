"""The variants to score, from a VCF or from a table (Parquet, CSV, TSV), as alleles
(``inference.alleles``): every ALT of every record.

A VCF is read through pysam (htslib) in Ray Data tasks, never whole in the driver: an indexed one
(bgzip + .tbi/.csi) in pieces of its contigs, or only the ``--region``s asked for; one without an
index in a single streaming task. A table is small by nature and read in the driver."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from randommask.common import storage
from randommask.errors import UserError
from randommask.inference import runtime
from randommask.inference.alleles import Allele, record_alleles

TABLE_COLUMNS = ("chrom", "pos", "ref", "alt")  # GPN's names; ``id`` is optional
CHUNK_BP = 10_000_000  # an indexed VCF's contigs are read in pieces this long, one Ray Data task each
ROWS_PER_BATCH = 4096  # alleles per batch a read task hands on


@dataclass(frozen=True)
class VcfPlan:
    """How a VCF is read: a node-local path and the read units, one Ray Data task each:
    ``(contig, start, end)`` 0-based half-open (``end`` None: to the contig's end), or one
    ``(None, None, None)`` for a VCF without an index, read whole in one task."""

    uri: str
    path: str
    units: list[tuple[str | None, int | None, int | None]]
    indexed: bool


def parse_region(text: str) -> tuple[str, int, int | None]:
    """``CHR:START-END`` (1-based, inclusive, as samtools and bcftools take them; commas allowed) or
    ``CHR`` as ``(contig, start, end)`` 0-based half-open."""
    contig, _, span = text.rpartition(":") if ":" in text else (text, "", "")
    if not contig:
        raise UserError(f"--region {text!r}: give CHR:START-END (1-based, inclusive) or CHR")
    if not span:
        return contig, 0, None
    first, _, last = span.replace(",", "").partition("-")
    try:
        start, end = int(first), int(last) if last else None
    except ValueError:
        raise UserError(f"--region {text!r}: START and END must be integers (CHR:START-END, 1-based)") from None
    if start < 1 or (end is not None and end < start):
        raise UserError(f"--region {text!r}: positions are 1-based and END must not be before START")
    return contig, start - 1, end


def _open_vcf(path: str, uri: str):
    import pysam

    pysam.set_verbosity(0)  # htslib's warnings (undeclared contigs) would flood every task's log
    try:
        return pysam.VariantFile(path)
    except (ValueError, OSError) as e:
        raise UserError(f"--vcf {uri}: not a readable VCF ({e}); a VCF needs a ##fileformat line and the header "
                        "#CHROM POS ID REF ALT QUAL FILTER INFO") from None


def plan_vcf(uri: str, regions: list[str] | None = None, storage_options: dict | None = None,
             log: Callable[[str], None] = print) -> VcfPlan:
    """The read units of a VCF (plain, gzip or bgzip; local or s3://, fetched once per node with its
    .tbi/.csi): with ``regions``, those through the index; else, where indexed, each contig in pieces
    of ``CHUNK_BP``; else the whole file in one task."""
    from randommask.inference.fasta import node_copy, seekable

    if storage.is_local(uri):
        local = Path(uri).expanduser()
        if not local.is_file():
            raise UserError(f"--vcf {uri}: no such file")
    else:
        local = node_copy(uri, storage_options, log, sidecars=(".tbi", ".csi"))
    path = str(seekable(local, uri, "--vcf", ".vcf", log))
    vf = _open_vcf(path, uri)
    index = vf.index
    indexed = list(index.keys()) if index is not None else []
    lengths = {c: vf.header.contigs[c].length for c in vf.header.contigs}
    vf.close()
    if regions:
        if index is None:
            raise UserError(f"--region needs an indexed VCF: bgzip {uri} and index it (tabix -p vcf FILE.vcf.gz), "
                            "or drop --region to read it whole")
        units = []
        for text in regions:
            contig, start, end = parse_region(text)
            if contig not in indexed:
                shown = ", ".join(indexed[:5]) + (" ..." if len(indexed) > 5 else "")
                raise UserError(f"--region {text}: {contig} has no records in {uri} (its index has {shown or 'none'})")
            units.append((contig, start, end))
    elif index is not None:
        units = []
        for contig in indexed:
            n = lengths.get(contig)
            if not n:
                units.append((contig, 0, None))
                continue
            units += [(contig, a, min(a + CHUNK_BP, n) if a + CHUNK_BP < n else None) for a in range(0, n, CHUNK_BP)]
    else:
        units = [(None, None, None)]
    return VcfPlan(uri, path, units, index is not None)


def vcf_alleles(plan: VcfPlan, unit: tuple[str | None, int | None, int | None]) -> Iterator[Allele]:
    """Every ALT of the records that start in ``unit`` (so pieces of a contig never repeat a record)."""
    contig, start, end = unit
    vf = _open_vcf(plan.path, plan.uri)
    where = "its first record"
    try:
        records = vf.fetch(contig, start, end) if contig is not None else vf
        for r in records:
            if contig is not None and r.start < start:
                continue  # it starts in the piece before
            alts = ",".join(r.alts) if r.alts else "."
            yield from record_alleles(r.chrom, r.pos, r.id or ".", r.ref, alts)
            where = f"{r.chrom}:{r.pos}"
    except (ValueError, OSError) as e:
        raise UserError(f"--vcf {plan.uri}: the record after {where} cannot be parsed ({e}); check it with "
                        "bcftools view") from None
    finally:
        vf.close()


def read_vcf(uri: str, storage_options: dict | None = None) -> list[Allele]:
    """Every allele of a (small) VCF, here: what the read tasks stream, for tests and scripts."""
    plan = plan_vcf(uri, None, storage_options, log=lambda *_: None)
    return [a for unit in plan.units for a in vcf_alleles(plan, unit)]


def allele_batches(batch: dict[str, np.ndarray], plan: VcfPlan, done: frozenset = frozenset(),
                   rows: int = ROWS_PER_BATCH) -> Iterator[dict[str, np.ndarray]]:
    """Ray Data task over read units: their alleles as column batches of at most ``rows``, leaving out
    the keys in ``done`` (a resume)."""
    for contig, start, end in zip(batch["contig"], batch["start"], batch["end"]):
        unit = (None if contig == "" else str(contig), None if start < 0 else int(start), None if end < 0 else int(end))
        pending: list[Allele] = []
        for a in vcf_alleles(plan, unit):
            if (a.chrom, a.pos, a.id, a.ref, a.alt) in done:
                continue
            pending.append(a)
            if len(pending) == rows:
                yield allele_columns(pending)
                pending = []
        if pending:
            yield allele_columns(pending)


FIELDS = ("chrom", "pos", "id", "ref", "alt", "norm_pos", "norm_ref", "norm_alt")


def allele_row(a: Allele) -> dict:
    """An allele as the pipeline's row (``error`` holds the reason it is not scored, if any)."""
    return {**{f: getattr(a, f) for f in FIELDS}, "error": a.reason}


def allele_columns(alleles: list[Allele]) -> dict[str, np.ndarray]:
    """Alleles as the pipeline's columns, as :func:`allele_row` names them."""
    out = {f: np.array([getattr(a, f) for a in alleles], dtype=np.int64 if f.endswith("pos") else object)
           for f in FIELDS}
    out["error"] = np.array([a.reason for a in alleles], dtype=object)
    return out


def unit_rows(plan: VcfPlan) -> list[dict]:
    """The read units as Ray Data rows (missing values as "" and -1: Arrow columns of one type)."""
    return [{"contig": c or "", "start": -1 if a is None else a, "end": -1 if b is None else b} for c, a, b in plan.units]


def read_table(uri: str, storage_options: dict | None = None) -> list[Allele]:
    """Variants from a table with columns chrom, pos (1-based, as VCF), ref, alt and optionally id:
    Parquet, or CSV / TSV (by the name: .csv, .tsv, .txt; gzip allowed). ALT may list several alleles
    separated by commas, as in a VCF."""
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    name = uri.lower().removesuffix(".gz")
    try:
        if name.endswith(".parquet"):
            fs, path = storage.filesystem(uri, storage_options)
            with fs.open(path, "rb") as f:
                table = pq.read_table(f)
        elif name.endswith((".csv", ".tsv", ".txt", ".tab")):
            delimiter = "," if name.endswith(".csv") else "\t"
            text = runtime.read_text(uri, "--variants", storage_options)
            strings = {c: pa.string() for c in ("chrom", "id", "ref", "alt")}  # "1", "X": names, not numbers
            table = pcsv.read_csv(io.BytesIO(text.encode()), parse_options=pcsv.ParseOptions(delimiter=delimiter),
                                  convert_options=pcsv.ConvertOptions(column_types=strings))
        else:
            raise UserError(f"--variants {uri}: name it .parquet, .csv or .tsv (optionally .gz) so its format is known")
    except UserError:
        raise
    except (pa.ArrowInvalid, OSError) as e:
        raise UserError(f"--variants {uri}: not a readable table ({str(e).splitlines()[0]})") from None
    missing = [c for c in TABLE_COLUMNS if c not in table.column_names]
    if missing:
        raise UserError(f"--variants {uri}: missing column(s) {', '.join(missing)}; it needs chrom, pos (1-based), "
                        f"ref, alt (and optionally id); it has {', '.join(table.column_names)}")
    cols = {c: table.column(c).to_pylist() for c in (*TABLE_COLUMNS, *(["id"] if "id" in table.column_names else []))}
    out = []
    for row in range(table.num_rows):
        chrom, pos, ref, alt = (cols[c][row] for c in TABLE_COLUMNS)
        where = f"--variants {uri}: row {row + 1}"
        if None in (chrom, pos, ref, alt):
            raise UserError(f"{where}: an empty chrom, pos, ref or alt")
        try:
            pos_i = int(pos)
        except (TypeError, ValueError):
            raise UserError(f"{where}: pos {pos!r} is not an integer") from None
        if pos_i < 1:
            raise UserError(f"{where}: pos {pos_i} (positions are 1-based, as in VCF)")
        vid = str(cols["id"][row]) if "id" in cols and cols["id"][row] is not None else "."
        out.extend(record_alleles(str(chrom), pos_i, vid, str(ref), str(alt)))
    if not out:
        raise UserError(f"--variants {uri}: no rows in it")
    return out
