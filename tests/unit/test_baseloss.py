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
