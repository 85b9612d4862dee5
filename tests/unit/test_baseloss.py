"""The per-base loss (training.baseloss) and its references (floors' base tables): exact against a
brute force over k-mers, chance for a model that knows nothing, about the tables for a model that
knows only k-mer frequencies, and the tables exact on genomes of known entropy. The per-base loss of
real runs, and a frequency model on E. coli against its tables, are in tests/integration."""

import itertools
import math

import numpy as np
import pytest
import torch

from randommask.data.floors import base_table_loss, kmer_counts
from randommask.data.tokenizer import MASK, NUM_SPECIAL, kmer_ids_from_codes
from randommask.training.baseloss import all_mask, offset_log_probs, per_base_sums
from randommask.training.masking import make_masker
from randommask.training.model import build_mlm, selected_logits
from unit.test_floors import markov_entropies, markov_genome

LN4 = math.log(4)


def windows(codes: np.ndarray, n: int, bp: int, seed: int = 0) -> torch.Tensor:
    """``n`` random windows of ``bp`` bases as [CLS] k-mers [SEP] ids (k = 6 unless the caller re-encodes)."""
    starts = np.random.default_rng(seed).integers(0, len(codes) - bp, n)
    return torch.from_numpy(np.stack([codes[s : s + bp] for s in starts]))


def encode(codes: torch.Tensor, k: int) -> torch.Tensor:
    ids = torch.from_numpy(kmer_ids_from_codes(codes.numpy(), k).astype(np.int64))
    return torch.cat([torch.full((len(ids), 1), 2), ids, torch.full((len(ids), 1), 3)], dim=1)


def masked(ids: torch.Tensor, k: int, span: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    return make_masker("span", k, span=span)(ids, 0, torch.Generator().manual_seed(seed))


def brute_force(logits: torch.Tensor, inputs: torch.Tensor, labels: torch.Tensor, k: int) -> tuple[float, int]:
    """The per-base loss by its definition, with loops: for each hidden base, each covering [MASK]
    token's k-mers consistent with the visible bases, marginalized to the base; geometric mean."""
    truth = torch.where(labels == -100, inputs, labels)
    kmers = ["".join(p) for p in itertools.product("0123", repeat=k)]
    total, bases, row_of = 0.0, 0, 0
    positions = (labels != -100).nonzero().tolist()
    for b in range(len(inputs)):
        n_bases = inputs.shape[1] - 3 + k
        seq = [None] * n_bases
        shown = [False] * n_bases
        for t in range(1, inputs.shape[1] - 1):
            kmer = kmers[int(truth[b, t]) - NUM_SPECIAL]
            for i in range(k):
                seq[t - 1 + i] = int(kmer[i])
                shown[t - 1 + i] |= bool(labels[b, t] == -100)
        scores = {}
        for row, (bb, t) in enumerate(positions):
            if bb != b:
                continue
            logp = torch.log_softmax(logits[row, NUM_SPECIAL:].double(), -1)
            consistent = [j for j, km in enumerate(kmers)
                          if all(int(km[i]) == seq[t - 1 + i] for i in range(k) if shown[t - 1 + i])]
            for i in range(k):
                p = t - 1 + i
                if shown[p]:
                    continue
                z = torch.logsumexp(logp[consistent], 0)
                marg = [torch.logsumexp(logp[[j for j in consistent if kmers[j][i] == str(c)]], 0) - z for c in range(4)]
                scores.setdefault(p, []).append(torch.stack(marg))
        for p, parts in scores.items():
            combined = torch.log_softmax(torch.stack(parts).mean(0), -1)
            total -= float(combined[seq[p]])
            bases += 1
        row_of += 1
    return total, bases


@pytest.mark.parametrize("span", [3, 5])
def test_per_base_loss_equals_its_definition(span):
    k = 3
    codes = torch.from_numpy(np.random.default_rng(0).integers(0, 4, 400).astype(np.uint8))
    inputs, labels = masked(encode(windows(codes.numpy(), 6, 14), k), k, span)
    logits = torch.randn(int((labels != -100).sum()), 4**k + NUM_SPECIAL, generator=torch.Generator().manual_seed(2))
    got = per_base_sums(logits, inputs, labels, k)
    want = brute_force(logits, inputs, labels, k)
    assert got[1] == want[1] > 0
    assert got[0] == pytest.approx(want[0], rel=1e-6)  # float32 logits


def test_a_visible_offset_is_a_point_mass_and_a_hidden_one_a_distribution():
    k = 3
    logits = torch.randn(5, 4**k)
    visible = torch.tensor([[True, False, True]] * 5)
    digits = torch.randint(0, 4, (5, k))
    out = offset_log_probs(logits, visible, digits)
    assert torch.allclose(out.exp().sum(-1), torch.ones(5, k))
    assert torch.equal(out[:, 0].exp().argmax(-1), digits[:, 0]) and float(out[:, 0].exp().max()) == 1.0


@pytest.mark.parametrize("span", [6, 12])
def test_an_oracle_scores_zero_and_a_model_that_knows_nothing_scores_chance_at_any_width(span):
    k = 6
    codes = np.random.default_rng(3).integers(0, 4, 5000).astype(np.uint8)
    inputs, labels = masked(encode(windows(codes, 64, 24), k), k, span)
    sel = labels[labels != -100]
    oracle = torch.full((len(sel), 4**k + NUM_SPECIAL), -30.0)
    oracle[torch.arange(len(sel)), sel] = 30.0
    loss, bases = per_base_sums(oracle, inputs, labels, k)
    assert bases > 0 and loss / bases < 1e-6
    torch.manual_seed(0)
    mlm = build_mlm("tiny", k).eval()  # untrained: near-uniform logits
    with torch.no_grad():
        logits = selected_logits(mlm, all_mask(inputs, labels), labels)
    loss, bases = per_base_sums(logits, inputs, labels, k)
    assert loss / bases == pytest.approx(LN4, abs=0.02)
    assert bool((all_mask(inputs, labels)[labels != -100] == MASK).all())


@pytest.mark.parametrize("stay", [0.6, 1.0])
def test_base_tables_reach_the_true_conditional_entropy(stay):
    # A first-order chain: H(base | m bases each side) is the same for every m >= 1, and 0 when the
    # next base is a function of the previous one.
    train, held_out = markov_genome(400_000, stay, 0), markov_genome(100_000, stay, 1)
    want = markov_entropies(stay)[1] if stay < 1 else 0.0
    for m in (1, 2, 3):
        assert base_table_loss([train], [held_out], m) == pytest.approx(want, abs=0.01 + 0.02 * (m == 3))


def test_a_kmer_frequency_model_scores_about_the_count_tables():
    # It predicts every [MASK] token from 6-mer frequencies alone; restricted to the k-mers
    # consistent with the visible flanks, each token is a count table of its flanks, so "below the
    # best table" is the line for knowledge beyond counting. One span of k tokens per window, away
    # from the edges: one hidden base, seen by two one-sided tables (the end tokens) and four
    # two-sided ones; the geometric mean scores at most their mean loss and at least the best table.
    k = 6
    train, held_out = markov_genome(300_000, 0.5, 2), markov_genome(50_000, 0.5, 3)
    ids = encode(windows(held_out, 512, 40, 7), k)
    labels = torch.full_like(ids, -100)
    labels[:, 15:21] = ids[:, 15:21]
    inputs = torch.where(labels != -100, MASK, ids)
    freq = torch.tensor(kmer_counts([train], k) + 1.0, dtype=torch.float64)
    logits = torch.full((int((labels != -100).sum()), 4**k + NUM_SPECIAL), -60.0, dtype=torch.float64)
    logits[:, NUM_SPECIAL:] = (freq / freq.sum()).log()
    loss, bases = per_base_sums(logits, inputs, labels, k)
    assert bases == len(ids)
    one_sided, two_sided = markov_entropies(0.5)
    tables = [base_table_loss([train], [held_out], m) for m in (1, 2, 3)]
    assert min(tables) - 0.03 < loss / bases < (2 * one_sided + 4 * two_sided) / 6 + 0.03
    assert loss / bases < LN4 - 0.3


def test_single_nucleotide_tokens_score_the_cross_entropy_of_their_own_base():
    # k = 1: a masked token hides its base and nothing else shows it, so the per-base loss is the
    # plain cross-entropy of the four base logits, renormalized, at every masked position
    codes = np.random.default_rng(5).integers(0, 4, (16, 40)).astype(np.uint8)
    ids = encode(torch.from_numpy(codes), 1)
    inputs, labels = masked(ids, 1, 1, seed=2)
    n = int((labels != -100).sum())
    logits = torch.randn(n, 4 + NUM_SPECIAL, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    loss, bases = per_base_sums(logits, inputs, labels, 1)
    truth = labels[labels != -100] - NUM_SPECIAL
    want = -torch.log_softmax(logits[:, NUM_SPECIAL:], dim=1)[torch.arange(n), truth].sum()
    assert bases == n and loss == pytest.approx(float(want), rel=1e-6)  # float32 inside


# ---- single windows by hand: which tokens show bases, which bases are scored ----------------------
# Token ids are written here from the k-mer strings (ALPHABET "ATCG", most significant base first);
# the selected token's logits give its k-mers the probabilities named in each test and every other
# k-mer logit 8: far above them, so a k-mer the visible bases rule out, if counted, changes the loss.
def kid(kmer: str) -> int:
    return NUM_SPECIAL + sum("ATCG".index(c) * 4 ** (len(kmer) - 1 - i) for i, c in enumerate(kmer))


def window(tokens: list[int], selected: set[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """[CLS] tokens [SEP] as inputs and labels, the tokens at the ``selected`` indexes labelled."""
    ids = torch.tensor([[2, *tokens, 3]])
    labels = torch.full_like(ids, -100)
    for i in selected:
        labels[0, 1 + i] = ids[0, 1 + i]
    return ids, labels


def token_logits(k: int, probs: dict[str, float]) -> torch.Tensor:
    row = torch.full((NUM_SPECIAL + 4**k,), 8.0, dtype=torch.float64)
    for kmer, p in probs.items():
        row[kid(kmer)] = math.log(p)
    return row


def test_all_mask_masks_the_selected_tokens_and_leaves_the_others_as_they_are():
    inputs, labels = window([kid("AT"), kid("TC"), 1, kid("CA")], {1})
    want = torch.tensor([[2, kid("AT"), MASK, 1, kid("CA"), 3]])
    assert torch.equal(all_mask(inputs, labels), want)


def test_an_unselected_all_a_kmer_shows_its_bases():
    # "AAT", k = 2: AA (the first k-mer id, NUM_SPECIAL) shows bases 0 and 1; AT is masked and hides
    # base 2 only, restricted to A? k-mers: P(T) = .4 / (.1 + .4 + .2 + .3)
    inputs, labels = window([kid("AA"), kid("AT")], {1})
    logits = token_logits(2, {"AA": 0.1, "AT": 0.4, "AC": 0.2, "AG": 0.3})[None]
    loss, bases = per_base_sums(logits, all_mask(inputs, labels), labels, 2)
    assert bases == 1 and loss == pytest.approx(-math.log(0.4), rel=1e-6)  # float32 inside


def test_a_stride_above_one_places_each_kmer_at_its_own_bases():
    # k = 3, stride 2, "ATCGTAC": ATC at bases 0-2, CGT at 2-4, TAC at 4-6. CGT masked hides base 3
    # only (2 and 4 the neighbours show); restricted to C?T: P(G) = .4 / (.15 + .25 + .2 + .4)
    inputs, labels = window([kid("ATC"), kid("CGT"), kid("TAC")], {1})
    logits = token_logits(3, {"CAT": 0.15, "CTT": 0.25, "CCT": 0.2, "CGT": 0.4})[None]
    loss, bases = per_base_sums(logits, all_mask(inputs, labels), labels, 3, stride=2)
    assert bases == 1 and loss == pytest.approx(-math.log(0.4), rel=1e-6)  # float32 inside
    # k = 3, stride 3, "ATCGTACGG": GTA masked hides bases 3, 4, 5, each read from GTA's token alone. Its
    # logits are a product of per-offset tables, so each base's marginal is its table:
    # -ln .5 (G first) - ln .1 (T second) - ln .7 (A third)
    inputs, labels = window([kid("ATC"), kid("GTA"), kid("CGG")], {1})
    tables = [dict(zip("ATCG", t)) for t in ((0.2, 0.1, 0.2, 0.5), (0.3, 0.1, 0.4, 0.2), (0.7, 0.1, 0.1, 0.1))]
    logits = token_logits(3, {"".join(p): tables[0][p[0]] * tables[1][p[1]] * tables[2][p[2]]
                              for p in itertools.product("ATCG", repeat=3)})[None]
    loss, bases = per_base_sums(logits, all_mask(inputs, labels), labels, 3, stride=3)
    assert bases == 3 and loss == pytest.approx(-math.log(0.5 * 0.1 * 0.7), rel=1e-6)  # float32 inside


def test_bases_that_only_a_selected_unk_covers_are_not_scored():
    # "ATCN", k = 2: AT shows bases 0-1; TC and the [UNK] k-mer CN are selected. Base 2 is scored from
    # TC restricted to T?: P(C) = .3; base 3, covered by [UNK] alone, is not scored
    inputs, labels = window([kid("AT"), kid("TC"), 1], {1, 2})
    logits = torch.stack([token_logits(2, {"TA": 0.1, "TT": 0.2, "TC": 0.3, "TG": 0.4}), token_logits(2, {})])
    loss, bases = per_base_sums(logits, all_mask(inputs, labels), labels, 2)
    assert bases == 1 and loss == pytest.approx(-math.log(0.3), rel=1e-6)  # float32 inside


def test_a_batch_with_nothing_to_score_sums_to_zero_over_zero_bases():
    inputs, labels = window([kid("AT"), kid("TC")], set())
    assert per_base_sums(torch.zeros(0, NUM_SPECIAL + 16), inputs, labels, 2) == (0.0, 0)
    inputs, labels = window([kid("AT"), 1], {1})  # a selected [UNK] alone
    assert per_base_sums(token_logits(2, {})[None], all_mask(inputs, labels), labels, 2) == (0.0, 0)
