"""The floors a [MASK]-only loss is read against, on synthetic genomes of known entropy, and the bases a
masked span hides (the floors of prepared genomes, the evaluation windows and a copying model scored on
them are in tests/integration/test_floors.py)."""

import math

import numpy as np
import pytest
import torch

from randommask.data.floors import context_free_floor, eval_reference, hidden_bases, overlap_reference
from randommask.data.tokenizer import MASK, NUM_SPECIAL

LN4 = math.log(4)


def markov_genome(n: int, stay: float, seed: int) -> np.ndarray:
    """Codes 0-3 where the next base is the previous + 1 (mod 4) with probability ``stay`` + (1 - stay)/4."""
    rng = np.random.default_rng(seed)
    step = np.where(rng.random(n) < stay, 1, rng.integers(0, 4, n))
    return (np.cumsum(step) % 4).astype(np.uint8)


def markov_entropies(stay: float) -> tuple[float, float]:
    """Exact (per-step conditional entropy h, H(base | one base each side)) of markov_genome's chain."""
    p = np.full(4, (1 - stay) / 4)
    p[1] += stay
    h = float(-(p * np.log(p)).sum())
    two = np.array([sum(p[a] * p[(d - a) % 4] for a in range(4)) for d in range(4)])  # two-step law
    return h, 2 * h - float(-(two * np.log(two)).sum())


def test_floors_of_synthetic_genomes_with_known_entropy():
    uniform = np.random.default_rng(0).integers(0, 4, 2_000_000).astype(np.uint8)
    assert context_free_floor([uniform[:1_900_000]], [uniform[1_900_000:]], 6) == pytest.approx(6 * LN4, abs=0.03)
    assert overlap_reference([uniform], flank=3) == pytest.approx(LN4, abs=0.01)
    # A Markov chain: k-mer entropy ln 4 + (k - 1) h, and with one base of flank H(X0 | X-1, X1) exactly.
    chain = markov_genome(2_000_000, 0.7, 1)
    h, h_flanked = markov_entropies(0.7)
    assert context_free_floor([chain[:1_900_000]], [chain[1_900_000:]], 6) == pytest.approx(LN4 + 5 * h, abs=0.03)
    assert overlap_reference([chain], flank=1) == pytest.approx(h_flanked, abs=0.01)
    # More flank cannot help a first-order chain: the plug-in estimate stays at the exact value.
    assert overlap_reference([chain], flank=3) == pytest.approx(h_flanked, abs=0.02)
    assert h_flanked < h < LN4


def test_hidden_bases_of_a_span_of_k_is_one_and_a_kept_token_shows_it():
    k = 6
    ids = torch.arange(NUM_SPECIAL, NUM_SPECIAL + 30)[None].clone()  # any k-mer ids: only visibility matters
    labels = torch.full_like(ids, -100)
    span = slice(10, 16)  # six tokens: bases 9..19 covered, base 14 shown by no visible token
    labels[0, span] = ids[0, span]
    inputs = ids.clone()
    inputs[0, span] = MASK
    h = hidden_bases(inputs, labels, k)
    assert h[0, span].tolist() == [1] * 6 and h[0, :10].sum() == 0
    kept = inputs.clone()
    kept[0, 12] = ids[0, 12]  # a kept token inside the span shows every base of its k-mer
    assert hidden_bases(kept, labels, k)[0, span].tolist() == [0] * 6
    wide = labels.clone()
    wide[0, 8:20] = ids[0, 8:20]  # a span of 2k = 12 tokens hides 7 bases
    wide_in = torch.where(wide != -100, MASK, ids)
    assert hidden_bases(wide_in, wide, k)[0, 8:20].tolist() == [1, 2, 3, 4, 5, 6, 6, 5, 4, 3, 2, 1]
    assert eval_reference(inputs, labels, k, 1, 1.3) == pytest.approx(1.3)
