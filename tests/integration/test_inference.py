"""Inference on a real Ray cluster: embeddings against a direct transformers forward, variant scores
(their algebra, edge cases, and signal from a model pretrained here), both commands through the CLI
from and to the local S3 server (genome access, regions and tiles are in tests/unit/test_inference.py)."""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

import randommask
from conftest import random_dna, run_cli, write_fasta
from randommask import KmerTokenizer
from randommask.common.checkpoints import weights_digest
from randommask.errors import UserError
from randommask.inference import fasta as fasta_io
from randommask.inference.embed import embed
from randommask.inference.regions import tiles
from randommask.inference.sorted_out import sort_out
from randommask.inference.variants import score_variants

QUIET = lambda *_: None  # noqa: E731
CHROM = "chrT"
pytestmark = pytest.mark.usefixtures("own_cache")


@pytest.fixture(scope="module")
def genome(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    contigs = {CHROM: random_dna(3000), "chrN": random_dna(200, 1)[:80] + "N" * 40 + random_dna(200, 2)[:80]}
    return write_fasta(tmp_path_factory.mktemp("genome") / "g.fa", contigs), contigs


def _variants_file(path: Path, rows: list[tuple]) -> Path:
    path.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n" +
                    "".join(f"{c}\t{p}\t{i}\t{r}\t{a}\t.\t.\t.\n" for c, p, i, r, a in rows))
    return path


def _table(out: Path, key: str = "id"):
    return {row[key]: row for row in pq.read_table(out).to_pylist()}


@pytest.mark.ray
def test_scores_are_antisymmetric_zero_for_ref_and_handle_edges_ns_and_mismatches(ray_local, genome,
                                                                                  tiny_checkpoint, tmp_path):
    path, contigs = genome
    seq = contigs[CHROM]
    other = {"A": "G", "C": "T", "G": "A", "T": "C"}
    rows = [(CHROM, p, f"v{p}", seq[p - 1], other[seq[p - 1]]) for p in (1, 3, 6, 7, 1500, 2995, 3000)]
    rows += [(CHROM, 1500, "same", seq[1499], seq[1499]), (CHROM, 700, "mismatch", other[seq[699]], seq[699]),
             ("chrN", 100, "in-N", "N", "A"), ("chrN", 78, "near-N", contigs["chrN"][77], "A"),
             ("chrN", 40, "clear", contigs["chrN"][39], other[contigs["chrN"][39]])]
    # Every allele gets a row: padded SNVs scored where they are, the unscorable with their reason.
    rows += [("T", 1500, "alias", seq[1499], other[seq[1499]]),  # chrT without its prefix
             (CHROM, 1499, "padded", seq[1498:1500], seq[1498] + other[seq[1499]]),
             (CHROM, 800, "mnv", seq[799:801], other[seq[799]] + other[seq[800]]),
             (CHROM, 900, "del", seq[899:901], seq[899]), (CHROM, 950, "sym", seq[949], "<DEL>"),
             ("chrZ", 5, "nocontig", "A", "G")]
    out = tmp_path / "scores"
    said = []
    s = score_variants(str(tiny_checkpoint), str(path), str(_variants_file(tmp_path / "v.vcf", rows)), str(out),
                       window_bp=128, batch_size=4, log=said.append)
    t = _table(out)
    assert len(t) == len(rows) and s["scored"] + s["errors"] == len(rows) and s["errors"] == 7
    assert s["not_scored"] == {"symbolic": 1, "indel": 1, "MNV": 1, "non-ACGT": 1, "contig": 1, "REF mismatch": 1,
                               "N nearby": 1}
    assert s["contig_aliases"] == {"T": "chrT"} and any("T -> chrT" in line for line in said)
    for vid in ("alias", "padded"):  # the same SNV as v1500, so the same score; the input kept beside it
        assert t[vid]["llr"] == pytest.approx(t["v1500"]["llr"], abs=1e-6), vid
        assert (t[vid]["norm_pos"], t[vid]["norm_ref"], t[vid]["norm_alt"]) == (1500, seq[1499], other[seq[1499]])
    assert (t["padded"]["pos"], t["padded"]["ref"]) == (1499, seq[1498:1500]) and t["alias"]["chrom"] == "T"
    assert t["mnv"]["error"].startswith("MNV:") and t["del"]["error"].startswith("indel:")
    assert t["sym"]["error"].startswith("symbolic:") and t["nocontig"]["error"] == "contig: chrZ is not in the FASTA"
    assert all(t[v]["llr"] is None for v in ("mnv", "del", "sym", "nocontig"))
    # A table of the same variants gives the same rows.
    tsv = tmp_path / "v.tsv"
    tsv.write_text("chrom\tpos\tid\tref\talt\n" + "".join(f"{c}\t{p}\t{i}\t{r}\t{a}\n" for c, p, i, r, a in rows))
    from_table = score_variants(str(tiny_checkpoint), str(path), None, str(tmp_path / "from-table"), window_bp=128,
                                variants=str(tsv), log=QUIET)
    assert from_table["not_scored"] == s["not_scored"]
    t2 = _table(tmp_path / "from-table")
    assert t2.keys() == t.keys()
    for vid, row in t.items():
        assert {**t2[vid], "llr": None, "p_ref": None, "p_alt": None, "entropy": None} == \
            {**row, "llr": None, "p_ref": None, "p_alt": None, "entropy": None}
        assert t2[vid]["llr"] == (None if row["llr"] is None else pytest.approx(row["llr"], abs=1e-6))
    for p in (1, 3, 6, 7, 1500, 2995, 3000, 40):  # contig ends too: fewer tokens cover the base there
        row = t[f"v{p}"] if p != 40 else t["clear"]
        assert row["error"] == "" and np.isfinite(row["llr"]), row
        assert row["llr"] == pytest.approx(np.log(row["p_alt"]) - np.log(row["p_ref"]), abs=1e-9)
        assert 0 < row["p_ref"] < 1 and 0 <= row["entropy"] <= np.log(4) + 1e-9
    assert t["same"]["llr"] == 0.0
    assert "does not match the genome" in t["mismatch"]["error"] and t["mismatch"]["llr"] is None
    assert t["in-N"]["llr"] is None and t["in-N"]["error"]
    assert t["near-N"]["llr"] is None and "an N within 5 bases" in t["near-N"]["error"]
    # Antisymmetry: the genome edited to carry each alt, scored back to the reference allele.
    edited = dict(contigs)
    chars = list(seq)
    for p in (7, 1500, 2995):
        chars[p - 1] = other[seq[p - 1]]
    edited[CHROM] = "".join(chars)
    path2 = write_fasta(tmp_path / "edited.fa", edited)
    back = [(CHROM, p, f"v{p}", other[seq[p - 1]], seq[p - 1]) for p in (7, 1500, 2995)]
    out2 = tmp_path / "scores-back"
    score_variants(str(tiny_checkpoint), str(path2), str(_variants_file(tmp_path / "b.vcf", back)), str(out2),
                   window_bp=128, log=QUIET)
    t2 = _table(out2)
    for p in (7, 1500, 2995):
        assert t2[f"v{p}"]["llr"] == pytest.approx(-t[f"v{p}"]["llr"], abs=1e-6)
    # A rerun skips what is written; OUT holds Parquet files and the record of what made them.
    again = score_variants(str(tiny_checkpoint), str(path), str(tmp_path / "v.vcf"), str(out), window_bp=128, log=QUIET)
    assert again["skipped_done"] == len(rows) and again["variants"] == len(rows)  # the read tasks left all out
    assert len(pq.read_table(out)) == len(rows)
    assert {p.suffix for p in out.iterdir() if not p.name.startswith("_")} == {".parquet"}
    record = json.loads((out / "_provenance.json").read_text())
    assert record["command"] == "score-variants" and record["checkpoint"] == str(tiny_checkpoint)
    assert record["settings"] == {"k": 6, "stride": 1, "strands": "both", "window_bp": 127}
    assert len(record["weights_sha256"]) == 64
    assert json.loads(pq.read_schema(next(out.glob("*.parquet"))).metadata[b"randommask"]) == record
    # Other settings into the same OUT: refused in one line naming the difference, OUT untouched ...
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(UserError, match=r"holds results of other settings \(window_bp 127 there, 63 now\).*--overwrite"):
        score_variants(str(tiny_checkpoint), str(path), str(tmp_path / "v.vcf"), str(out), window_bp=64, log=QUIET)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    # ... unless --overwrite, which starts afresh: every row again, under the new record.
    fresh = score_variants(str(tiny_checkpoint), str(path), str(tmp_path / "v.vcf"), str(out), window_bp=64,
                           overwrite=True, log=QUIET)
    assert fresh["skipped_done"] == 0 and fresh["scored"] + fresh["errors"] == len(rows)
    assert len(pq.read_table(out)) == len(rows)
    assert json.loads((out / "_provenance.json").read_text())["settings"]["window_bp"] == 63


@pytest.mark.ray
def test_out_vcf_keeps_every_record_whole_sorted_indexed_and_equal_to_the_parquet(ray_local, genome, tiny_checkpoint,
                                                                                 tmp_path):
    import pysam

    path, contigs = genome
    seq, n_seq = contigs[CHROM], contigs["chrN"]
    other = {"A": "G", "C": "T", "G": "A", "T": "C"}
    records = [(CHROM, p, f"v{p}", seq[p - 1], other[seq[p - 1]]) for p in (5, 40, 41, 700, 1500, 2990)]
    records += [(CHROM, 900, "multi", seq[899], f"{other[seq[899]]},<DEL>,{seq[899]}T"),  # SNV, symbolic, indel
                (CHROM, 900, "second", seq[899], "N"), ("chrN", 30, "n30", n_seq[29], other[n_seq[29]])]
    records.sort(key=lambda r: ((CHROM, "chrN").index(r[0]), r[1]))
    header = ("##fileformat=VCFv4.2\n##FORMAT=<ID=GT,Number=1,Type=String,Description=\"Genotype\">\n"
              "##INFO=<ID=DP,Number=1,Type=Integer,Description=\"Depth\">\n"
              "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\ts1\n")
    text = header + "".join(f"{c}\t{p}\t{i}\t{r}\t{a}\t50\tPASS\tDP={p}\tGT\t0/1\n" for c, p, i, r, a in records)
    (tmp_path / "in.vcf").write_text(text)
    vcf = pysam.tabix_index(str(tmp_path / "in.vcf"), preset="vcf", force=True)  # bgzip + .tbi by htslib
    out, out_vcf = tmp_path / "scores", tmp_path / "annotated" / "scores.vcf.gz"
    s = score_variants(str(tiny_checkpoint), str(path), vcf, str(out), window_bp=64, batch_size=2,
                       out_vcf=str(out_vcf), log=QUIET)
    assert s["vcf"] == {"records": len(records), "alts": len(records) + 2} and s["sorted_rows"] == len(records) + 2
    # The Parquet output reads back, in its files' name order, in genome order.
    files = sorted(p for p in out.glob("*.parquet"))
    rows = [r for f in files for r in pq.read_table(f).to_pylist()]
    keys = [((CHROM, "chrN").index(r["chrom"]), r["pos"], r["id"], r["ref"], r["alt"]) for r in rows]
    assert keys == sorted(keys) and len(files) == 1 and not (out / "_sorting").exists()
    by_key = {(r["chrom"], r["pos"], r["id"], r["ref"], r["alt"]): r for r in rows}
    # The VCF: every input record, whole (QUAL, FILTER, INFO, samples), with one value per ALT.
    assert Path(str(out_vcf) + ".tbi").is_file() and not list(out_vcf.parent.glob(".*partial"))
    with pysam.VariantFile(str(out_vcf)) as vf:
        assert vf.header.info["RM_LLR"].number == "A" and str(tiny_checkpoint) in str(vf.header)
        got = list(vf)
        assert [(r.chrom, r.pos, r.id) for r in got] == [(c, p, i) for c, p, i, _, _ in records]
        assert len(list(vf.fetch("chrN"))) == 1  # the index works
    for r in got:
        assert r.qual == 50 and list(r.filter) == ["PASS"] and r.info["DP"] == r.pos and r.samples["s1"]["GT"] == (0, 1)
        for i, alt in enumerate(r.alts):
            row = by_key[(r.chrom, r.pos, r.id, r.ref, alt)]
            for tag, column in (("RM_LLR", "llr"), ("RM_PREF", "p_ref"), ("RM_PALT", "p_alt"), ("RM_ENTROPY", "entropy")):
                value = r.info[tag][i] if tag in r.info else None
                assert value == (None if row[column] is None else pytest.approx(row[column], rel=1e-5, abs=1e-6))
            err = r.info[tag][i] if (tag := "RM_ERR") in r.info else None
            assert (err in (None, ".")) == (row["error"] == ""), (r.id, alt, err, row["error"])
    multi = next(r for r in got if r.id == "multi")
    assert multi.info["RM_ERR"][1:] == ("symbolic", "indel") and multi.info["RM_LLR"][0] is not None
    # A table has no records to keep: its sites, sorted, from the same rows.
    tsv = tmp_path / "v.tsv"
    tsv.write_text("chrom\tpos\tid\tref\talt\n" + "".join(f"{c}\t{p}\t{i}\t{r}\t{a}\n" for c, p, i, r, a in
                                                         reversed(records)))
    sites = score_variants(str(tiny_checkpoint), str(path), None, str(tmp_path / "t"), window_bp=64, variants=str(tsv),
                           out_vcf=str(tmp_path / "sites.vcf.gz"), log=QUIET)
    assert sites["vcf"] == s["vcf"]
    with pysam.VariantFile(str(tmp_path / "sites.vcf.gz")) as vf:
        table_records = [(r.chrom, r.pos, r.id, dict(zip(r.alts, r.info.get("RM_LLR") or [None] * 3))) for r in vf]
    # (a table's ALTs of one site come in sorted order)
    assert table_records == [(r.chrom, r.pos, r.id, dict(zip(r.alts, r.info.get("RM_LLR") or [None] * 3))) for r in got]
    # Past DRIVER_ROWS the sort goes through Ray Data: the same rows in the same order, from shuffled files.
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    table = pq.read_table(out)
    order = np.random.default_rng(0).permutation(len(table))
    for i, part in enumerate(np.array_split(order, 3)):
        pq.write_table(table.take(part), shuffled / f"part{i}.parquet")
    assert sort_out(str(shuffled), ["pos", "id", "ref", "alt"], list(contigs), log=QUIET, driver_rows=0) == len(table)
    assert pq.read_table(shuffled).to_pylist() == rows and len(list(shuffled.glob("*.parquet"))) == 1
    # An unsorted VCF without an index: the scores are written, the VCF refused in one line.
    (tmp_path / "unsorted.vcf").write_text(header + "".join(
        f"{c}\t{p}\t{i}\t{r}\t{a}\t50\tPASS\tDP=1\tGT\t0/1\n" for c, p, i, r, a in reversed(records)))
    with pytest.raises(UserError, match=r"not sorted by position within chrT .*bcftools sort"):
        score_variants(str(tiny_checkpoint), str(path), str(tmp_path / "unsorted.vcf"), str(tmp_path / "u"),
                       window_bp=64, out_vcf=str(tmp_path / "u.vcf.gz"), log=QUIET)
    assert len(pq.read_table(tmp_path / "u")) == len(records) + 2 and not (tmp_path / "u.vcf.gz").exists()


@pytest.mark.ray
def test_a_variant_scores_the_same_on_either_strand_of_the_genome(ray_local, genome, tiny_checkpoint, tmp_path):
    # Both strands are averaged by default (as GPN does); the window is centred, so the genome's
    # reverse complement shows the model the same bases. Contig ends included: clipped windows mirror.
    path, contigs = genome
    seq = contigs[CHROM]
    comp = {"A": "T", "C": "G", "G": "C", "T": "A"}
    rc_seq = "".join(comp[b] for b in reversed(seq))
    rc_path = write_fasta(tmp_path / "rc.fa", {CHROM: rc_seq})
    alt = {"A": "C", "C": "G", "G": "T", "T": "A"}
    where = (1, 4, 50, 1500, 2990, 3000)
    rows = [(CHROM, p, f"v{p}", seq[p - 1], alt[seq[p - 1]]) for p in where]
    mirrored = [(CHROM, len(seq) + 1 - p, f"v{p}", comp[seq[p - 1]], comp[alt[seq[p - 1]]]) for p in where]
    scores = {}
    for name, fasta, variants, strands in (("fwd", path, rows, "both"), ("rc", rc_path, mirrored, "both"),
                                           ("fwd1", path, rows, "forward"), ("rc1", rc_path, mirrored, "forward")):
        out = tmp_path / name
        s = score_variants(str(tiny_checkpoint), str(fasta), str(_variants_file(tmp_path / f"{name}.vcf", variants)),
                           str(out), window_bp=64, strands=strands, log=QUIET)
        assert s["window_bp"] == 63 and s["strands"] == strands and s["errors"] == 0
        scores[name] = _table(out)
    for p in where:
        for column in ("llr", "p_ref", "p_alt", "entropy"):
            assert scores["fwd"][f"v{p}"][column] == pytest.approx(scores["rc"][f"v{p}"][column], abs=1e-5)
    one_strand = [abs(scores["fwd1"][f"v{p}"]["llr"] - scores["rc1"][f"v{p}"]["llr"]) for p in where]
    assert max(one_strand) > 1e-3  # a strand alone is not symmetric: the averaging does the work
    for p in where:  # the average of the strands' LLRs
        want = (scores["fwd1"][f"v{p}"]["llr"] + scores["rc1"][f"v{p}"]["llr"]) / 2
        assert scores["fwd"][f"v{p}"]["llr"] == pytest.approx(want, abs=1e-5)


# ---- embeddings ---------------------------------------------------------------------------------
def _direct_mean(model_dir: Path, seq: str) -> np.ndarray:
    from transformers import BertModel

    model = BertModel.from_pretrained(model_dir, add_pooling_layer=False).eval()
    ids = torch.tensor([KmerTokenizer.from_pretrained(model_dir).encode(seq)])
    with torch.no_grad():
        hidden = model(input_ids=ids).last_hidden_state[0]
    return hidden[1:-1].mean(0).numpy(), hidden


@pytest.mark.ray
def test_embeddings_equal_a_direct_forward_tile_long_regions_and_resume(ray_local, genome, tiny_checkpoint, tmp_path):
    path, contigs = genome
    seq = contigs[CHROM]
    bed = tmp_path / "r.bed"
    bed.write_text(f"{CHROM}\t100\t400\tshort\n{CHROM}\t0\t3000\twhole\n{CHROM}\t2900\t3000\tend\n")
    out = tmp_path / "emb"
    s = embed(str(tiny_checkpoint), str(path), str(bed), str(out), batch_size=2, window_bp=300, strands="forward",
              log=QUIET)
    assert s["embedded"] == 3 and s["dim"] == 64
    table = pq.read_table(out)
    assert table.schema.field("embedding").type.list_size == 64 and str(table.schema.field("embedding").type
                                                                      .value_type) == "float"
    assert [n for n in table.schema.names if "emb" in n] == ["embedding"]
    assert {"chrom", "start", "end", "name"} <= set(table.schema.names)
    rows = {r["name"]: r for r in table.to_pylist()}
    want, _ = _direct_mean(tiny_checkpoint, seq[100:400])
    np.testing.assert_allclose(rows["short"]["embedding"], want, atol=1e-5)
    np.testing.assert_allclose(rows["end"]["embedding"], _direct_mean(tiny_checkpoint, seq[2900:3000])[0], atol=1e-5)
    # 3,000 bp in tiles of 295 6-mers (window 300 bp), overlapping by 5 bases: the mean over every k-mer once
    sums, count = 0, 0
    for a, b in tiles(3000, 295, 6):
        _, hidden = _direct_mean(tiny_checkpoint, seq[a:b])
        sums, count = sums + hidden[1:-1].sum(0).numpy(), count + (b - a - 5)
    np.testing.assert_allclose(rows["whole"]["embedding"], sums / count, atol=1e-5)
    assert count == 3000 - 5
    # --no-tile refuses, in one line; a rerun skips what is there
    with pytest.raises(UserError, match="--no-tile: region whole .* needs 2995 k-mer tokens, the model takes 295"):
        embed(str(tiny_checkpoint), str(path), str(bed), str(tmp_path / "no"), window_bp=300, tile=False,
              strands="forward", log=QUIET)
    # The same weights copied elsewhere resume (the digest is the identity); another layer is refused.
    copy = shutil.copytree(tiny_checkpoint, tmp_path / "copied-model")
    notes = []
    again = embed(str(copy), str(path), str(bed), str(out), window_bp=300, strands="forward", log=notes.append)
    assert again["skipped"] == 3 and again["embedded"] == 0
    assert any("the same weights, so it resumes" in n for n in notes)
    with pytest.raises(UserError, match=r"layer -1 there, 1 now"):
        embed(str(copy), str(path), str(bed), str(out), window_bp=300, strands="forward", layer=1, log=QUIET)
    assert {p.suffix for p in out.iterdir() if not p.name.startswith("_")} == {".parquet"}


@pytest.mark.ray
def test_a_minus_strand_region_is_embedded_from_its_reverse_complement(ray_local, genome, tiny_checkpoint, tmp_path):
    from randommask.data.tokenizer import reverse_complement

    path, contigs = genome
    n = len(contigs[CHROM])
    rc_path = write_fasta(tmp_path / "rc.fa", {CHROM: reverse_complement(contigs[CHROM])})
    bed = tmp_path / "s.bed"
    bed.write_text(f"{CHROM}\t100\t400\tminus\t0\t-\n{CHROM}\t100\t400\tplus\t0\t+\n{CHROM}\t100\t400\tnone\n"
                   f"{CHROM}\t0\t3000\tlong\t0\t-\n")
    mirrored = tmp_path / "m.bed"  # the same bases, read forward off the reverse-complemented genome
    mirrored.write_text(f"{CHROM}\t{n - 400}\t{n - 100}\tminus\t0\t+\n{CHROM}\t0\t{n}\tlong\t0\t+\n")

    def vectors(fasta, regions, name, strands):
        embed(str(tiny_checkpoint), str(fasta), str(regions), str(tmp_path / name), window_bp=300, strands=strands,
              log=QUIET)
        return {r["name"]: r for r in pq.read_table(tmp_path / name).to_pylist()}

    auto, rc = vectors(path, bed, "auto", "auto"), vectors(rc_path, mirrored, "rc", "auto")
    for name in ("minus", "long"):  # "long" is tiled: the tiles are cut along the strand read
        np.testing.assert_allclose(auto[name]["embedding"], rc[name]["embedding"], atol=1e-5)
    assert {name: r["strands"] for name, r in auto.items()} == {"minus": "-", "plus": "+", "none": "+-", "long": "-"}
    # No strand: the mean of the two strands' vectors (the default, documented).
    mean = (np.array(auto["plus"]["embedding"]) + np.array(auto["minus"]["embedding"])) / 2
    np.testing.assert_allclose(auto["none"]["embedding"], mean, atol=1e-5)
    assert not np.allclose(auto["plus"]["embedding"], auto["minus"]["embedding"], atol=1e-3)
    both = vectors(path, bed, "both", "both")  # every region averaged, its strand aside
    for name in ("minus", "plus", "none"):
        np.testing.assert_allclose(both[name]["embedding"], mean, atol=1e-5)


@pytest.mark.ray
def test_a_region_of_a_million_record_vcf_reads_only_its_records_in_a_small_driver(ray_local, genome,
                                                                                  tiny_checkpoint, tmp_path):
    """An indexed VCF of a million records (bgzip and tabix by pysam, as the tools write them): with
    --region the read tasks fetch only that region's records through the index, and the driver's
    peak memory is that of the same command on a 20-record file."""
    import subprocess
    import sys

    import pysam

    path, contigs = genome
    seq = contigs[CHROM]
    other = {"A": "G", "C": "T", "G": "A", "T": "C"}
    header = (f"##fileformat=VCFv4.2\n##contig=<ID={CHROM},length={len(seq)}>\n##contig=<ID=chrBig,length=2000000>\n"
              "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
    snvs = "".join(f"{CHROM}\t{p}\ts{p}\t{seq[p - 1]}\t{other[seq[p - 1]]}\t.\t.\t.\n" for p in range(100, 2100, 100))
    files = {}
    for name, body in (("small", snvs), ("big", snvs + "".join(f"chrBig\t{p}\t.\tA\tG\t.\t.\t.\n"
                                                                 for p in range(1, 1_000_001)))):
        (tmp_path / f"{name}.vcf").write_text(header + body)
        files[name] = pysam.tabix_index(str(tmp_path / f"{name}.vcf"), preset="vcf", force=True)  # bgzip + .tbi
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    peak = "import resource, sys; from randommask.cli import main; code = main(sys.argv[1:]); " \
           "print('peak_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)"

    def run(vcf: str, out: str, *extra: str) -> int:
        res = subprocess.run([sys.executable, "-c", peak, "score-variants", str(tiny_checkpoint), "--fasta", str(path),
                              "--vcf", vcf, "--out", str(tmp_path / out), "--window-bp", "64", *extra],
                             capture_output=True, text=True, timeout=600, env=env)
        assert res.returncode == 0, res.stderr[-3000:]
        assert "scored   20 SNV(s), 0 reported with an error" in res.stdout, res.stdout
        return int(res.stdout.split("peak_kb")[-1])

    small_kb = run(files["small"], "small")
    big_kb = run(files["big"], "big", "--region", f"{CHROM}:1-{len(seq)}")
    assert _table(tmp_path / "big").keys() == _table(tmp_path / "small").keys() == {f"s{p}" for p in range(100, 2100, 100)}
    assert big_kb < small_kb + 40_000, (small_kb, big_kb)  # a million records read would be hundreds of MB


@pytest.mark.ray
def test_both_commands_from_s3_through_the_cli(ray_local, s3, genome, tiny_checkpoint, tmp_path):
    """The FASTA (plain gzip), BED, VCF and checkpoint on the S3 server, the results written back there."""
    path, contigs = genome
    bucket = s3.bucket("inference")
    (bucket / "g.fa.gz").write_bytes(gzip.compress(path.read_bytes()))
    shutil.copytree(tiny_checkpoint, bucket / "model")
    (bucket / "r.bed").write_text(f"{CHROM}\t0\t500\tfirst\n{CHROM}\t1000\t1600\tsecond\n")
    seq = contigs[CHROM]
    _variants_file(bucket / "v.vcf", [(CHROM, 321, "x", seq[320], "A" if seq[320] != "A" else "C")])
    # the commands join the session's Ray cluster (as under `ray job submit`) instead of starting their own
    env = {**os.environ, "RANDOMMASK_CACHE": str(tmp_path / "node-cache"), "RAY_AUTH_MODE": "token",
           "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    res = run_cli("embed", "s3://inference/model", "--fasta", "s3://inference/g.fa.gz", "--regions",
                  "s3://inference/r.bed", "--out", "s3://inference/emb", "--window-bp", "200", timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "embedded 2 region(s)" in res.stdout and "fetching s3://inference/g.fa.gz" in res.stdout + res.stderr
    assert "plain gzip" in res.stdout + res.stderr
    names = [p.name for p in (bucket / "emb").iterdir() if p.name != "_provenance.json"]
    assert names and all(n.endswith(".parquet") for n in names)
    record = json.loads((bucket / "emb" / "_provenance.json").read_text())  # written to S3 like the results
    assert record["checkpoint"] == "s3://inference/model" and record["settings"]["max_kmers"] == 195
    res = run_cli("score-variants", "s3://inference/model", "--fasta", "s3://inference/g.fa.gz", "--vcf",
                  "s3://inference/v.vcf", "--out", "s3://inference/scores", "--window-bp", "128",
                  "--out-vcf", "s3://inference/scored.vcf.gz", timeout=600, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "scored   1 SNV(s), 0 reported with an error" in res.stdout
    row = pq.read_table(bucket / "scores").to_pylist()[0]
    assert row["error"] == "" and row["pos"] == 321 and np.isfinite(row["llr"])
    assert sorted(p.name for p in (bucket / "scores").iterdir() if not p.name.startswith("_"))[0].startswith("sorted-")
    import pysam  # the sorted rows and the annotated VCF, both on S3

    with pysam.VariantFile(str(bucket / "scored.vcf.gz")) as vf:
        assert [r.info["RM_LLR"][0] for r in vf.fetch(CHROM)] == [pytest.approx(row["llr"], rel=1e-6)]
    res = run_cli("embed", "s3://inference/model", "--fasta", "s3://inference/g.fa.gz", "--regions",
                  "s3://inference/absent.bed", "--out", "s3://inference/x", env=env)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "absent.bed" in res.stderr


@pytest.mark.ray
def test_a_model_pretrained_here_predicts_held_out_reference_bases_above_chance(tiny_run, prepared, tmp_path, ecoli):
    """A short pretraining on E. coli (the tiny test config, 150 steps, shared with test_pretrain.py),
    then the reference base's posterior at random positions of the validation blocks, which
    pretraining never saw."""
    run, _, cfg = tiny_run
    manifest = json.loads(Path(prepared, "manifest.json").read_text())
    name = manifest["records"][0]["name"]
    fa = fasta_io.open_fasta(str(ecoli), log=QUIET)
    rng = np.random.default_rng(0)
    rows = []
    for block in manifest["validation"]:
        for p in rng.integers(block["start"] + 64, block["end"] - 64, size=40):
            ref = fa[name][int(p)].upper()
            rows.append((name, int(p) + 1, f"p{p}", ref, "A" if ref != "A" else "C"))
    out = tmp_path / "scores"
    score_variants(str(run / "final"), str(ecoli), str(_variants_file(tmp_path / "v.vcf", rows)),
                   str(out), window_bp=cfg.data.window_bp, log=QUIET)
    p_ref = np.array([r["p_ref"] for r in pq.read_table(out).to_pylist()])
    assert len(p_ref) == len(rows) and np.isfinite(p_ref).all()
    assert p_ref.mean() > 0.25 + 3 * p_ref.std() / np.sqrt(len(p_ref)), p_ref.mean()  # chance is 0.25
    # ... and equal to the plain implementation (the covering tokens masked by index, a direct transformers
    # forward of each strand) on the trained weights: a leak of the answer would also be above chance
    from transformers import BertForMaskedLM

    from randommask.inference.centre import centred_window
    from unit.test_inference_numbers import plain_log_p

    model = BertForMaskedLM.from_pretrained(str(run / "final")).eval()
    width, got = centred_window(cfg.data.window_bp), _table(out)
    for name, pos, vid, ref, _ in rows[:: len(rows) // 24]:
        start = pos - 1 - width // 2  # clear of the contig's ends
        log_p = plain_log_p(model, fa[name][start : start + width], width // 2, k=cfg.data.k)
        assert got[vid]["p_ref"] == pytest.approx(np.exp(log_p[ref]), abs=1e-5), vid


@pytest.mark.ray
def test_zeroshot_reads_a_pretrained_model_against_the_count_tables(tiny_run, prepared, tmp_path):
    run, _, cfg = tiny_run
    out = tmp_path / "z.json"
    res = run_cli("zeroshot", str(run / "final"), "--prepared", prepared, "--positions", "400", "--seed", "1",
                  "--out", str(out))
    assert res.returncode == 0, res.stderr
    r = json.loads(out.read_text())
    assert r["n"] == 400 and r["strands"] == "both" and r["window_bp"] == cfg.data.window_bp - 1  # the run's, made odd
    assert r["chance"] == pytest.approx(-np.log(4), abs=1e-5) and set(r["tables"]) == {str(m) for m in range(1, 11)}
    best = r["tables"][r["best_table"]]
    assert best == max(r["tables"].values()) and r["chance"] < best < -1.2  # E. coli flanks: a little over chance
    assert r["tables"]["10"] > r["tables"]["4"]  # back-off keeps improving past 4 bases each side (add-one did not)
    assert r["vs_best_table"] == pytest.approx(r["mean_log_p_ref"] - best, abs=2e-5)
    # the model beats chance on held-out bases (measured: -1.293 ± 0.012 against -1.386); that the
    # positions are validation ones and the figures those of a plain implementation is pinned in
    # tests/unit/test_inference_numbers.py
    assert r["mean_log_p_ref"] > r["chance"] + 3 * r["sem"], (r["mean_log_p_ref"], r["sem"])
    # what produced it: these weights, this package, these settings
    assert r["provenance"]["weights_sha256"] == weights_digest(str(run / "final"))
    assert r["provenance"]["randommask"] == randommask.__version__ and r["provenance"]["settings"]["seed"] == 1
    assert "of the way from chance" in res.stdout and "best count table" in res.stdout
    again = run_cli("zeroshot", str(run / "final"), "--prepared", prepared, "--positions", "400", "--seed", "1",
                    "--out", str(tmp_path / "again.json"))
    assert again.returncode == 0, again.stderr  # the same seed: the same positions, the same figure
    assert json.loads((tmp_path / "again.json").read_text())["mean_log_p_ref"] == r["mean_log_p_ref"]
    bad = run_cli("zeroshot", str(run / "final"), "--prepared", str(tmp_path / "absent"), "--out", str(tmp_path / "x.json"))
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and "absent" in bad.stderr
    assert not (tmp_path / "x.json").exists()
