"""Genome data: prepare (local and S3 through a real rclone S3 server) and the streaming dataset."""

import gzip
import json
import shutil

import numpy as np
import pytest

from conftest import random_dna, run_cli, write_fasta
from randommask.data.genome import read_fasta
from randommask.data.prepare import MANIFEST, prepare
from randommask.data.stream import build_plan, pretraining_dataset, validation_windows
from randommask.data.tokenizer import COMPLEMENT_CODE, KmerTokenizer, codes_from_bytes
from randommask.errors import UserError

pytestmark = pytest.mark.ray
W = 512


def section(prepared: str, **fields) -> dict:
    """The data section (``DataSection``'s fields) the dataset is read with: 512-bp windows unless told."""
    return {"prepared": prepared, "window_bp": W, **fields}


def collect(ds) -> dict[str, np.ndarray]:
    parts = list(ds.iter_batches(batch_size=4096, batch_format="numpy"))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}


@pytest.fixture(scope="module")
def ecoli_prepared(ray_local, s3, ecoli, lambda_phage, tmp_path_factory):
    """E. coli + lambda prepared local->local and S3->S3."""
    genomes = s3.bucket("genomes")
    shutil.copy(ecoli, genomes / ecoli.name)
    shutil.copy(lambda_phage, genomes / lambda_phage.name)
    s3.bucket("prepared")
    local_out = tmp_path_factory.mktemp("prepared") / "ecoli"
    m_local = prepare([str(ecoli), str(lambda_phage)], str(local_out), show_progress=False)
    m_s3 = prepare(["s3://genomes/"], "s3://prepared/ecoli", show_progress=False)
    return {"local": str(local_out), "s3": "s3://prepared/ecoli", "m_local": m_local, "m_s3": m_s3}


def test_manifest_describes_sources_records_and_split(ecoli_prepared, ecoli):
    m = ecoli_prepared["m_local"]
    assert [r["length"] for r in m["records"]] == [4_938_920, 48_502]
    assert m["totals"]["bases"] == 4_938_920 + 48_502
    assert m["sources"][0]["uri"].endswith("ecoli_536.fna.gz") and len(m["sources"][0]["sha256"]) == 64
    import hashlib
    assert m["sources"][0]["sha256"] == hashlib.sha256(ecoli.read_bytes()).hexdigest()
    assert 0.008 < m["totals"]["validation_fraction"] < 0.012
    assert len(m["validation"]) >= 10  # spread, not one block
    assert {v["record"] for v in m["validation"]} <= {0, 1}
    # shard bytes are the genome: same records as reading the FASTA directly
    shard = ecoli_prepared["local"] + "/" + m["records"][0]["shard"]
    stored = np.fromfile(shard, dtype=np.uint8)[: m["records"][0]["length"]]
    _, seq = next(read_fasta(ecoli))
    assert (stored == np.frombuffer(seq, dtype=np.uint8)).all()


def test_s3_and_local_preparations_give_the_same_windows(ecoli_prepared):
    m_local, m_s3 = ecoli_prepared["m_local"], ecoli_prepared["m_s3"]
    assert [s["sha256"] for s in m_local["shards"]] == [s["sha256"] for s in m_s3["shards"]]
    assert m_local["validation"] == m_s3["validation"]
    for split, epoch in [("train", 0), ("train", 3), ("validation", 0)]:
        a = collect(pretraining_dataset(section(ecoli_prepared["local"]), split=split, epoch=epoch))
        b = collect(pretraining_dataset(section(ecoli_prepared["s3"]), split=split, epoch=epoch))
        assert a["input_ids"].shape[0] > 0
        for key in a:
            assert (a[key] == b[key]).all(), (split, epoch, key)


def test_windows_are_the_genome_and_validation_never_overlaps_training(ecoli_prepared, ecoli, lambda_phage):
    genome = np.concatenate([np.frombuffer(s, dtype=np.uint8) & 7 for p in (ecoli, lambda_phage) for _, s in read_fasta(p)])
    tok = KmerTokenizer(6)
    train = collect(pretraining_dataset(section(ecoli_prepared["local"]), epoch=1))
    val = collect(pretraining_dataset(section(ecoli_prepared["local"]), split="validation"))
    assert train["input_ids"].shape[1] == tok.num_tokens(W) == 509
    # every window is the genome slice at its coordinate, reverse-complemented when flagged
    for rows in (train, val):
        codes = genome[rows["coord"][:, None] + np.arange(W)]
        codes[rows["rc"]] = COMPLEMENT_CODE[codes[rows["rc"], ::-1]]
        assert (tok.encode_windows(codes) == rows["input_ids"]).all()
    # no validation window overlaps any training window (nor any window of another epoch)
    v = np.sort(val["coord"])
    for epoch in (0, 1, 2):
        t = train["coord"] if epoch == 1 else collect(pretraining_dataset(section(ecoli_prepared["local"]), epoch=epoch))["coord"]
        i = np.searchsorted(v, t)
        left = np.abs(t - v[np.maximum(i - 1, 0)]) < W
        right = np.abs(v[np.minimum(i, len(v) - 1)] - t) < W
        assert not (left | right).any()
    # windows stay inside records (lambda starts at 4,938,920)
    for rows in (train, val):
        ends = rows["coord"] + W
        assert not ((rows["coord"] < 4_938_920) & (ends > 4_938_920)).any()
    assert not val["rc"].any() and abs(train["rc"].mean() - 0.5) < 0.05


def test_determinism_and_new_cuts_each_epoch(ecoli_prepared):
    path = ecoli_prepared["local"]
    a = collect(pretraining_dataset(section(path), epoch=2, seed=5))
    b = collect(pretraining_dataset(section(path), epoch=2, seed=5))
    c = collect(pretraining_dataset(section(path), epoch=3, seed=5))
    assert all((a[k] == b[k]).all() for k in a)
    assert (a["sample"] == np.arange(len(a["sample"]))).all()
    assert len(set(a["coord"] % W)) > 1  # cuts move per interval...
    assert not np.array_equal(np.sort(a["coord"]), np.sort(c["coord"]))  # ...and per epoch
    v1 = collect(pretraining_dataset(section(path), split="validation", epoch=0, seed=0))
    v2 = collect(pretraining_dataset(section(path), split="validation", epoch=7, seed=9))
    assert all((v1[k] == v2[k]).all() for k in v1)  # validation is fixed
    # the in-process reader that evaluation and analysis use gives the same windows, in order, and
    # a limit takes evenly spaced ones among them
    n = len(v1["input_ids"])
    assert (validation_windows(section(path), limit=10**9) == v1["input_ids"]).all()
    pick = np.unique(np.linspace(0, n - 1, min(300, n)).round().astype(int))
    assert (validation_windows(section(path), limit=300) == v1["input_ids"][pick]).all()
    assert build_plan(path, "train", W, seed=5, epoch=2).num_samples == len(a["sample"])  # what start_sample counts


def test_mid_epoch_resume_gives_the_batches_an_uninterrupted_run_sees(ecoli_prepared):
    path, batch = ecoli_prepared["s3"], 64
    full = [b for b in pretraining_dataset(section(path), epoch=4).iter_torch_batches(batch_size=batch)]
    taken = 37
    resumed = [b for b in pretraining_dataset(section(path), epoch=4, start_sample=taken * batch)
               .iter_torch_batches(batch_size=batch)]
    assert len(resumed) == len(full) - taken
    for x, y in zip(full[taken : taken + 10], resumed[:10]):
        for key in ("input_ids", "soft_mask", "sample", "coord", "rc"):
            assert (x[key] == y[key]).all()
    assert int(resumed[0]["sample"][0]) == taken * batch


def test_consumers_get_disjoint_deterministic_parts(ecoli_prepared):
    path = ecoli_prepared["local"]
    whole = collect(pretraining_dataset(section(path), epoch=1))
    parts = [collect(pretraining_dataset(section(path), epoch=1, num_shards=2, shard_index=i)) for i in range(2)]
    coords = [set(p["coord"].tolist()) for p in parts]
    assert not coords[0] & coords[1]
    assert coords[0] | coords[1] == set(whole["coord"].tolist())


def test_n_filter_soft_mask_and_iupac(ray_local, tmp_path):
    rng = np.random.default_rng(0)
    seq = list(random_dna(40_000, rng))
    seq[5000:5400] = "N" * 400  # windows covering >10% of this are dropped
    seq[9000:9010] = "RYKMSWBDHV"  # IUPAC codes are valid input, tokenized as [UNK]
    lower = slice(20_000, 21_000)
    seq[lower] = [c.lower() for c in seq[lower]]
    src = write_fasta(tmp_path / "g.fa", {"chrA": "".join(seq)}, crlf=True)
    m = prepare([str(src)], str(tmp_path / "out"), val_fraction=0.0, show_progress=False)
    assert m["records"][0]["n_fraction"] == pytest.approx(410 / 40_000)
    assert m["records"][0]["soft_fraction"] == pytest.approx(1000 / 40_000)
    rows = collect(pretraining_dataset(section(str(tmp_path / "out"), rc_prob=0.5), epoch=0))
    codes = codes_from_bytes("".join(seq).encode())
    n_per_window = (codes[rows["coord"][:, None] + np.arange(W)] == 4).sum(1)
    assert (n_per_window <= 0.1 * W).all()
    assert rows["input_ids"].shape[0] < (40_000 // W)  # some windows were dropped
    # soft mask: exactly the tokens whose 6-mer holds a lowercase base, in the window's orientation
    for i in range(len(rows["coord"])):
        c = rows["coord"][i]
        lowbits = np.array([1 if ch.islower() else 0 for ch in seq[c : c + W]], dtype=np.int32)
        if rows["rc"][i]:
            lowbits = lowbits[::-1]
        expected = np.array([lowbits[j : j + 6].any() for j in range(W - 5)], dtype=np.uint8)
        assert (rows["soft_mask"][i, 1:-1] == expected).all() and rows["soft_mask"][i, 0] == 0
    assert rows["soft_mask"].any()


def test_hundreds_of_tiny_records_and_one_long_record(ray_local, tmp_path):
    rng = np.random.default_rng(1)
    tiny = {f"contig{i}": random_dna(int(rng.integers(300, 1500)), rng) for i in range(400)}
    write_fasta(tmp_path / "tiny.fa.gz", tiny, gz=True)
    write_fasta(tmp_path / "long.fasta", {"chrLong": random_dna(300_000, rng)}, width=10_000_000)  # one line
    m = prepare([str(tmp_path / "*.fa*")], str(tmp_path / "out"), min_length=400, val_fraction=0.02,
                show_progress=False)
    expected_tiny = sum(1 for s in tiny.values() if len(s) >= 400)
    assert m["totals"]["records"] == expected_tiny + 1
    assert m["totals"]["skipped_records"] == 400 - expected_tiny
    train = collect(pretraining_dataset(section(str(tmp_path / "out"), window_bp=256)))
    val = collect(pretraining_dataset(section(str(tmp_path / "out"), window_bp=256), split="validation"))
    assert len(train["coord"]) > 1000 and len(val["coord"]) > 0
    assert m["totals"]["validation_fraction"] > 0.01


# ---- bad input: one clear line, and no manifest -----------------------------------------------
def _bad_input_cases(tmp_path, s3):
    rng = np.random.default_rng(2)
    good = write_fasta(tmp_path / "good.fa", {"ok": random_dna(5000, rng)})
    (tmp_path / "empty.fa").write_bytes(b"")
    (tmp_path / "noheader.fa").write_text("ACGTACGT\nACGT\n")
    (tmp_path / "protein.fa").write_text(">p1\nMKVLAAGIVALLLAAGCSSEQ\n")
    (tmp_path / "binary.fa").write_bytes(b">x\nACGT\x00\x01\x02\xff\xfe\n")
    full = gzip.compress((">t\n" + random_dna(50_000, rng) + "\n").encode())
    (tmp_path / "trunc.fa.gz").write_bytes(full[: len(full) // 2])
    write_fasta(tmp_path / "dup.fa", {"ok": random_dna(100, rng)})
    return [
        ([tmp_path / "empty.fa"], None, "empty.fa: empty file"),
        ([tmp_path / "noheader.fa"], None, "noheader.fa: line 1: not FASTA: no '>' header"),
        ([tmp_path / "protein.fa"], None, "protein.fa: line 2: 'L' is not a nucleotide code"),
        ([tmp_path / "binary.fa"], None, "binary.fa: line 2: binary content"),
        ([tmp_path / "trunc.fa.gz"], None, "trunc.fa.gz: truncated or corrupt gzip"),
        ([good, tmp_path / "dup.fa"], None, "record 'ok' is also in"),
        ([tmp_path / "missing.fa"], None, "missing.fa: no such file"),
        (["s3://genomes/missing.fa"], None, "s3://genomes/missing.fa: no such file or object"),
        (["s3://genomes/"], s3.options(secret="not-the-secret"), "access denied"),
        (["s3://genomes/"], {"endpoint_url": f"http://127.0.0.1:{s3.port + 1}"}, "cannot reach the storage endpoint"),
    ]


def test_bad_inputs_fail_clearly_and_leave_no_manifest(ray_local, s3, tmp_path, lambda_phage):
    genomes = s3.bucket("genomes")
    if not (genomes / lambda_phage.name).exists():
        shutil.copy(lambda_phage, genomes / lambda_phage.name)
    for i, (srcs, opts, message) in enumerate(_bad_input_cases(tmp_path, s3)):
        out = tmp_path / f"out{i}"
        with pytest.raises(UserError) as err:
            prepare([str(s) for s in srcs], str(out), storage_options=opts, show_progress=False)
        assert message in str(err.value) and "\n" not in str(err.value), str(err.value)
        assert not (out / MANIFEST).exists()
        assert not (out / "shards").exists() or not any((out / "shards").iterdir())


def test_rerun_is_safe_and_failed_rerun_keeps_the_old_manifest(ray_local, tmp_path):
    rng = np.random.default_rng(3)
    a = write_fasta(tmp_path / "a.fa", {"a": random_dna(20_000, rng)})
    out = tmp_path / "out"
    m1 = prepare([str(a)], str(out), show_progress=False)
    m2 = prepare([str(a)], str(out), show_progress=False)
    assert m1["run"] == m2["run"] and m1["shards"] == m2["shards"]
    write_fasta(tmp_path / "b.fa", {"b": random_dna(30_000, rng)})
    m3 = prepare([str(tmp_path / "b.fa")], str(out), show_progress=False)
    assert m3["run"] != m1["run"]
    assert [p.name for p in (out / "shards").iterdir()] == [m3["run"]]  # the old run is gone
    (tmp_path / "bad.fa").write_text(">x\nNOT DNA AT ALL\n")
    with pytest.raises(UserError):
        prepare([str(tmp_path / "bad.fa")], str(out), show_progress=False)
    assert json.loads((out / MANIFEST).read_text())["run"] == m3["run"]
    assert len(collect(pretraining_dataset(section(str(out), window_bp=1000)))["coord"]) > 0


def test_cli_prepare_reports_and_fails_in_one_line(tmp_path, lambda_phage):
    # Each task also asks for a custom resource: here one every Ray head offers (a KubeRay cluster's
    # CPU nodes offer randommask_cpu_node, which its prepare job asks for).
    ok = run_cli("data", "prepare", lambda_phage, "--out", tmp_path / "ok", "--no-progress",
                 "--resources", '{"node:__internal_head__": 0.01}')
    assert ok.returncode == 0, ok.stderr
    assert "prepared 1 records, 48,502 bp" in ok.stdout
    wrong = run_cli("data", "prepare", lambda_phage, "--out", tmp_path / "w", "--resources", '{"CPU": 2}')
    assert wrong.returncode == 2 and not (tmp_path / "w").exists()  # refused before Ray starts: one line
    assert wrong.stderr.strip().splitlines() == ["randommask: error: --resources '{\"CPU\": 2}': CPU, GPU and "
                                                 "memory are Ray's own; name custom resources only"]
    (tmp_path / "p.fa").write_text(">p\nMEEPMEEP\n")
    bad = run_cli("data", "prepare", tmp_path / "p.fa", "--out", tmp_path / "bad", "--no-progress")
    assert bad.returncode == 2
    errors = [line for line in bad.stderr.splitlines() if line.startswith("randommask: error:")]
    assert errors == [f"randommask: error: {tmp_path / 'p.fa'}: line 2: 'E' is not a nucleotide code "
                      "(protein or other non-DNA FASTA?)"]
    assert "Traceback" not in bad.stderr and not (tmp_path / "bad" / MANIFEST).exists()
    # Checked in the driver from the file's first bytes: Ray never starts for a wrong input.
    assert "Ray" not in bad.stderr, bad.stderr
    (tmp_path / "notes.txt").write_text("meeting notes\nnot a genome\n")
    plain = run_cli("data", "prepare", tmp_path / "notes.txt", "--out", tmp_path / "bad")
    assert plain.returncode == 2 and "Ray" not in plain.stderr, plain.stderr
    assert plain.stderr.strip().splitlines()[-1] == (f"randommask: error: {tmp_path / 'notes.txt'}: line 1: not FASTA: "
                                                     "no '>' header before the sequence")
    # Output to a file or pipe: no progress bar fragments (carriage returns), progress or not.
    assert "\r" not in ok.stderr + plain.stderr


def test_bad_dataset_arguments(ecoli_prepared, tmp_path):
    with pytest.raises(UserError, match="no manifest.json"):
        pretraining_dataset(section(str(tmp_path / "nothing")))
    with pytest.raises(UserError, match="split"):
        build_plan(ecoli_prepared["local"], split="test")
    with pytest.raises(UserError, match="start_sample"):
        pretraining_dataset(section(ecoli_prepared["local"]), start_sample=10**9)
    with pytest.raises(UserError, match="no validation window"):
        pretraining_dataset(section(ecoli_prepared["local"], window_bp=100_000), split="validation")
