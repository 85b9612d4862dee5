"""The variants to score, from a VCF or from a table (Parquet, CSV, TSV), as alleles
(``inference.alleles``): every ALT of every record, in input order."""

from __future__ import annotations

import io

from randommask.common import storage
from randommask.errors import UserError
from randommask.inference import runtime
from randommask.inference.alleles import Allele, record_alleles

TABLE_COLUMNS = ("chrom", "pos", "ref", "alt")  # GPN's names; ``id`` is optional


def read_vcf(uri: str, storage_options: dict | None = None) -> list[Allele]:
    """Every ALT of every record of a VCF (plain or gzip/bgzip), normalized and classified."""
    out = []
    header = False
    for line_no, line in enumerate(io.StringIO(runtime.read_text(uri, "--vcf", storage_options)), start=1):
        if line.startswith("##"):
            continue
        if line.startswith("#CHROM"):
            header = True
            continue
        if not line.strip():
            continue
        fields = line.rstrip("\n\r").split("\t")
        if len(fields) < 5:
            raise UserError(f"--vcf {uri}: line {line_no}: expected tab-separated CHROM POS ID REF ALT, "
                            f"got {len(fields)} column(s)")
        chrom, pos, vid, ref, alts = fields[:5]
        try:
            pos_i = int(pos)
        except ValueError:
            raise UserError(f"--vcf {uri}: line {line_no}: POS {pos!r} is not an integer") from None
        if pos_i < 1:
            raise UserError(f"--vcf {uri}: line {line_no}: POS {pos_i} (VCF positions start at 1)")
        out.extend(record_alleles(chrom, pos_i, vid, ref, alts))
    if not header and not out:
        raise UserError(f"--vcf {uri}: not a VCF (no #CHROM header line and no variant)")
    return out


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


def read_variants(vcf: str | None, table: str | None, storage_options: dict | None = None) -> list[Allele]:
    """The alleles of ``--vcf`` or of ``--variants`` (exactly one of them)."""
    if (vcf is None) == (table is None):
        raise UserError("give the variants as --vcf FILE or as --variants TABLE (one of them)")
    return read_vcf(vcf, storage_options) if vcf is not None else read_table(table, storage_options)
