"""Alleles as score-variants reads them: trimmed to their minimal form, classified, and contig names
matched to the FASTA's."""

import pytest

from randommask.inference.alleles import allele, contig_aliases, reason_kind, record_alleles, trim


@pytest.mark.parametrize("given, want", [
    ((10, "A", "G"), (10, "A", "G")),          # an SNV as it is
    ((10, "AC", "GC"), (10, "A", "G")),        # padded on the right: the same position
    ((10, "CA", "CG"), (11, "A", "G")),        # padded on the left: the next base
    ((10, "TCAG", "TCGG"), (12, "A", "G")),    # padded on both sides
    ((10, "ACG", "TCA"), (10, "ACG", "TCA")),  # an MNV: nothing shared at the ends
    ((10, "AC", "A"), (10, "AC", "A")),        # a deletion keeps its anchor base
    ((10, "CAA", "CA"), (10, "CA", "C")),      # suffix first, as bcftools norm
])
def test_trim_to_the_minimal_representation(given, want):
    assert trim(*given) == want


def test_every_alt_is_classified_with_a_reason_or_none():
    rows = record_alleles("1", 100, "rs1", "AC", "GC,A,<DEL>,TT,*,N,ac")
    got = [(a.alt, a.norm_pos, a.norm_ref, a.norm_alt, reason_kind(a.reason)) for a in rows]
    assert got == [("GC", 100, "A", "G", ""), ("A", 100, "AC", "A", "indel"), ("<DEL>", 100, "AC", "<DEL>", "symbolic"),
                   ("TT", 100, "AC", "TT", "MNV"), ("*", 100, "AC", "*", "symbolic"), ("N", 100, "AC", "N", "indel"),
                   ("ac", 100, "A", "A", "")]  # no change at all: scored, LLR 0
    assert all((a.chrom, a.pos, a.id, a.ref) == ("1", 100, "rs1", "AC") for a in rows)  # the input kept beside
    assert reason_kind(allele("1", 5, ".", "A", "R").reason) == "non-ACGT"
    assert "changes 2 bases" in allele("1", 5, ".", "AC", "GT").reason
    assert allele("1", 5, ".", "a", "g").reason == ""  # soft-masked letters are bases too
    assert reason_kind(allele("1", 5, ".", "A", "N[2:300[").reason) == "symbolic"


def test_contig_names_match_with_or_without_chr_when_unambiguous():
    fasta = {"1", "2", "MT", "X"}
    assert contig_aliases(["chr1", "2", "chrM", "chrX", "chr9"], fasta) == {"chr1": "1", "chrM": "MT", "chrX": "X"}
    assert contig_aliases(["1", "M"], {"chr1", "chrM"}) == {"1": "chr1", "M": "chrM"}
    assert contig_aliases(["chr1"], {"1", "chr1"}) == {}  # exact names win
    assert contig_aliases(["chrM"], {"M", "MT"}) == {}  # two candidates: ambiguous, left for the rows to report


def test_a_table_of_variants_reads_as_the_same_vcf_would(tmp_path):
    import gzip

    import pyarrow as pa
    import pyarrow.parquet as pq

    from randommask.errors import UserError
    from randommask.inference.variant_inputs import read_table, read_vcf

    vcf = tmp_path / "v.vcf"
    vcf.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
                   "1\t5\trs1\tAC\tGC,A\t.\t.\t.\nX\t9\t.\tG\tT\t.\t.\t.\n")
    want = read_vcf(str(vcf))
    (tmp_path / "v.tsv").write_text("chrom\tpos\tid\tref\talt\n1\t5\trs1\tAC\tGC,A\nX\t9\t.\tG\tT\n")
    (tmp_path / "v.csv.gz").write_bytes(gzip.compress(b"alt,ref,pos,chrom\n\"GC,A\",AC,5,1\nT,G,9,X\n"))
    pq.write_table(pa.table({"chrom": ["1", "X"], "pos": [5, 9], "ref": ["AC", "G"], "alt": ["GC,A", "T"],
                             "id": ["rs1", "."]}), tmp_path / "v.parquet")
    assert read_table(str(tmp_path / "v.tsv")) == want
    assert read_table(str(tmp_path / "v.parquet")) == want
    no_id = read_table(str(tmp_path / "v.csv.gz"))  # no id column: "." as a VCF's missing ID
    assert [(a.chrom, a.pos, a.id, a.alt) for a in no_id] == [("1", 5, ".", "GC"), ("1", 5, ".", "A"), ("X", 9, ".", "T")]
    (tmp_path / "bad.tsv").write_text("chrom\tposition\tref\talt\n1\t5\tA\tG\n")
    with pytest.raises(UserError, match=r"bad.tsv: missing column\(s\) pos; it needs chrom, pos \(1-based\)"):
        read_table(str(tmp_path / "bad.tsv"))
    (tmp_path / "zero.tsv").write_text("chrom\tpos\tref\talt\n1\t0\tA\tG\n")
    with pytest.raises(UserError, match=r"zero.tsv: row 1: pos 0 \(positions are 1-based"):
        read_table(str(tmp_path / "zero.tsv"))
    with pytest.raises(UserError, match="name it .parquet, .csv or .tsv"):
        read_table(str(tmp_path / "v.xlsx"))


@pytest.mark.parametrize("given, want", [
    ((10, "A", "GA"), (10, "A", "GA")),  # an insertion before the base it shares: REF keeps its one base
    ((10, "GA", "A"), (10, "GA", "A")),  # the deletion the other way: ALT keeps its one base
    ((10, "A", "AG"), (10, "A", "AG")),  # an insertion after its anchor: not moved right
])
def test_trimming_never_empties_an_allele(given, want):
    assert trim(*given) == want
    assert allele("1", *given[:1], ".", *given[1:]).reason == (
        f"indel: {want[1]}>{want[2]} after trimming ({len(want[1])} bp > {len(want[2])} bp); only SNVs are scored")


@pytest.mark.parametrize("alt", [".", "", "C]2:5]", "]2:5]C", "C[2:5[", "<DEL>", "*"])
def test_missing_alts_and_breakends_of_either_bracket_are_symbolic(alt):
    assert reason_kind(allele("1", 5, ".", "C", alt).reason) == "symbolic"


@pytest.mark.parametrize("name, fasta, want", [
    ("MT", "chrM", "chrM"), ("MT", "M", "M"), ("M", "chrMT", "chrMT"), ("chrM", "MT", "MT"),
    ("chrMT", "M", "M"), ("Mt", "chrMt", "chrMt"),  # the bare name keeps its case: matched as given too
])
def test_mitochondrial_names_match_across_the_four_spellings(name, fasta, want):
    assert contig_aliases([name], [fasta, "chr1"]) == {name: want}


def test_names_already_in_the_fasta_do_not_stop_the_others_being_matched():
    fasta = [f"chr{i}" for i in range(1, 23)]
    names = [f"chr{i}" for i in range(1, 12)] + [str(i) for i in range(12, 23)]  # half as given, half bare
    # set order varies between processes: with 11 names in the FASTA, a loop that stopped at the first
    # of them would drop some bare name in all but about one order in 700,000
    assert contig_aliases(names, fasta) == {str(i): f"chr{i}" for i in range(12, 23)}


@pytest.mark.parametrize("window_bp, want", [(30, 29), (31, 31), (32, 31), (33, 33), (2, 1), (1, 1)])
def test_a_window_is_the_largest_odd_width_not_over_the_one_asked(window_bp, want):
    from randommask.inference.centre import centred_window

    assert centred_window(window_bp) == want


def test_both_strands_are_the_default_and_the_reverse_reads_the_mirrored_base():
    import numpy as np

    from randommask.inference.centre import strand_windows

    codes = np.array([[0, 0, 1, 2, 3]], np.uint8)  # A A T C G; its reverse complement C G A T T
    (fwd, q), (rev, r) = strand_windows(codes, 1)
    assert fwd is codes and q == 1 and rev.tolist() == [[2, 3, 0, 1, 1]] and r == 3
