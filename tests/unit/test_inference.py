"""Inference without Ray: genome access (plain, bgzip, gzip, read-only folders), BED regions and tiles,
and VCF reading (the scores and embeddings against plain implementations are in
test_inference_numbers.py; through a real Ray cluster and the local S3 server in
tests/integration/test_inference.py)."""

from __future__ import annotations

import gzip
import os
import stat

import pytest

from conftest import random_dna, write_fasta
from randommask.errors import UserError
from randommask.inference import fasta as fasta_io
from randommask.inference.alleles import reason_kind
from randommask.inference.regions import read_bed, tiles
from randommask.inference.variant_inputs import read_vcf

QUIET = lambda *_: None  # noqa: E731
CHROM = "chrT"
pytestmark = pytest.mark.usefixtures("own_cache")


# ---- genome access ------------------------------------------------------------------------------
def test_plain_gzip_is_decompressed_once_and_bgzip_is_indexed_in_place(tmp_path):
    from Bio import bgzf

    seq = random_dna(5000, 3)
    plain = write_fasta(tmp_path / "g.fa", {CHROM: seq})
    gz = tmp_path / "g.fa.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    logs = []
    fa = fasta_io.open_fasta(str(gz), log=logs.append)
    assert fa[CHROM][1234:1300] == seq[1234:1300]
    assert any("plain gzip" in m and "decompressing it once" in m for m in logs)
    logs.clear()
    fasta_io.local_fasta(str(gz), log=logs.append)
    assert logs == []  # once per node: the second call finds the decompressed copy

    bgz = tmp_path / "b.fa.gz"
    with bgzf.BgzfWriter(str(bgz), "wb") as w:
        w.write(plain.read_bytes())
    assert fasta_io.is_bgzf(bgz) and not fasta_io.is_bgzf(gz)
    fb = fasta_io.open_fasta(str(bgz), log=logs.append)
    assert fb[CHROM][4000:4100] == seq[4000:4100]
    assert (tmp_path / "b.fa.gz.fai").is_file() and (tmp_path / "b.fa.gz.gzi").is_file()  # beside it


def test_a_read_only_folder_gets_its_index_in_the_cache(tmp_path):
    ro = tmp_path / "store"
    ro.mkdir()
    seq = random_dna(1000, 4)
    write_fasta(ro / "g.fa", {CHROM: seq})
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root): a read-only folder cannot be made")
        fa = fasta_io.open_fasta(str(ro / "g.fa"), log=QUIET)
        assert fa[CHROM][10:20] == seq[10:20]
        assert not (ro / "g.fa.fai").exists() and list((tmp_path / "cache").rglob("g.fa.fai"))
    finally:
        ro.chmod(stat.S_IRWXU)


def test_root_can_still_use_a_folder_it_cannot_write_to(tmp_path, monkeypatch):
    """As root, permission bits do not stop writes, so the read-only branch is driven directly."""
    seq = random_dna(1000, 5)
    write_fasta(tmp_path / "g.fa", {CHROM: seq})
    monkeypatch.setattr(fasta_io.os, "access", lambda path, mode: False)
    path = fasta_io.local_fasta(str(tmp_path / "g.fa"), log=QUIET)
    assert path.is_symlink() and path.parent.is_relative_to(tmp_path / "cache")
    fa = fasta_io.open_fasta(str(tmp_path / "g.fa"), log=QUIET)
    assert fa[CHROM][100:110] == seq[100:110] and not (tmp_path / "g.fa.fai").exists()


def test_not_a_fasta_is_one_line(tmp_path):
    bad = tmp_path / "x.fa"
    bad.write_text("this is not a genome\n")
    with pytest.raises(UserError, match="cannot index it"):
        fasta_io.open_fasta(str(bad), log=QUIET)
    with pytest.raises(UserError, match="no such file"):
        fasta_io.open_fasta(str(tmp_path / "absent.fa"), log=QUIET)


# ---- regions and tiles --------------------------------------------------------------------------
@pytest.mark.parametrize("line, message", [
    (f"{CHROM}\t0\t3001\n", "past the end of chrT (3000 bp)"),
    (f"{CHROM}\t50\t50\n", "empty or reversed interval 50-50"),
    (f"{CHROM}\t60\t50\n", "empty or reversed"),
    ("chrZ\t0\t100\n", "contig 'chrZ' is not in the FASTA"),
    (f"{CHROM}\t0\n", "expected at least 3 columns"),
    (f"{CHROM}\tzero\t100\n", "must be integers"),
    (f"{CHROM}\t10\t13\n", "shorter than one 6-mer"),
    (f"{CHROM}\t0\t100\tr\t0\tminus\n", "strand (column 6) 'minus'; BED strands are +, - or ."),
])
def test_bed_errors_name_the_line_and_the_fix(tmp_path, line, message):
    bed = tmp_path / "r.bed"
    bed.write_text("track name=x\n# a comment\n" + line)
    with pytest.raises(UserError) as err:
        read_bed(str(bed), {CHROM: 3000}, 6)
    assert message in str(err.value)
    assert "line 3" in str(err.value)


def test_bed_names_and_a_region_ending_at_the_contig_end(tmp_path):
    bed = tmp_path / "r.bed"
    bed.write_text(f"{CHROM}\t2900\t3000\tlast\n{CHROM}\t0\t100\n")
    regions = read_bed(str(bed), {CHROM: 3000}, 6)
    assert [(r.start, r.end, r.name) for r in regions] == [(2900, 3000, "last"), (0, 100, f"{CHROM}:0-100")]


@pytest.mark.parametrize("length, max_kmers, k, stride", [(1000, 100, 6, 1), (105, 100, 6, 1), (7, 100, 6, 1),
                                                         (600, 50, 3, 3), (1234, 510, 6, 1), (33, 4, 5, 2)])
def test_tiles_cover_every_kmer_exactly_once(length, max_kmers, k, stride):
    parts = tiles(length, max_kmers, k, stride)
    starts = [a + i for a, b in parts for i in range(0, b - a - k + 1, stride)]
    assert starts == list(range(0, (length - k) // stride * stride + 1, stride))  # every k-mer, once, in order
    assert all((b - a - k) // stride + 1 <= max_kmers for a, b in parts)
    covered = set().union(*(range(a, b) for a, b in parts))
    assert covered == set(range(0, (length - k) // stride * stride + k))  # every base in a k-mer


# ---- variant inputs (the scores themselves: tests/unit/test_inference_numbers.py) -----------------
def test_every_alt_of_a_vcf_is_a_row_and_a_bad_vcf_is_one_line(tmp_path):
    vcf = tmp_path / "v.vcf.gz"
    vcf.write_bytes(gzip.compress(b"##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
                                  b"c\t5\ta\tA\tG,T\t.\t.\t.\nc\t6\tb\tAC\tA\t.\t.\t.\n"
                                  b"c\t7\tc\tA\t<DEL>\t.\t.\t.\nc\t8\td\tA\t*\t.\t.\t.\n"))
    alleles = read_vcf(str(vcf))  # every ALT a row, the unscorable with their reason
    assert [(a.pos, a.alt, reason_kind(a.reason)) for a in alleles] == [
        (5, "G", ""), (5, "T", ""), (6, "A", "indel"), (7, "<DEL>", "symbolic"), (8, "*", "symbolic")]
    header = "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n"
    bad = tmp_path / "bad.vcf"
    bad.write_text(header + "c\t5\ta\tA\tG\t.\t.\t.\nc\tfive\ta\tA\tG\t.\t.\t.\n")
    with pytest.raises(UserError, match="bad.vcf: the record after c:5 cannot be parsed .* bcftools view"):
        read_vcf(str(bad))
    (tmp_path / "five.vcf").write_text("#CHROM\tPOS\tID\tREF\tALT\nc\t5\ta\tA\tG\n")  # no ##fileformat
    with pytest.raises(UserError, match="five.vcf: not a readable VCF .* #CHROM POS ID REF ALT QUAL FILTER INFO"):
        read_vcf(str(tmp_path / "five.vcf"))


# ---- the test models cached across processes (conftest.cached_model_dir) ------------------------------
def test_a_cached_model_folder_is_built_once_and_never_used_partial_edited_or_for_another_recipe(tmp_path):
    import json

    from conftest import MODEL_MANIFEST, cached_model_dir

    built = []

    def recipe(d):
        built.append(d)
        (d / "weights.bin").write_bytes(b"\x01\x02\x03")
        (d / "config.json").write_text("{}")

    def other_recipe(d):
        (d / "weights.bin").write_bytes(b"\x09")

    inputs = ("training/model.py",)
    first = cached_model_dir(recipe, inputs, root=tmp_path)
    assert cached_model_dir(recipe, inputs, root=tmp_path) == first and len(built) == 1  # reused, not rebuilt
    assert json.loads((first / MODEL_MANIFEST).read_text()).keys() == {"weights.bin", "config.json"}
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary folder left behind
    other = cached_model_dir(other_recipe, inputs, root=tmp_path)
    assert other != first and (other / "weights.bin").read_bytes() == b"\x09"  # another recipe: another key
    assert cached_model_dir(recipe, ("data/tokenizer.py",), root=tmp_path) != first  # other package files too
    (first / "weights.bin").write_bytes(b"\x00")  # edited in place: rebuilt
    assert cached_model_dir(recipe, inputs, root=tmp_path) == first and len(built) == 3
    assert (first / "weights.bin").read_bytes() == b"\x01\x02\x03"
    (first / MODEL_MANIFEST).unlink()  # a folder without its manifest (a build cut short): rebuilt
    assert cached_model_dir(recipe, inputs, root=tmp_path) == first and len(built) == 4
    (first / "extra.bin").write_bytes(b"")  # a file the manifest does not name: rebuilt
    cached_model_dir(recipe, inputs, root=tmp_path)
    assert len(built) == 5 and not (first / "extra.bin").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
