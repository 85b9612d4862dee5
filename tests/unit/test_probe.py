"""`randommask probe`: windows that hold every k-mer once, pooled embeddings that match the windows'
own, a bag of k-mers that finds a motif, both probes' scores against a plain transformers forward, plain
k-mer counts and sklearn fitted here, and the command's output and bad input."""

import itertools
import json
import shutil

import numpy as np
import pytest
from tests.conftest import run_cli

from randommask.data.tokenizer import KmerTokenizer
from randommask.errors import UserError
from randommask.evaluation.probe import embed, kmer_bag, probe, windows_of

BASES = np.array(list("ACGT"))


def kmers(seq: str, k: int, stride: int) -> list[str]:
    return [seq[i : i + k] for i in range(0, len(seq) - k + 1, stride)]


@pytest.mark.parametrize("k,stride,window", [(6, 1, 24), (6, 1, 6), (3, 1, 10), (6, 2, 24), (6, 3, 13)])
def test_windows_hold_each_kmer_exactly_once(k, stride, window):
    rng = np.random.default_rng(0)
    for length in (k, k + 1, window - 1, window, window + 1, 70, 101, 300):
        seq = "".join(rng.choice(BASES, length))
        ws = windows_of(seq, window, k, stride)
        assert all(len(w) <= window for w in ws)
        assert [x for w in ws for x in kmers(w, k, stride)] == kmers(seq, k, stride), (length, ws)


def test_a_window_shorter_than_a_kmer_is_refused():
    with pytest.raises(UserError, match="--window-bp 5: shorter than one 6-mer"):
        windows_of("ACGTACGTAC", 5, 6)


def test_windowed_embedding_is_the_token_weighted_mean_of_its_windows(tiny_checkpoint):
    rng = np.random.default_rng(1)
    seqs = ["".join(rng.choice(BASES, n)) for n in (24, 20, 70, 101)]
    whole = embed(str(tiny_checkpoint), seqs)
    win = embed(str(tiny_checkpoint), seqs, window_bp=24)
    # a sequence that fits one window reads the same either way
    np.testing.assert_allclose(win[:2], whole[:2], rtol=1e-5, atol=1e-6)
    assert not np.allclose(win[2], whole[2], atol=1e-3)  # longer ones do not: the model sees short windows
    tok = KmerTokenizer.from_pretrained(str(tiny_checkpoint))
    for i in (2, 3):
        ws = windows_of(seqs[i], 24, 6)
        sizes = np.array([tok.num_tokens(len(w)) for w in ws], dtype=np.float64)
        expect = (embed(str(tiny_checkpoint), ws) * sizes[:, None]).sum(0) / sizes.sum()
        np.testing.assert_allclose(win[i], expect, rtol=1e-4, atol=1e-5)


def test_the_bag_counts_kmers():
    bag = kmer_bag(["AAAAAAAA", "ACGTACGT"], 6).toarray()
    tok = KmerTokenizer(6)
    aaaaaa = tok.encode("AAAAAA")[1]
    assert bag[0, aaaaaa] == 3 and bag[1, aaaaaa] == 0
    assert bag.sum(1).tolist() == [5, 5]  # 3 k-mers + [CLS] + [SEP]


def synthetic_gue(root, name="tf/0", n_train=400, n_test=200, motif="GATTACAGATTACA", seed=0, shuffle=False):
    """A GUE-shaped dataset: label 1 rows carry ``motif`` somewhere in 101 random bases."""
    rng = np.random.default_rng(seed)
    d = root / name
    d.mkdir(parents=True)
    for split, n in (("train", n_train), ("dev", 50), ("test", n_test)):
        rows = ["sequence,label"]
        for _ in range(n):
            seq = list(rng.choice(BASES, 101))
            label = int(rng.integers(2))
            if label:
                at = int(rng.integers(0, 101 - len(motif)))
                seq[at : at + len(motif)] = list(motif)
            rows.append(f"{''.join(seq)},{int(rng.integers(2)) if shuffle else label}")
        (d / f"{split}.csv").write_text("\n".join(rows) + "\n")
    return root


def test_the_bag_finds_a_motif_and_nothing_in_shuffled_labels(tiny_checkpoint, tmp_path):
    gue = synthetic_gue(tmp_path / "gue")
    synthetic_gue(tmp_path / "gue", "tf/2", seed=1, shuffle=True)
    r = probe(str(tiny_checkpoint), str(gue), "tf/0,tf/2", str(tmp_path / "p.json"), window_bp=0, log=lambda _: None)
    assert r["results"]["tf/0"]["kmer_bag"] > 0.8, r
    assert abs(r["results"]["tf/2"]["kmer_bag"]) < 0.25 and abs(r["results"]["tf/2"]["model"]) < 0.25, r
    assert r["window_bp"] is None and r["chance"] == 0.0
    assert json.loads((tmp_path / "p.json").read_text()) == r


def test_the_command_records_what_produced_it_and_reads_the_runs_window(tiny_checkpoint, tmp_path):
    gue = synthetic_gue(tmp_path / "gue", n_train=120, n_test=60)
    run = tmp_path / "run"
    shutil.copytree(tiny_checkpoint, run / "final")
    (run / "config.yaml").write_text("data:\n  window_bp: 24\n")  # as pretraining writes it, beside final/
    out = tmp_path / "probe.json"
    p = run_cli("probe", str(run / "final"), "--gue-dir", str(gue), "--tasks", "tf/0", "--threads", "1",
                "--out", str(out))
    assert p.returncode == 0, p.stderr[-2000:]
    assert "probe    tf/0: mcc" in p.stdout and "windows of 24 bp" in p.stdout, p.stdout
    r = json.loads(out.read_text())
    assert r["window_bp"] == 24 and r["results"]["tf/0"]["n_train"] == 120 and r["results"]["tf/0"]["n_test"] == 60
    prov = r["provenance"]
    assert prov["command"] == "probe" and len(prov["weights_sha256"]) == 64 and prov["settings"]["window_bp"] == 24


def test_all_on_a_partial_copy_names_every_dataset_it_leaves_out(tiny_checkpoint, tmp_path):
    gue = synthetic_gue(tmp_path / "gue", n_train=40, n_test=20)
    out = tmp_path / "probe.json"
    p = run_cli("probe", str(tiny_checkpoint), "--gue-dir", str(gue), "--tasks", "all", "--window-bp", "0",
                "--threads", "1", "--out", str(out))
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads(out.read_text())
    assert list(r["results"]) == ["tf/0"] and len(r["skipped"]) == 27 and "tf/3" in r["skipped"], r["skipped"]
    assert "skipping 27 dataset(s)" in p.stdout and "1 dataset(s), 27 skipped" in p.stdout, p.stdout


@pytest.mark.parametrize("args,message", [
    (["--window-bp", "4"], "--window-bp 4: shorter than one 6-mer; give at least 6"),
    (["--max-train", "0"], "--max-train must be >= 1, got 0"),
    (["--tasks", "tf/3"], "missing GUE dataset(s) tf/3"),
])
def test_bad_input_is_one_line_and_writes_nothing(tiny_checkpoint, tmp_path, args, message):
    gue = synthetic_gue(tmp_path / "gue", n_train=40, n_test=20)
    out = tmp_path / "probe.json"
    p = run_cli("probe", str(tiny_checkpoint), "--gue-dir", str(gue), "--tasks", "tf/0", *args, "--out", str(out))
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith("randommask: error: "), p.stderr
    assert message in lines[0] and not out.exists(), p.stderr


def plain_embed(model_dir, seqs: list[str], k: int = 6) -> np.ndarray:
    """Mean of the last hidden states over each sequence's tokens, with transformers alone: ids by hand
    ([CLS]=2, k-mer = 5 + its digits in base 4 with A=0 T=1 C=2 G=3, [SEP]=3, [PAD]=0)."""
    import torch
    from transformers import BertModel

    digit = {"A": 0, "T": 1, "C": 2, "G": 3}
    rows = [[2] + [5 + sum(digit[c] * 4 ** (k - 1 - j) for j, c in enumerate(s[i : i + k]))
                   for i in range(len(s) - k + 1)] + [3] for s in seqs]
    width = max(map(len, rows))
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    attn = (torch.arange(width)[None] < torch.tensor([len(r) for r in rows])[:, None]).long()
    model = BertModel.from_pretrained(model_dir, add_pooling_layer=False).eval()
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=attn).last_hidden_state.double()
    # float32, as embed returns them: sklearn fits float32 and float64 features along different paths
    return ((hidden * attn[..., None]).sum(1) / attn.sum(1, keepdim=True)).numpy().astype(np.float32)


def plain_bag(seqs: list[str], vocab: list[str], k: int = 6) -> np.ndarray:
    """Each sequence's k-mer counts (one column per k-mer of ``vocab``), and its [CLS] and [SEP]: one each."""
    col = {w: i for i, w in enumerate(vocab)}
    out = np.zeros((len(seqs), len(vocab) + 2))
    out[:, -2:] = 1
    for r, s in enumerate(seqs):
        for i in range(len(s) - k + 1):
            out[r, col[s[i : i + k]]] += 1
    return out


def sklearn_mcc(train_x, train_y, x, y) -> float:
    """The probe as its documentation defines it: standardized features, LogisticRegression, MCC of ``x``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import matthews_corrcoef
    from sklearn.preprocessing import StandardScaler

    scale = StandardScaler(with_mean=False).fit(train_x)
    clf = LogisticRegression(max_iter=2000).fit(scale.transform(train_x), train_y)
    return float(matthews_corrcoef(y, clf.predict(scale.transform(x))))


def read_csv(path) -> tuple[list[str], np.ndarray]:
    rows = [line.split(",") for line in path.read_text().splitlines()[1:]]
    return [r[0] for r in rows], np.array([int(r[1]) for r in rows])


def test_both_probes_score_the_test_rows_as_sklearn_fitted_here(tiny_checkpoint, tmp_path):
    gue = synthetic_gue(tmp_path / "gue", n_train=120, n_test=80, motif="GATTACA")
    r = probe(str(tiny_checkpoint), str(gue), "tf/0", str(tmp_path / "p.json"), window_bp=0, log=lambda _: None)
    row = r["results"]["tf/0"]
    (trs, try_), (tes, tey) = (read_csv(gue / "tf" / "0" / f"{split}.csv") for split in ("train", "test"))
    # the features, checked against plain ones (a logistic fit on near-random features moves with their
    # last float bits, so sklearn is then fitted on exactly the features the probe fits)
    vocab = ["".join(p) for p in itertools.product("ATCG", repeat=6)]
    features = {"model": (embed(str(tiny_checkpoint), trs), embed(str(tiny_checkpoint), tes)),
                "kmer_bag": (kmer_bag(trs, 6), kmer_bag(tes, 6))}
    np.testing.assert_allclose(features["model"][0], plain_embed(tiny_checkpoint, trs), rtol=0, atol=1e-5)
    tok = KmerTokenizer(6)
    columns = [tok.encode(w)[1] for w in vocab] + [2, 3]  # each k-mer's token id, then [CLS] and [SEP]
    assert np.array_equal(features["kmer_bag"][1].toarray()[:, columns], plain_bag(tes, vocab))
    for key, (train_x, test_x) in features.items():
        held_out = sklearn_mcc(train_x, try_, test_x, tey)
        assert row[key] == pytest.approx(held_out, abs=1e-5), key
        # scored on its own training rows the probe would read differently: it scores the test rows
        assert abs(sklearn_mcc(train_x, try_, train_x, try_) - held_out) > 0.05, key


def test_windows_are_cut_where_the_kmers_say_and_no_further():
    # k = 3, 5-base windows, stride 1: 3 k-mers a window, windows start every 3 bases, 5 long; by hand
    assert windows_of("ACGTACGTAC", 5, 3) == ["ACGTA", "TACGT", "GTAC"]  # the last k-mer starts at 7
    assert windows_of("ACGTACGTACG", 5, 3) == ["ACGTA", "TACGT", "GTACG"]  # at 8: no 2-base tail window
    assert windows_of("ACGTA", 5, 3) == ["ACGTA"] and windows_of("AC", 5, 3) == ["AC"]


def test_the_bag_has_one_float32_column_per_token_id_and_reads_at_the_stride():
    # ACGTAC at stride 2 holds ACG and GTA (not CGT, TAC): 2 k-mers + [CLS] + [SEP]; every id a column,
    # so a train and a test bag line up whatever k-mers each holds
    tok = KmerTokenizer(3, 2)
    bag = kmer_bag(["ACGTAC", "AAA"], 3, stride=2)
    assert bag.shape == (2, 4 + 64 + 1) and bag.dtype == np.float32  # vocab_size_for(3), written out
    dense = bag.toarray()
    assert dense[0].sum() == 4 and dense[1].sum() == 3
    acg, gta = tok.encode("ACG")[1], tok.encode("GTA")[1]
    assert dense[0, acg] == dense[0, gta] == 1 and dense[0, tok.encode("CGT")[1]] == 0


def test_linear_probe_rounds_each_datasets_metric_and_their_mean(tmp_path, monkeypatch):
    # the sweep's objective, with the embedding and the fit replaced: what it reads, which rows, which
    # metric of each dataset (tf/0: MCC, covid: macro F1), the rounding, the mean
    from randommask.evaluation import gue
    from randommask.evaluation import probe as module

    synthetic_gue(tmp_path, "tf/0", n_train=6, n_test=5, seed=1)
    synthetic_gue(tmp_path, "virus/covid", n_train=6, n_test=5, seed=2)
    opts = {"anon": True}
    seen = {"checkpoint": [], "read": [], "embed": []}
    read = gue.read_split

    def node_checkpoint(uri, storage_options):
        seen["checkpoint"].append((uri, storage_options))
        return "/local/copy"

    def read_split(gue_dir, name, split, storage_options=None):
        seen["read"].append((name, split, storage_options))
        return read(gue_dir, name, split)

    def embed(model_dir, seqs):
        seen["embed"].append((model_dir, seqs))
        return np.zeros((len(seqs), 1))

    got = iter([{"mcc": 0.1234567, "f1_macro": 0.9, "accuracy": 0.8}, {"mcc": 0.5, "f1_macro": 0.7654321, "accuracy": 0.6}])
    monkeypatch.setattr(module, "node_checkpoint", node_checkpoint)
    monkeypatch.setattr(gue, "read_split", read_split)
    monkeypatch.setattr(module, "embed", embed)
    monkeypatch.setattr(module, "fit_score", lambda *a: next(got))
    scores = module.linear_probe("s3://b/final", str(tmp_path), ["tf/0", "virus/covid"], max_train=3, max_eval=2,
                                 storage_options=opts)
    # (0.12346 + 0.76543) / 2 = 0.444445, to 5 decimals
    assert scores == {"probe_tf/0": 0.12346, "probe_virus/covid": 0.76543, "probe_score": 0.44445}
    assert seen["checkpoint"] == [("s3://b/final", opts)]
    assert [(n, s, o is opts) for n, s, o in seen["read"]] == [
        ("tf/0", "train", True), ("tf/0", "test", True), ("virus/covid", "train", True), ("virus/covid", "test", True)]
    # the first 3 train and 2 test rows the seed-0 draw keeps (the same rows for every model)
    tr, te = (gue.subsample(*read(str(tmp_path), "tf/0", s), n, seed=0)[0] for s, n in (("train", 3), ("test", 2)))
    assert [(m, len(s)) for m, s in seen["embed"]] == [("/local/copy", 3), ("/local/copy", 2)] * 2
    assert seen["embed"][0][1] == tr and seen["embed"][1][1] == te
    assert len(set(tr)) == 3 and set(tr) < set(read(str(tmp_path), "tf/0", "train")[0])
