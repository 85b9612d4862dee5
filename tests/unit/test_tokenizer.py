import itertools
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from randommask import KmerTokenizer
from randommask.data.tokenizer import (
    CLS,
    PAD,
    SEP,
    UNK,
    codes_from_bytes,
    kmer_ids_from_codes,
    reverse_complement_codes,
)

DNA = "ACGTacgtNnRYKMSWBDHV-*"


def reference_encode(seq: str, k: int, stride: int) -> list[int]:
    """A separate, straightforward implementation: a dict lookup per k-mer."""
    vocab = {"".join(p): i + 5 for i, p in enumerate(itertools.product("ATCG", repeat=k))}
    ids = [vocab.get(seq[i : i + k].upper(), UNK) for i in range(0, len(seq) - k + 1, stride)]
    return [CLS] + ids + [SEP]


def test_vocab_follows_dnabert_order():
    tok = KmerTokenizer(3)
    vocab = tok.vocab
    assert vocab[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert vocab[5:9] == ["AAA", "AAT", "AAC", "AAG"]
    assert vocab[-1] == "GGG"
    for k in range(1, 9):
        assert KmerTokenizer(k).vocab_size == 4**k + 5
    assert KmerTokenizer(6).vocab_size == 4101  # DNABERT-6


@settings(max_examples=300, deadline=None)
@given(seq=st.text(alphabet=DNA, max_size=60), k=st.integers(1, 8), data=st.data())
def test_encode_matches_reference(seq, k, data):
    stride = data.draw(st.sampled_from([1, k, data.draw(st.integers(1, 10))]))
    assert KmerTokenizer(k, stride).encode(seq) == reference_encode(seq, k, stride)


@settings(max_examples=150, deadline=None)
@given(seqs=st.lists(st.text(alphabet=DNA, max_size=40), max_size=8), k=st.integers(1, 8),
       stride=st.integers(1, 9), max_length=st.one_of(st.none(), st.integers(2, 40)))
def test_encode_batch_pads_and_truncates(seqs, k, stride, max_length):
    tok = KmerTokenizer(k, stride)
    out = tok.encode_batch(seqs, max_length=max_length)
    ids, attn = out["input_ids"], out["attention_mask"]
    rows = []
    for s in seqs:
        r = reference_encode(s, k, stride)
        if max_length is not None and len(r) > max_length:
            r = r[: max_length - 1] + [SEP]
        rows.append(r)
    width = max_length if max_length is not None else max([len(r) for r in rows], default=2)
    assert ids.shape == attn.shape == (len(seqs), width)
    for i, r in enumerate(rows):
        assert ids[i].tolist() == r + [PAD] * (width - len(r))
        assert attn[i].tolist() == [1] * len(r) + [0] * (width - len(r))


def test_equal_length_windows_fast_path_matches_ragged():
    rng = np.random.default_rng(0)
    seqs = ["".join(rng.choice(list("ACGTN"), 50)) for _ in range(20)]
    tok = KmerTokenizer(6)
    batch = tok.encode_batch(seqs)["input_ids"]
    ragged = tok.encode_batch(seqs + ["ACGTACGT"])["input_ids"][:20]
    assert (batch == ragged).all()
    codes = codes_from_bytes("".join(seqs).encode()).reshape(20, 50)
    assert (tok.encode_windows(codes) == batch).all()


def test_short_lowercase_and_unknown():
    tok = KmerTokenizer(6)
    assert tok.encode("ACGTA") == [CLS, SEP]
    assert tok.encode("") == [CLS, SEP]
    assert tok.encode("acgtacgt") == tok.encode("ACGTACGT")
    ids = tok.encode("AAAAAANAAAAAA")
    assert ids[1] == 5 and ids[-2] == 5  # AAAAAA
    assert ids[2:8] == [UNK] * 6  # every 6-mer touching the N
    assert tok.encode("AAAAAR") == [CLS, UNK, SEP]  # IUPAC code


def test_non_overlapping_stride():
    tok = KmerTokenizer(3, stride=3)
    assert tok.decode_kmers(tok.encode("ACGTTTGGA")[1:-1]) == ["ACG", "TTT", "GGA"]
    assert tok.num_tokens(10) == 5  # 3 k-mers + CLS + SEP, trailing base dropped


@pytest.mark.parametrize("kwargs, match", [
    (dict(k=0), "k must be"), (dict(k=9), "k must be"), (dict(k="6"), "k must be"),
    (dict(k=6, stride=0), "stride"), (dict(k=6, stride=1.5), "stride"),
])
def test_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        KmerTokenizer(**kwargs)


def test_bad_inputs():
    tok = KmerTokenizer(6)
    with pytest.raises(ValueError, match="str"):
        tok.encode(b"ACGTAC")
    with pytest.raises(ValueError, match="list of str"):
        tok.encode_batch("ACGTACGT")
    with pytest.raises(ValueError, match="item 1"):
        tok.encode_batch(["ACGTAC", 7])
    with pytest.raises(ValueError, match="max_length"):
        tok.encode_batch(["ACGTAC"], max_length=1)


def test_reverse_complement():
    codes = codes_from_bytes(b"AACGTN")
    rc = reverse_complement_codes(codes)
    assert (rc == codes_from_bytes(b"NACGTT")).all()


@pytest.mark.parametrize("k, stride", [(3, 1), (6, 1), (6, 6), (8, 1)])
def test_save_and_load_round_trip(tmp_path, k, stride):
    tok = KmerTokenizer(k, stride)
    tok.save_pretrained(tmp_path)
    assert KmerTokenizer.from_pretrained(tmp_path) == tok
    assert (tmp_path / "vocab.txt").read_text().split("\n")[:-1] == tok.vocab
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["tokenizer_class"] == "BertTokenizer"


@settings(max_examples=60, deadline=None)
@given(seq=st.text(alphabet="ACGTN", min_size=0, max_size=40))
def test_plain_transformers_autotokenizer_gives_same_ids(tmp_path_factory, seq):
    from transformers import AutoTokenizer

    d = tmp_path_factory.mktemp("tok")
    tok = KmerTokenizer(6)
    tok.save_pretrained(d)
    hf = AutoTokenizer.from_pretrained(d)  # no trust_remote_code
    kmers = " ".join(seq[i : i + 6] for i in range(len(seq) - 5))
    assert hf(kmers)["input_ids"] == tok.encode(seq)


def test_dnabert_style_directory_infers_k(tmp_path):
    # DNABERT's released checkpoints carry only vocab.txt (and a BERT config): k comes from its size.
    (tmp_path / "vocab.txt").write_text("\n".join(KmerTokenizer(5).vocab) + "\n")
    assert KmerTokenizer.from_pretrained(tmp_path).k == 5
    (tmp_path / "vocab.txt").write_text("\n".join(KmerTokenizer(5).vocab[::-1]) + "\n")
    with pytest.raises(ValueError, match="token order"):
        KmerTokenizer.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="no vocab.txt"):
        KmerTokenizer.from_pretrained(tmp_path / "missing")


def test_kmer_ids_on_2d_codes_match_rows():
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 5, size=(7, 33)).astype(np.uint8)
    for k in (1, 2, 3, 5, 6, 7, 8):
        full = kmer_ids_from_codes(codes, k)
        for r in range(7):
            assert (full[r] == kmer_ids_from_codes(codes[r], k)).all()
