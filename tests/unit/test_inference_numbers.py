"""The numbers users read from ``score-variants``, ``zeroshot`` and ``embed``, each against a value
computed here without the code under test: a plain implementation with strings, index lists and a
direct ``transformers`` forward of one sequence at a time. No Ray: the pipelines' task and actor
functions are called on a batch directly (the Ray pipelines are in tests/integration/test_inference.py).

The model is ``sharp_checkpoint`` (conftest): its covering tokens and its two strands disagree, so
a wrong combination rule, a wrong set of masked tokens or one strand alone gives another number."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import random_dna, write_fasta
from randommask.data.tokenizer import CLS, MASK, SEP, kmer_vocab
from randommask.inference.alleles import allele
from randommask.inference.variant_inputs import allele_columns

pytestmark = pytest.mark.usefixtures("own_cache")
K = 6
VOCAB = {t: i for i, t in enumerate(kmer_vocab(K))}
COMP = {"A": "T", "C": "G", "G": "C", "T": "A"}
W = 31  # variant windows, in bases (odd: centred on the base)


def rc(seq: str) -> str:
    return "".join(COMP[b] for b in reversed(seq.upper()))


def soft_mask(seq: str, spans: list[tuple[int, int]]) -> str:
    """``seq`` with the bases of ``spans`` in lower case, as soft-masked references (hg38) have repeats."""
    chars = list(seq)
    for a, b in spans:
        chars[a:b] = seq[a:b].lower()
    return "".join(chars)


# ---- the plain implementation ---------------------------------------------------------------------
def plain_one_strand(model, window: str, q: int, k: int = K) -> dict[str, float]:
    """log P(b) for the base at ``window[q]`` by the documented rule (docs/inference.md): every k-mer
    token containing base q set to [MASK]; at each, the log-probability of the k-mer with b at q;
    their mean over those tokens; renormalised over A, C, G, T."""
    window, vocab = window.upper(), {t: i for i, t in enumerate(kmer_vocab(k))}
    starts = list(range(len(window) - k + 1))
    cover = [j for j, s in enumerate(starts) if s <= q < s + k]
    ids = [CLS] + [vocab[window[s : s + k]] for s in starts] + [SEP]
    for j in cover:
        ids[1 + j] = MASK
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), -1)
    score = {}
    for b in "ACGT":
        edited = window[:q] + b + window[q + 1 :]
        score[b] = sum(float(logp[1 + j, vocab[edited[starts[j] : starts[j] + k]]]) for j in cover) / len(cover)
    z = math.log(sum(math.exp(v) for v in score.values()))
    return {b: v - z for b, v in score.items()}


def plain_log_p(model, window: str, q: int, strands: str = "both", k: int = K) -> dict[str, float]:
    """Both strands: the forward strand's log P(b) and the reverse complement's log P(complement of b)
    averaged, renormalised (overlapping k-mers, stride 1)."""
    fwd = plain_one_strand(model, window, q, k)
    if strands == "forward":
        return fwd
    rev = plain_one_strand(model, rc(window), len(window) - 1 - q, k)
    score = {b: (fwd[b] + rev[COMP[b]]) / 2 for b in "ACGT"}
    z = math.log(sum(math.exp(v) for v in score.values()))
    return {b: v - z for b, v in score.items()}


def plain_mlm(checkpoint):
    from transformers import BertForMaskedLM

    return BertForMaskedLM.from_pretrained(str(checkpoint)).eval()


# ---- which tokens a scored base masks -------------------------------------------------------------
@pytest.mark.parametrize("k, stride, width, q", [(6, 1, 15, 7), (6, 1, 15, 0), (6, 1, 15, 14), (6, 1, 15, 3),
                                                 (3, 3, 15, 7), (4, 2, 13, 5), (4, 2, 13, 4)])
def test_a_scored_base_masks_exactly_the_tokens_that_contain_it(k, stride, width, q):
    from randommask.data.tokenizer import KmerTokenizer
    from randommask.inference.centre import masked_windows

    window = random_dna(width, q + 10 * k)
    vocab = {t: i for i, t in enumerate(kmer_vocab(k))}
    starts = list(range(0, width - k + 1, stride))
    cover = [j for j, s in enumerate(starts) if s <= q <= s + k - 1]
    codes = np.array([["ATCG".index(b) for b in window]], np.uint8)
    ids, cands = masked_windows(codes, q, KmerTokenizer(k, stride))
    want = [CLS] + [MASK if j in cover else vocab[window[s : s + k]] for j, s in enumerate(starts)] + [SEP]
    assert ids[0].tolist() == want
    for c, b in enumerate("ATCG"):  # candidate c is the k-mer with base c (tokenizer order) at q
        edited = window[:q] + b + window[q + 1 :]
        assert cands[0, :, c].tolist() == [vocab[edited[starts[j] : starts[j] + k]] for j in cover]
    if stride == 1 and k - 1 <= q <= width - k:  # overlapping k-mers, q off the ends: no other base hidden
        seen = {s + i for j, s in enumerate(starts) if j not in cover for i in range(k)}
        assert seen == set(range(width)) - {q}


# ---- the combination rules, by hand ---------------------------------------------------------------
def test_covering_tokens_combine_as_a_renormalised_geometric_mean_and_strands_as_its_mean():
    from randommask.inference.centre import base_log_probs, combine_strands

    # two covering tokens that disagree: P(A, T, C, G) = (.5, .2, .2, .1) and (.1, .6, .2, .1)
    p = np.exp(base_log_probs(np.log([[0.5, 0.2, 0.2, 0.1], [0.1, 0.6, 0.2, 0.1]])))
    geo = np.array([math.sqrt(0.05), math.sqrt(0.12), math.sqrt(0.04), math.sqrt(0.01)])
    np.testing.assert_allclose(p, geo / geo.sum(), rtol=1e-12)  # (.2236, .3464, .2, .1) / .8700
    assert p[1] > p[0]  # the product would also put T first; the arithmetic mean would put A level with it
    # strands that disagree: forward (.7, .1, .1, .1); reverse (.1, .2, .3, .4) over its own bases, so its
    # P(forward A) is its P(T) = .2, P(T) its P(A) = .1, P(C) its P(G) = .4, P(G) its P(C) = .3
    both = np.exp(combine_strands(np.log([0.7, 0.1, 0.1, 0.1]), np.log([0.1, 0.2, 0.3, 0.4])))
    mean = np.sqrt([0.7 * 0.2, 0.1 * 0.1, 0.1 * 0.4, 0.1 * 0.3])
    np.testing.assert_allclose(both, mean / mean.sum(), rtol=1e-12)


def test_float32_log_probabilities_are_combined_in_float64():
    """The model's log-probabilities come as float32; their mean and normalization run in float64
    (the LLRs written are float64), so the answer is the float64 one to 1e-15, not float32's 1e-7."""
    from randommask.inference.centre import base_log_probs

    cands = np.log(np.array([[0.5, 0.2, 0.2, 0.1], [0.1, 0.6, 0.2, 0.1], [0.3, 0.3, 0.3, 0.1]], np.float32))
    wide = cands.astype(np.float64)  # the same float32 values, exactly
    score = wide.mean(0)
    want = score - np.log(np.exp(score).sum())
    np.testing.assert_allclose(base_log_probs(cands), want, rtol=1e-15, atol=0)



def test_the_combination_rules_hold_row_by_row_on_a_batch_of_large_unequal_logits():
    """Four rows, each its own base with its own probabilities, their log-probabilities shifted by
    +-800 and +-50 (exp(800) overflows, exp(-800) underflows); a shift common to a row's candidates
    leaves its answer unchanged. A rule normalized along the wrong axis, or without taking each row's
    maximum out first, gives other numbers. Expected, row by row: the normalized sqrt of the product."""
    from randommask.inference.centre import base_log_probs, combine_strands

    first = np.array([[0.5, 0.2, 0.2, 0.1], [0.25, 0.25, 0.25, 0.25], [0.1, 0.1, 0.4, 0.4], [0.05, 0.15, 0.3, 0.5]])
    second = np.array([[0.1, 0.6, 0.2, 0.1], [0.7, 0.1, 0.1, 0.1], [0.3, 0.3, 0.2, 0.2], [0.6, 0.2, 0.1, 0.1]])
    want = [np.log(g / g.sum()) for g in np.sqrt(first * second)]
    shifts = np.array([(800.0, 800.0), (-800.0, -800.0), (50.0, -50.0), (0.0, 10.0)])  # (token 1, token 2) per row
    cands = np.stack([np.log(first), np.log(second)], axis=1) + shifts[:, :, None]  # (4 rows, 2 tokens, 4)
    np.testing.assert_allclose(base_log_probs(cands), want, rtol=1e-12)
    # strands: the reverse one's row read over the forward bases is its (T, A, G, C) = columns (1, 0, 3, 2)
    want = [np.log(g / g.sum()) for g in np.sqrt(first * second[:, [1, 0, 3, 2]])]
    shifts = np.array([(1600.0, 0.0), (-1600.0, 0.0), (100.0, -20.0), (0.0, 0.0)])  # (forward, reverse) per row
    got = combine_strands(np.log(first) + shifts[:, :1], np.log(second) + shifts[:, 1:])
    np.testing.assert_allclose(got, want, rtol=1e-12)

# ---- variant scores: the pipeline's task and actor against the plain implementation ------------------
@pytest.fixture(scope="module")
def genome(tmp_path_factory):
    """A contig of 300 random bases and one shorter than a window (its variants' windows are [PAD]ded in
    the batch), as plain upper-case FASTA and as a soft-masked copy (ends and middle in lower case)
    bgzipped and indexed by htslib (``bgzip``, ``samtools faidx``)."""
    import pysam

    seq = {"c1": random_dna(300, 11), "c2": random_dna(19, 12)}
    d = tmp_path_factory.mktemp("genome")
    upper = write_fasta(d / "upper.fa", seq)
    soft = write_fasta(d / "soft.fa", {"c1": soft_mask(seq["c1"], [(0, 20), (140, 160), (275, 300)]),
                                       "c2": soft_mask(seq["c2"], [(5, 12)])})
    bgz = str(soft) + ".gz"
    pysam.tabix_compress(str(soft), bgz, force=True)
    pysam.faidx(bgz)  # writes soft.fa.gz.fai and .gzi, as samtools faidx does
    return seq, {"upper": str(upper), "soft-bgzip": bgz}


# (contig, 1-based position): within 5 of an end fewer tokens cover the base
WHERE = [("c1", p) for p in (1, 2, 6, 20, 150, 151, 280, 295, 300)] + [("c2", 1), ("c2", 8), ("c2", 19)]


def score(checkpoint, fasta: str, seq: dict[str, str], strands: str) -> dict[tuple, dict]:
    from randommask.inference.variants import Scorer, windows

    alt = {"A": "G", "C": "T", "G": "A", "T": "C"}
    batch = allele_columns([allele(c, p, f"{c}:{p}", seq[c][p - 1], alt[seq[c][p - 1]]) for c, p in WHERE])
    batch = windows(batch, fasta, K, 1, W, strands)
    return {(r["chrom"], r["pos"]): r for r in Scorer(str(checkpoint), False, 1)(batch).to_pylist()}


@pytest.mark.parametrize("fasta, strands", [("upper", "both"), ("upper", "forward"), ("soft-bgzip", "both")])
def test_variant_scores_equal_a_plain_forward_on_the_window(sharp_checkpoint, genome, fasta, strands):
    seq, paths = genome
    got = score(sharp_checkpoint, paths[fasta], seq, strands)
    model = plain_mlm(sharp_checkpoint)
    for c, p in WHERE:
        # W bases centred on p, moved inside the contig; the whole contig where it is shorter
        start = max(0, min(p - 1 - W // 2, len(seq[c]) - W))
        log_p = plain_log_p(model, seq[c][start : start + W], p - 1 - start, strands)
        row = got[(c, p)]
        ref, alt = row["norm_ref"], row["norm_alt"]
        assert row["error"] == "", row
        assert row["llr"] == pytest.approx(log_p[alt] - log_p[ref], abs=1e-5), (c, p)
        assert row["p_ref"] == pytest.approx(math.exp(log_p[ref]), abs=1e-6), (c, p)
        assert row["p_alt"] == pytest.approx(math.exp(log_p[alt]), abs=1e-6), (c, p)
        assert row["entropy"] == pytest.approx(-sum(math.exp(v) * v for v in log_p.values()), abs=1e-5), (c, p)
    assert max(abs(r["llr"]) for r in got.values()) > 0.5  # the model's scores are not all near zero


def test_a_soft_masked_reference_scores_as_its_upper_case_bases(sharp_checkpoint, genome):
    seq, paths = genome
    upper, soft = score(sharp_checkpoint, paths["upper"], seq, "both"), score(sharp_checkpoint, paths["soft-bgzip"],
                                                                              seq, "both")
    assert soft == upper  # every column, every position: lower-case REF bases and flanks included


# ---- zeroshot: validation positions, training tables ---------------------------------------------
def prepared_by_hand(tmp_path, seq: str, validation: tuple[int, int]) -> str:
    """``seq`` prepared as ``data prepare`` writes it (its shard writer and manifest, without Ray), with
    ``validation`` as the one validation block."""
    from randommask.data.prepare import DEFAULT_SHARD_BYTES, prepare_file
    from randommask.data.shards import MANIFEST, build_manifest

    fasta = write_fasta(tmp_path / "train.fa", {"r0": seq})
    out = tmp_path / "prepared"
    result = prepare_file(0, str(fasta), str(out / "shards" / "run"), None, 1, DEFAULT_SHARD_BYTES)
    assert result["ok"], result
    manifest = build_manifest([], [result], [(result, r) for r in result["records"]], "run", 0.1, 0, 1, str(out),
                              None, val=[(0, *validation)])
    (out / MANIFEST).write_text(json.dumps(manifest))
    return str(out)


def test_zeroshot_scores_validation_positions_against_tables_of_the_training_bases(sharp_checkpoint, tmp_path,
                                                                                     monkeypatch):
    from randommask.data.counting import Queries
    from randommask.inference import zeroshot as zs
    from unit.test_counting import slow_log_probs

    seq = soft_mask(random_dna(1000, 21), [(620, 660), (100, 150)])
    val, half = (600, 700), 10
    prepared = prepared_by_hand(tmp_path, seq, val)
    up = seq.upper()
    want_windows = sorted(up[i : i + 2 * half + 1] for i in range(val[0], val[1] - 2 * half))
    seen = []

    def spy(checkpoint, windows, *args):
        seen.append(sorted("".join("ATCG"[c] for c in w) for w in windows))
        return model_log_p_ref(checkpoint, windows, *args)

    model_log_p_ref = zs.model_log_p_ref
    monkeypatch.setattr(zs, "model_log_p_ref", spy)
    r = zs.zeroshot(str(sharp_checkpoint), prepared, str(tmp_path / "z.json"), positions=10_000,
                    window_bp=2 * half + 1, log=lambda *_: None)
    assert seen[0] == want_windows and r["n"] == len(want_windows) == 80  # every validation window, only those
    # the model's figures, from the plain implementation at those windows
    model = plain_mlm(sharp_checkpoint)
    both = np.array([plain_log_p(model, w, half)[w[half]] for w in want_windows])
    fwd = np.array([plain_log_p(model, w, half, "forward")[w[half]] for w in want_windows])
    assert r["mean_log_p_ref"] == pytest.approx(both.mean(), abs=1e-5)
    assert r["forward_mean_log_p_ref"] == pytest.approx(fwd.mean(), abs=1e-5)
    assert r["mean_p_ref"] == pytest.approx(np.exp(both).mean(), abs=1e-5)
    assert r["sem"] == pytest.approx(both.std(ddof=1) / math.sqrt(len(both)), abs=1e-5)
    # the tables, counted (dicts of strings) on the training bases only: the two stretches around the block
    codes = lambda s: np.array(["ATCG".index(b) for b in s], np.uint8)  # noqa: E731
    windows = np.stack([codes(w) for w in want_windows])
    slow = slow_log_probs([codes(up[: val[0]]), codes(up[val[1] :])], Queries.centred(windows), tuple(range(1, 11)))
    tables = {str(m): slow[m][np.arange(len(windows)), windows[:, half]] for m in range(1, 11)}
    assert r["tables"] == pytest.approx({m: t.mean() for m, t in tables.items()}, abs=1e-5)
    best = max(tables, key=lambda m: tables[m].mean())
    assert r["best_table"] == best
    assert r["vs_best_table"] == pytest.approx((both - tables[best]).mean(), abs=1e-5)
    assert r["vs_best_table_sem"] == pytest.approx((both - tables[best]).std(ddof=1) / math.sqrt(80), abs=1e-5)
    # fewer positions than windows: a seeded draw, still from the validation block only
    zs.zeroshot(str(sharp_checkpoint), prepared, str(tmp_path / "z30.json"), positions=30, window_bp=2 * half + 1,
                log=lambda *_: None)
    assert len(seen[1]) == 30 and set(seen[1]) <= set(want_windows)


# ---- embeddings: mean and [CLS] pooling, any layer, tiles and strands ---------------------------------
# (the last case: a layer counted from the end, and 2 tiles a forward pass instead of 64, so the 20 tiles
# take 10 passes whose slices must follow one another)
@pytest.mark.parametrize("pool, layer, per_forward", [("mean", -1, 64), ("cls", -1, 64), ("mean", 1, 64), ("cls", -2, 2)])
def test_embeddings_pool_as_a_plain_forward_of_each_tile(tiny_checkpoint, genome, pool, layer, per_forward,
                                                         monkeypatch):
    from transformers import BertModel

    from randommask.inference import embed
    from randommask.inference.embed import Embedder, tokenize_regions
    from randommask.inference.regions import tiles

    monkeypatch.setattr(embed, "TILES_PER_FORWARD", per_forward)

    seq, paths = genome
    seq = seq["c1"]
    regions = [(10, 60, "+"), (100, 237, "-"), (5, 290, "+-")]  # tiles of 40 k-mers, the last ones shorter
    batch = {"chrom": np.array(["c1"] * 3, object), "start": np.array([a for a, _, _ in regions]),
             "end": np.array([b for _, b, _ in regions]), "name": np.array(["a", "b", "c"], object),
             "strands": np.array([s for _, _, s in regions], object)}
    batch = tokenize_regions(batch, paths["soft-bgzip"], K, 1, 40)
    got = Embedder(str(tiny_checkpoint), pool, layer, False, 1)(batch).to_pylist()
    model = BertModel.from_pretrained(str(tiny_checkpoint), add_pooling_layer=False).eval()

    def plain(read: str) -> np.ndarray:  # each tile alone, no padding: its k-mers' states, or its [CLS] per k-mer
        total, n = 0, 0
        for a, b in tiles(len(read), 40, K):
            ids = [CLS] + [VOCAB[read[i : i + K]] for i in range(a, b - K + 1)] + [SEP]
            with torch.no_grad():
                hidden = model(input_ids=torch.tensor([ids]), output_hidden_states=True).hidden_states[layer][0]
            kmers = len(ids) - 2
            total = total + (hidden[1:-1].sum(0) if pool == "mean" else hidden[0] * kmers).double().numpy()
            n += kmers
        return total / n

    for row, (a, b, strands) in zip(got, regions):
        reads = {"+": seq[a:b], "-": rc(seq[a:b])}
        want = np.mean([plain(reads[s]) for s in strands], axis=0)
        np.testing.assert_allclose(row["embedding"], want, atol=2e-5, err_msg=f"{row['name']} {pool} {layer}")
