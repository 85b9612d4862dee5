"""Corpora of short records: tables and FASTA packed into contigs, deduplicated, decontaminated
(data/corpus.py, records.py, decontaminate.py). No Ray: the corpus path runs in one process.
Every count is checked against a slow plain implementation here (Python sets of k-mer strings)."""

import csv
import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import random_dna, run_cli, write_fasta
from randommask.data.corpus import CorpusOptions
from randommask.data.prepare import MANIFEST, prepare
from randommask.data.stream import build_plan
from randommask.errors import UserError

LETTERS = np.frombuffer(b"ATCGNNNN", dtype=np.uint8)
COMP = str.maketrans("ACGT", "TGCA")


def contigs(out: Path, manifest: dict) -> list[str]:
    """Each manifest record (contig) as upper-case text, read straight from its shard."""
    texts = []
    for r in manifest["records"]:
        raw = np.fromfile(out / r["shard"], dtype=np.uint8)[r["offset"] : r["offset"] + r["length"]]
        texts.append(LETTERS[raw & 7].tobytes().decode())
    return texts


def kmers_both_strands(seq: str, k: int = 31) -> set[str]:
    out = set()
    for i in range(len(seq) - k + 1):
        m = seq[i : i + k]
        if set(m) <= set("ACGT"):
            out.add(m)
            out.add(m.translate(COMP)[::-1])
    return out


def shares_kmer(seq: str, kmers: set[str], k: int = 31) -> bool:
    """Any k-mer of ``seq`` in ``kmers`` (which holds both strands already)."""
    return any(seq[i : i + k] in kmers for i in range(len(seq) - k + 1))


def table_sequences(path: Path) -> list[str]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t" if ".tsv" in path.name else ","))
    col = [h.lower() for h in rows[0]].index("sequence")
    return [row[col].upper() for row in rows[1:] if row]


def corpus(tmp_path: Path, sources, **options) -> tuple[Path, dict]:
    out = tmp_path / "out"
    kw = {k: options.pop(k) for k in ("val_fraction", "min_length") if k in options}
    m = prepare([str(s) for s in sources], str(out), show_progress=False, corpus=CorpusOptions(**options), **kw)
    return out, m


# ---- real GUE data: a train corpus cleaned of every dev and test sequence ------------------------
@pytest.mark.genome
def test_gue_train_corpus_shares_no_31mer_with_dev_or_test(gue_dir, tmp_path):
    trains = sorted(gue_dir.glob("*/*/train.csv"))
    out, m = corpus(tmp_path, trains, exclude=(str(gue_dir),), val_fraction=0.05)
    held_out = sorted(gue_dir.glob("*/*/dev.csv")) + sorted(gue_dir.glob("*/*/test.csv"))
    assert sorted(f["uri"] for f in m["exclude"]["files"]) == sorted(map(str, held_out))
    excluded: set[str] = set()
    for path in held_out:
        for seq in table_sequences(path):
            excluded |= kmers_both_strands(seq)
    # The slow count: records in file order, duplicates of any earlier record, then the 31-mer test.
    seen: set[str] = set()
    expected_kept = []
    for path, source in zip(trains, m["sources"]):
        seqs = table_sequences(path)
        dup = dropped = 0
        for s in seqs:
            if s in seen:
                dup += 1
                continue
            seen.add(s)
            if shares_kmer(s, excluded):
                dropped += 1
            else:
                expected_kept.append(s)
        assert (source["records_read"], source["duplicates"], source["dropped_overlap"]) == (len(seqs), dup, dropped)
    assert m["totals"]["dropped_overlap"] > 1000 and m["totals"]["duplicates"] > 1000  # GUE: both happen
    texts = contigs(out, m)
    for text in texts:  # no window of the prepared data can share a 31-mer with dev or test
        assert not shares_kmer(text, excluded)
    assert [r for t in texts for r in t.split("N" * 6)] == expected_kept
    assert m["totals"]["bases_kept"] == sum(map(len, expected_kept))


# ---- packing: joins, duplicates, whole-record validation ---------------------------------------
def test_packing_joins_duplicates_and_whole_record_validation(tmp_path):
    rng = np.random.default_rng(0)
    records = [random_dna(int(rng.integers(60, 140)), rng) for _ in range(3000)]
    rows = records[:1500] + [records[3].lower(), records[10]] + records[1500:]  # two duplicates, one in lower case
    with gzip.open(tmp_path / "a.tsv.gz", "wt") as f:
        f.write("id\tsequence\tlabel\n" + "".join(f"r{i}\t{s}\t0\n" for i, s in enumerate(rows[:2000])))
    (tmp_path / "b.csv").write_text("sequence,label\n" + "".join(f"{s},1\n" for s in rows[2000:]))
    (tmp_path / "notes").mkdir()  # a directory input: both tables found, nothing else
    out, m = corpus(tmp_path, [tmp_path], val_fraction=0.05, join_n=6)
    assert [s["uri"] for s in m["sources"]] == [str(tmp_path / "a.tsv.gz"), str(tmp_path / "b.csv")]
    assert [(s["records_read"], s["duplicates"], s["dropped_overlap"]) for s in m["sources"]] == [(2000, 2, 0),
                                                                                                   (1002, 0, 0)]
    texts = contigs(out, m)
    # Records joined by exactly 6 N, in order, each once: no 6-mer of the tokenizer spans two records.
    assert [r for t in texts for r in t.split("NNNNNN")] == records
    assert all("N" * 7 not in t and not t.startswith("N") and not t.endswith("N") for t in texts)
    assert m["totals"]["n_bases"] == 6 * (len(records) - len(texts))
    # Validation: whole records only, about 5% of them; the training intervals hold the rest, whole.
    whole = set(records)
    split = {"validation": [], "train": []}
    train_iv = []
    for v in m["validation"]:
        split["validation"] += texts[v["record"]][v["start"] : v["end"]].strip("N").split("NNNNNN")
    bounds: dict[int, list] = {}
    for v in m["validation"]:
        bounds.setdefault(v["record"], []).append((v["start"], v["end"]))
    for i, t in enumerate(texts):
        pos = 0
        for s, e in sorted(bounds.get(i, [])):
            train_iv.append(t[pos:s])
            pos = e
        train_iv.append(t[pos:])
    split["train"] = [r for iv in train_iv for r in iv.strip("N").split("NNNNNN") if iv.strip("N")]
    assert set(split["validation"]) <= whole and set(split["train"]) <= whole  # no half record anywhere
    assert sorted(split["validation"] + split["train"]) == sorted(records)
    assert m["packing"]["validation_records"] == len(split["validation"])
    assert 0.04 <= len(split["validation"]) / len(records) <= 0.07
    # Windows of any length fill both splits (the joins stay under the default 10% N filter).
    for window in (64, 515, 2000):
        for which in ("train", "validation"):
            plan = build_plan(str(out), which, window, max_n_fraction=0.1, manifest=m)
            assert plan.num_samples > 0
    with pytest.raises(UserError, match="joined by 6 N, fewer than k=8; re-run data prepare with --join-n 8"):
        build_plan(str(out), "train", 515, manifest=m, k=8)


def test_fasta_records_pack_and_exclude_on_either_strand(tmp_path):
    rng = np.random.default_rng(1)
    recs = {f"r{i}": random_dna(200, rng) for i in range(50)}
    write_fasta(tmp_path / "short.fa", recs)
    probe = recs["r7"][50:90]  # 40 bp: shares 31-mers with r7 only, given on the other strand
    write_fasta(tmp_path / "held.fa", {"x": probe.translate(COMP)[::-1]})
    _, plain = corpus(tmp_path, [tmp_path / "short.fa"], pack=True, val_fraction=0.0)
    assert plain["totals"]["records_kept"] == 50 and plain["totals"]["dropped_overlap"] == 0
    out, m = corpus(tmp_path, [tmp_path / "short.fa"], exclude=(str(tmp_path / "held.fa"),), val_fraction=0.0)
    assert m["totals"]["dropped_overlap"] == 1
    assert [r for t in contigs(out, m) for r in t.split("N" * 6)] == [s for n, s in recs.items() if n != "r7"]
    assert m["exclude"]["files"][0]["sequences"] == 1 and m["exclude"]["kmers"] == 40 - 31 + 1
    # A shorter shared stretch (30 bp) is no 31-mer match: nothing dropped.
    write_fasta(tmp_path / "held30.fa", {"y": recs["r7"][0:30]})
    _, m30 = corpus(tmp_path, [tmp_path / "short.fa"], exclude=(str(tmp_path / "held30.fa"),), val_fraction=0.0)
    assert m30["totals"]["dropped_overlap"] == 0


def test_genome_fasta_without_corpus_options_keeps_the_genome_path(tmp_path):
    write_fasta(tmp_path / "g.fa", {"chr": random_dna(20_000, 5)})
    opts = CorpusOptions()
    assert not opts.applies([{"uri": str(tmp_path / "g.fa")}])
    assert opts.applies([{"uri": "x/train.csv.gz"}]) and CorpusOptions(pack=True).applies([{"uri": "g.fa"}])


# ---- bad input: one line, exit 2, nothing written ----------------------------------------------
def test_bad_corpus_inputs_fail_in_one_line_and_write_nothing(tmp_path):
    (tmp_path / "nocol.csv").write_text("seq,label\nACGT,1\n")
    (tmp_path / "bad.csv").write_text("sequence,label\nACGTACGT,1\nACGTXACGT,0\n")
    (tmp_path / "good.csv").write_text("sequence\n" + random_dna(500, 3) + "\n")
    cases = [
        ([tmp_path / "nocol.csv"], [], f"{tmp_path / 'nocol.csv'}: no 'sequence' column (header: 'seq', 'label'); "
                                       "name the column of sequences 'sequence'"),
        ([tmp_path / "bad.csv"], [], f"{tmp_path / 'bad.csv'}: line 3: 'X' is not a nucleotide code "
                                     "(protein or other non-DNA FASTA?)"),
        ([tmp_path / "good.csv"], ["--exclude", tmp_path / "nothing-here"],
         f"--exclude {tmp_path / 'nothing-here'}: matches nothing; give a FASTA or table file, a glob, or a GUE root "
         "holding <dataset>/dev.csv and test.csv"),
    ]
    for i, (srcs, extra, message) in enumerate(cases):
        out = tmp_path / f"out{i}"
        r = run_cli("data", "prepare", *srcs, "--out", out, "--no-progress", *extra)
        assert r.returncode == 2, r.stderr
        assert r.stderr.strip().splitlines() == [f"randommask: error: {message}"]
        assert not out.exists()


def test_cli_prints_the_corpus_counts(tmp_path):
    seqs = [random_dna(100, i) for i in range(40)]
    (tmp_path / "train.csv").write_text("sequence\n" + "\n".join(seqs + seqs[:3]) + "\n")
    (tmp_path / "gue" / "d").mkdir(parents=True)
    (tmp_path / "gue" / "d" / "test.csv").write_text("sequence\n" + seqs[5] + "\n" + seqs[6][10:60] + "\n")
    (tmp_path / "gue" / "d" / "train.csv").write_text("sequence\n" + seqs[9] + "\n")  # not held out
    r = run_cli("data", "prepare", tmp_path / "train.csv", "--out", tmp_path / "out", "--no-progress",
                "--exclude", tmp_path / "gue", "--val-fraction", "0")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == ("corpus   43 records read, 3 duplicates, 2 dropped for a 31-mer shared with "
                                        "1 excluded file(s), 38 kept (3,800 bp) in 1 contigs joined by 6 N; "
                                        "validation 0 whole records")
    m = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert m["exclude"]["files"][0]["uri"] == str(tmp_path / "gue" / "d" / "test.csv")
    assert m["sources"][0]["bases_kept"] == 3800
