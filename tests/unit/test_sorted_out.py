"""The sorted output's parts that need no Ray: contig order, the two-phase swap a crash can
interrupt at any point (the sort itself runs in tests/integration/test_inference.py), and the
annotated VCF's header over an input that an earlier run already annotated."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from randommask.inference import runtime
from randommask.inference.sorted_out import SORTED, SORTING, SWAP, contig_ranks, is_sorted, recover


def _part(path, rows: list[int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"chrom": ["1"] * len(rows), "pos": rows}), path)


def test_contigs_rank_in_the_fasta_order_through_aliases_then_by_name():
    ranks = contig_ranks({"chr2", "chr10", "1", "MT", "weird", "alt_b"}, ["chr1", "chr2", "chr10", "chrM"])
    assert sorted(ranks, key=ranks.get) == ["1", "chr2", "chr10", "MT", "alt_b", "weird"]


def test_a_swap_interrupted_after_its_commit_point_is_finished_and_one_before_it_dropped(tmp_path):
    out = tmp_path / "out"
    for name, rows in (("a.parquet", [5, 1]), ("b.parquet", [3])):
        _part(out / name, rows)
    _part(out / SORTING / "sorted-000000-x.parquet", [1, 3, 5])
    assert [p.rsplit("/", 1)[-1] for p in runtime.parquet_files(str(out))] == ["a.parquet", "b.parquet"]
    # before the commit point: the sort never happened
    recover(str(out), log=lambda *_: None)
    assert not (out / SORTING).exists() and sorted(p.name for p in out.iterdir()) == ["a.parquet", "b.parquet"]
    # after it, crashed once an old file was gone and before any part moved in: finished, no row lost
    _part(out / SORTING / "sorted-000000-x.parquet", [1, 3, 5])
    (out / SORTING / SWAP).write_text(json.dumps({"remove": ["a.parquet", "b.parquet"],
                                                  "parts": ["sorted-000000-x.parquet"]}))
    (out / "a.parquet").unlink()
    said = []
    recover(str(out), log=said.append)
    assert sorted(p.name for p in out.iterdir()) == [SORTED, "sorted-000000-x.parquet"]
    assert pq.read_table(out).column("pos").to_pylist() == [1, 3, 5] and said and is_sorted(str(out))
    _part(out / "c.parquet", [7])  # a rerun added rows: no longer the last sort's parts
    assert not is_sorted(str(out))


def test_an_annotated_vcf_annotated_again_has_each_of_our_header_lines_once():
    import pysam

    from randommask.inference.vcf_out import vcf_header

    base = pysam.VariantHeader()
    base.info.add("DP", "1", "Integer", "depth")
    base.formats.add("GT", "1", "String", "genotype")
    base.add_sample("s1")
    prov = {"checkpoint": "/old", "weights_sha256": "0" * 64, "settings": {"window_bp": 63}, "randommask": "x"}
    once = vcf_header(pysam, base, prov, ["c1"], {"c1": 100}, {})
    twice = str(vcf_header(pysam, once, {**prov, "checkpoint": "/new"}, ["c1"], {"c1": 100}, {}))
    assert twice.count("ID=RM_LLR,") == 1 and twice.count("##randommask_checkpoint=") == 1
    assert "##randommask_checkpoint=/new" in twice and "ID=DP," in twice and twice.rstrip().endswith("\ts1")
