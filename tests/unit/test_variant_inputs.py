"""VCFs as the read tasks see them (pysam, no Ray): the read units of an indexed, unindexed or
region-restricted VCF, each record read once, and the errors a user gets."""

import gzip

import pysam
import pytest

from randommask.errors import UserError
from randommask.inference import variant_inputs as vi

HEADER = ("##fileformat=VCFv4.2\n##contig=<ID=chr1,length=1000>\n##contig=<ID=chr2,length=250>\n"
          "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
QUIET = lambda *_: None  # noqa: E731


def write_vcf(path, records, index=True):
    path.write_text(HEADER + "".join(f"{c}\t{p}\t{i}\t{r}\t{a}\t.\t.\t.\n" for c, p, i, r, a in records))
    if not index:
        return path
    pysam.tabix_compress(str(path), str(path) + ".gz", force=True)  # bgzip, as the bgzip tool writes it
    pysam.tabix_index(str(path) + ".gz", preset="vcf", force=True)  # .tbi, as tabix -p vcf
    return path.with_name(path.name + ".gz")


RECORDS = [("chr1", p, f"a{p}", "A", "G") for p in (1, 99, 100, 101, 200, 1000)] + [("chr2", 5, "b5", "C", "T,<DEL>")]


@pytest.mark.parametrize("text, want", [("chr1:100-200", ("chr1", 99, 200)), ("chr1:1,000-2,000", ("chr1", 999, 2000)),
                                        ("chr1", ("chr1", 0, None)), ("HLA-A*01:01:1-5", ("HLA-A*01:01", 0, 5))])
def test_regions_are_one_based_inclusive_like_samtools(text, want):
    assert vi.parse_region(text) == want


def test_an_indexed_vcf_is_read_in_pieces_each_record_once(tmp_path, monkeypatch):
    monkeypatch.setattr(vi, "CHUNK_BP", 100)  # chr1 (1000 bp) in 10 pieces: records on the seams
    plan = vi.plan_vcf(str(write_vcf(tmp_path / "v.vcf", RECORDS)), log=QUIET)
    assert plan.indexed and len(plan.units) == 10 + 3 and plan.units[0] == ("chr1", 0, 100)
    read = [(a.chrom, a.pos, a.alt) for u in plan.units for a in vi.vcf_alleles(plan, u)]
    assert read == [(c, p, alt) for c, p, _, _, a in RECORDS for alt in a.split(",")]
    assert read == [(a.chrom, a.pos, a.alt) for a in vi.read_vcf(str(tmp_path / "v.vcf"))]  # = the file read whole
    # --region: only its records, through the index
    plan = vi.plan_vcf(str(tmp_path / "v.vcf.gz"), ["chr1:100-200", "chr2"], log=QUIET)
    assert [a.pos for u in plan.units for a in vi.vcf_alleles(plan, u)] == [100, 101, 200, 5, 5]


def test_what_cannot_be_read_says_so_in_one_line(tmp_path):
    plain = write_vcf(tmp_path / "p.vcf", RECORDS, index=False)
    assert vi.plan_vcf(str(plain), log=QUIET).units == [(None, None, None)]  # one streaming task
    with pytest.raises(UserError, match=r"--region needs an indexed VCF: bgzip .* \(tabix -p vcf"):
        vi.plan_vcf(str(plain), ["chr1:1-5"], log=QUIET)
    indexed = write_vcf(tmp_path / "i.vcf", RECORDS)
    with pytest.raises(UserError, match=r"--region chr9:1-5: chr9 has no records in .* \(its index has chr1, chr2\)"):
        vi.plan_vcf(str(indexed), ["chr9:1-5"], log=QUIET)
    with pytest.raises(UserError, match="--region 'chr1:5-1': positions are 1-based"):
        vi.plan_vcf(str(indexed), ["chr1:5-1"], log=QUIET)
    with pytest.raises(UserError, match="no such file"):
        vi.plan_vcf(str(tmp_path / "absent.vcf"), log=QUIET)
    # plain gzip (htslib cannot read it at random): decompressed once, and said so
    (tmp_path / "g.vcf.gz").write_bytes(gzip.compress(plain.read_bytes()))
    said = []
    plan = vi.plan_vcf(str(tmp_path / "g.vcf.gz"), log=said.append)
    assert "plain gzip" in said[0] and len([a for a in vi.vcf_alleles(plan, plan.units[0])]) == 8


def test_read_tasks_hand_on_batches_and_skip_what_a_resume_has(tmp_path):
    plan = vi.plan_vcf(str(write_vcf(tmp_path / "v.vcf", RECORDS)), log=QUIET)
    units = vi.unit_rows(plan)
    batch = {k: [u[k] for u in units] for k in ("contig", "start", "end")}
    done = frozenset({("chr1", 99, "a99", "A", "G")})
    out = list(vi.allele_batches(batch, plan, done=done, rows=3))
    assert [len(b["pos"]) for b in out] == [3, 2, 2]  # chr1's 5 alleles in batches of 3, then chr2's 2
    assert [p for b in out for p in b["pos"]] == [1, 100, 101, 200, 1000, 5, 5]
    assert list(out[-1]["error"]) == ["", "symbolic: ALT <DEL> has no sequence to score"]
