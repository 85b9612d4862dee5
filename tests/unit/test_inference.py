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


# ---- the pipelines' task and actor functions: refusals, columns and types (numbers: test_inference_numbers) --
def spying_open_fasta(monkeypatch) -> list:
    """Record the storage options each ``open_fasta`` call gets (the real one still opens the file)."""
    calls, real = [], fasta_io.open_fasta

    def spy(uri, storage_options=None, log=print):
        calls.append(storage_options)
        return real(uri, storage_options, log)

    monkeypatch.setattr(fasta_io, "open_fasta", spy)
    return calls


def test_the_variant_task_refuses_each_unscorable_allele_with_its_reason(tmp_path, monkeypatch, capsys):
    import numpy as np

    from randommask.data.tokenizer import CLS, MASK, SEP, kmer_vocab
    from randommask.inference.alleles import allele
    from randommask.inference.variant_inputs import allele_columns
    from randommask.inference.variants import windows

    seq = random_dna(40, 5)
    seq = seq[:29] + "N" + seq[30:]  # an N at position 30 (1-based)
    fasta = write_fasta(tmp_path / "g.fa", {"1": seq})  # not indexed yet: opening it indexes it, silently
    flip = {"A": "C", "C": "G", "G": "T", "T": "A"}
    rows = [allele("chr1", 10, ".", seq[9], flip[seq[9]]),  # matched to contig 1
            allele("chr1", 12, ".", seq[11], flip[seq[11]]),  # the same alias, remembered
            allele("chrX", 5, ".", "A", "C"),
            allele("1", 41, ".", "A", "C"),  # one past the end
            allele("1", 12, ".", flip[seq[11]], seq[11]),  # REF is not the genome's base
            allele("1", 25, ".", seq[24], flip[seq[24]]),  # the N is 5 bases away, inside a covering 6-mer
            allele("1", 15, ".", "A", "AC")]  # refused when read
    opened = spying_open_fasta(monkeypatch)
    out = windows(allele_columns(rows), str(fasta), 6, 1, 15, storage_options={"anon": True})  # both strands
    assert opened == [{"anon": True}] and capsys.readouterr().out == ""
    assert list(out["error"]) == [
        "", "", "contig: chrX is not in the FASTA", "position: 41 is past the end of 1 (40 bp)",
        f"REF mismatch: REF {flip[seq[11]]} does not match the genome ({seq[11]}) at 1:12",
        "N nearby: an N within 5 bases of 1:25; no k-mer to score", rows[-1].reason]
    assert [len(ids) for ids in out["ids"][:2]] == [2, 2]  # both strands of the two scored alleles
    # k-mers at stride 2: the tokenizer's and the tiles' stride, not 1 (forward strand, window 13 on base 10)
    out = windows(allele_columns(rows[:1]), str(fasta), 4, 2, 13, "forward")
    vocab, window, q = {t: i for i, t in enumerate(kmer_vocab(4))}, seq[3:16], 6
    want = [CLS] + [MASK if s <= q < s + 4 else vocab[window[s : s + 4]] for s in range(0, 10, 2)] + [SEP]
    assert out["ids"][0].tolist() == [want] and out["ids"][0].dtype == np.int32
    assert out["candidates"][0].shape == (1, 2, 4)  # the two 4-mers at stride 2 that hold base 10


def test_the_embedding_task_tiles_and_tokenizes_at_the_stride_asked(tmp_path, monkeypatch, capsys):
    import numpy as np

    from randommask.data.tokenizer import CLS, SEP, kmer_vocab
    from randommask.inference.embed import tokenize_regions

    seq = random_dna(50, 6)
    fasta = write_fasta(tmp_path / "g.fa", {"c": seq})
    batch = {"chrom": np.array(["c"], object), "start": np.array([10]), "end": np.array([30]),
             "strands": np.array(["+"], object)}
    opened = spying_open_fasta(monkeypatch)
    out = tokenize_regions(batch, str(fasta), 4, 2, 9, storage_options={"anon": True})
    assert opened == [{"anon": True}] and capsys.readouterr().out == ""
    vocab = {t: i for i, t in enumerate(kmer_vocab(4))}
    # 20 bases: 9 4-mers at stride 2, one tile of up to 9 (at stride 1 there would be 17 in two tiles)
    want = [CLS] + [vocab[seq[10 + s : 14 + s]] for s in range(0, 17, 2)] + [SEP]
    assert out["ids"][0].tolist() == [want]


def test_refused_rows_come_out_with_null_scores_and_every_column_typed():
    import json

    import pyarrow as pa

    from randommask.inference.alleles import allele
    from randommask.inference.provenance import METADATA_KEY
    from randommask.inference.variant_inputs import allele_columns
    from randommask.inference.variants import Scorer

    rows = [allele("chr2", 7, "rs7", "AC", "A"), allele("3", 9, "rs9", "C", "<DEL>")]
    scorer = Scorer.__new__(Scorer)  # no model: nothing here to score, so the actor never runs it
    scorer.provenance = {"command": "score-variants"}
    table = scorer(allele_columns(rows))
    want_types = dict(chrom=pa.string(), pos=pa.int64(), id=pa.string(), ref=pa.string(), alt=pa.string(),
                      norm_pos=pa.int64(), norm_ref=pa.string(), norm_alt=pa.string(), llr=pa.float64(),
                      p_ref=pa.float64(), p_alt=pa.float64(), entropy=pa.float64(), error=pa.string())
    assert {f.name: f.type for f in table.schema} == want_types  # null scores still typed as numbers
    assert table.to_pylist() == [
        dict(chrom=a.chrom, pos=a.pos, id=a.id, ref=a.ref, alt=a.alt, norm_pos=a.norm_pos, norm_ref=a.norm_ref,
             norm_alt=a.norm_alt, llr=None, p_ref=None, p_alt=None, entropy=None, error=a.reason) for a in rows]
    assert json.loads(table.schema.metadata[METADATA_KEY.encode()]) == {"command": "score-variants"}
    scorer.provenance = None
    assert scorer(allele_columns(rows)).schema.metadata is None


def test_each_region_row_carries_its_bed_fields_and_the_mean_of_its_strands_vectors():
    import json

    import numpy as np
    import pyarrow as pa

    from randommask.inference.embed import Embedder
    from randommask.inference.provenance import METADATA_KEY

    embedder = Embedder.__new__(Embedder)  # the pooling of tiles is test_inference_numbers'; here: the rows
    embedder.provenance = {"command": "embed"}
    embedder.embed = lambda parts: np.array([[1, 2], [3, 4], [5, 6], [7, 9]][: len(parts)], np.float32)
    ids = [np.zeros((1, 5), np.int32), np.zeros((2, 5), np.int32), np.zeros((2, 5), np.int32)]
    batch = {"chrom": np.array(["c1", "c2", "c3"], object), "start": np.array([5, 6, 7], np.int32),
             "end": np.array([50, 60, 70], np.int32), "name": np.array(["a", "b", "c"], object),
             "strands": np.array(["+", "-", "+-"], object), "ids": ids}
    table = embedder(batch)
    assert {f.name: f.type for f in table.schema} == dict(
        chrom=pa.string(), start=pa.int64(), end=pa.int64(), name=pa.string(), strands=pa.string(),
        embedding=pa.list_(pa.float32(), 2))
    assert table.to_pylist() == [
        dict(chrom="c1", start=5, end=50, name="a", strands="+", embedding=[1.0, 2.0]),
        dict(chrom="c2", start=6, end=60, name="b", strands="-", embedding=[3.0, 4.0]),
        dict(chrom="c3", start=7, end=70, name="c", strands="+-", embedding=[6.0, 7.5])]  # (5 + 7) / 2, (6 + 9) / 2
    assert json.loads(table.schema.metadata[METADATA_KEY.encode()]) == {"command": "embed"}
    embedder.provenance = None
    assert embedder(batch).schema.metadata is None
