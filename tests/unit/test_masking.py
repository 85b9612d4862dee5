import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from randommask.data.tokenizer import CLS, MASK, NUM_SPECIAL, PAD, SEP, UNK
from randommask.training.masking import PAPER_PHASE_ENDS, cover_spans, make_masker

K = 6
VOCAB = 4**K + NUM_SPECIAL
STRATEGIES = [
    ("bert", {}),
    ("span", {}),
    ("randommask", {"phase_ends": [10, 20, 30]}),
    ("randommask", {"phase_ends": [10, 20, 30], "sampling": "boundary"}),
    ("randommask", {"phase_ends": [10, 20, 30], "keep_ratio": True}),
]


def batch(b=64, length=512, seed=0, specials=True):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(NUM_SPECIAL, VOCAB, (b, length), generator=g)
    if specials:
        ids[:, 0], ids[:, -1] = CLS, SEP
        ids[::3, length // 2 :] = PAD  # padded rows
        ids[1::3, length // 5 : length // 5 + 10] = UNK  # runs of N
        ids[2::5, length // 3] = MASK
    return ids


def runs(row: torch.Tensor) -> list[tuple[int, int]]:
    """(start, length) of each run of True."""
    out, start = [], None
    for i, v in enumerate(row.tolist() + [False]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            out.append((start, i - start))
            start = None
    return out


@pytest.mark.parametrize("strategy, params", STRATEGIES)
@pytest.mark.parametrize("step", [0, 15, 100])
def test_invariants(strategy, params, step):
    ids = batch()
    masker = make_masker(strategy, K, **params)
    inputs, labels = masker(ids, step, torch.Generator().manual_seed(1))
    sel = labels != -100
    assert inputs.shape == labels.shape == ids.shape and inputs.dtype == ids.dtype
    assert sel.any()
    assert (labels[sel] == ids[sel]).all()  # labels carry the original id
    assert (ids[sel] >= NUM_SPECIAL).all()  # never a special token
    assert (inputs[~sel] == ids[~sel]).all()  # unselected never change
    changed = sel & (inputs != MASK) & (inputs != ids)
    assert (inputs[changed] >= NUM_SPECIAL).all() and (inputs[changed] < VOCAB).all()


def test_replacement_proportions():
    ids = batch(512, specials=False)
    inputs, labels = make_masker("bert", K, mask_prob=0.5)(ids, 0, torch.Generator().manual_seed(2))
    sel = labels != -100
    n = sel.sum().item()
    masked = ((inputs == MASK) & sel).sum().item() / n
    kept = ((inputs == ids) & sel).sum().item() / n
    randomized = 1 - masked - kept
    assert abs(masked - 0.8) < 0.01 and abs(randomized - 0.1) < 0.01 and abs(kept - 0.1) < 0.01
    assert abs(sel.float().mean().item() - 0.5) < 0.01
    # random replacements are spread over the k-mer vocabulary
    rnd = inputs[sel & (inputs != MASK) & (inputs != ids)]
    assert rnd.min() < NUM_SPECIAL + 200 and rnd.max() > VOCAB - 200


@pytest.mark.parametrize("p_mask, p_rand", [(1.0, 0.0), (0.9, 0.0), (0.0, 1.0), (0.0, 0.0), (0.5, 0.5)])
def test_replacement_shares_may_be_all_or_nothing(p_mask, p_rand):
    """mask_token_prob=1 (every selected token is [MASK]) and random_token_prob=0 are valid: no
    division by zero, and the shares are what was asked."""
    ids = batch(512, specials=False)
    masker = make_masker("bert", K, mask_prob=0.5, mask_token_prob=p_mask, random_token_prob=p_rand)
    inputs, labels = masker(ids, 0, torch.Generator().manual_seed(2))
    sel = labels != -100
    n = sel.sum().item()
    masked = ((inputs == MASK) & sel).sum().item() / n
    kept = ((inputs == ids) & sel).sum().item() / n
    assert abs(masked - p_mask) < 0.01 and abs(kept - (1 - p_mask - p_rand)) < 0.01
    assert (inputs[~sel] == ids[~sel]).all() and inputs.min() >= MASK and inputs.max() < VOCAB
    again, _ = masker(ids, 0, torch.Generator().manual_seed(2))
    assert torch.equal(inputs, again)


@settings(max_examples=200, deadline=None)
@given(length=st.integers(1, 40), data=st.data())
def test_cover_spans_matches_loop(length, data):
    centres = torch.tensor(data.draw(st.lists(st.booleans(), min_size=length, max_size=length)))[None]
    lens = torch.tensor(data.draw(st.lists(st.integers(1, 15), min_size=length, max_size=length)))[None]
    expected = torch.zeros(1, length, dtype=torch.bool)
    for c in range(length):
        if centres[0, c]:
            m = int(lens[0, c])
            for p in range(c - (m - 1) // 2, c + m // 2 + 1):
                if 0 <= p < length:
                    expected[0, p] = True
    assert (cover_spans(centres, lens, 15) == expected).all()


def test_dnabert_span_is_centre_minus_2_to_plus_3():
    ids = batch(1, 64, specials=False)
    ids[0, 0] = CLS
    masker = make_masker("span", K, centre_prob=0.02)
    centres = torch.zeros(1, 64, dtype=torch.bool)
    centres[0, 30] = True
    assert cover_spans(centres, torch.tensor(masker.span), masker.span)[0].nonzero().flatten().tolist() == [28, 29, 30, 31, 32, 33]


def run_lengths(masker, step, n=200):
    """Lengths of isolated masked runs away from edges (rare centres, so spans seldom touch)."""
    ids = batch(n, 512, specials=False)
    _, labels = masker(ids, step, torch.Generator().manual_seed(3))
    lengths = []
    for row in labels != -100:
        lengths += [ln for s, ln in runs(row) if 20 < s < 480]
    return lengths


def test_span_lengths_follow_phases():
    masker = make_masker("randommask", K, centre_prob=0.002, phase_ends=[100, 200, 300])
    for step, boundary in [(0, 6), (99, 6), (100, 8), (250, 10), (300, 10), (10**6, 10)]:
        assert masker.span_bounds(step) == (6, boundary)
        lengths = run_lengths(masker, step)
        assert min(lengths) == 6
        # runs are single spans (or, rarely, merged neighbours): the boundary is reached, not passed
        singles = [x for x in lengths if x <= boundary]
        assert max(singles) == boundary and set(singles) == set(range(6, boundary + 1))
    fixed = make_masker("randommask", K, centre_prob=0.002, phase_ends=[100, 200], sampling="boundary")
    assert fixed.span_bounds(150) == (8, 8)
    assert min(run_lengths(fixed, 150)) == 8
    assert min(run_lengths(make_masker("span", K, centre_prob=0.002), 0)) == 6


def test_paper_schedule_defaults():
    masker = make_masker("randommask", K)
    assert masker.phase_ends == PAPER_PHASE_ENDS
    bounds = [masker.span_bounds(s)[1] for s in (0, 29999, 30000, 60000, 100000, 150000, 479999, 480000, 10**7)]
    assert bounds == [6, 6, 8, 10, 12, 14, 14, 14, 14]
    assert make_masker("randommask", 4).span_bounds(0) == (4, 4)  # start_span defaults to k
    assert make_masker("span", K).span_bounds(123) == (6, 6)


def test_masked_fraction_grows_unless_keep_ratio():
    ids = batch(256, specials=False)
    grow = make_masker("randommask", K, phase_ends=[10, 20, 30, 40, 50])
    keep = make_masker("randommask", K, phase_ends=[10, 20, 30, 40, 50], keep_ratio=True)

    def frac(m, step):
        return (m(ids, step, torch.Generator().manual_seed(4))[1] != -100).float().mean().item()

    assert frac(grow, 0) == pytest.approx(frac(keep, 0))
    assert frac(grow, 60) > 1.5 * frac(grow, 0)
    assert frac(keep, 60) == pytest.approx(frac(keep, 0), rel=0.15)
    # DNABERT: 0.025 centres x 6 tokens, minus overlaps
    assert frac(make_masker("span", K), 0) == pytest.approx(1 - (1 - 0.025) ** 6, rel=0.05)


@pytest.mark.parametrize("strategy, params", STRATEGIES)
def test_deterministic_per_seed_and_step(strategy, params):
    ids = batch()
    m = make_masker(strategy, K, **params)
    a = m(ids, 25, torch.Generator().manual_seed(7))
    b = m(ids, 25, torch.Generator().manual_seed(7))
    c = m(ids, 25, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_runs_on_the_inputs_device():
    ids = batch(4, 64)
    inputs, labels = make_masker("randommask", K)(ids, 0)
    assert inputs.device == ids.device and labels.device == ids.device


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_runs_on_cuda():
    ids = batch(8, 128).cuda()
    g = torch.Generator(device="cuda").manual_seed(0)
    inputs, labels = make_masker("randommask", K)(ids, 0, g)
    assert inputs.is_cuda and labels.is_cuda and (labels != -100).any()


@pytest.mark.parametrize("strategy, params, match", [
    ("whole-word", {}, "unknown masking strategy"),
    ("span", {"span": 0}, "span"),
    ("bert", {"mask_prob": 1.0}, "mask_prob"),
    ("bert", {"mask_prob": 0}, "mask_prob"),
    ("span", {"centre_prob": -0.1}, "centre_prob"),
    ("bert", {"mask_token_prob": 1.2}, "mask_token_prob"),
    ("bert", {"random_token_prob": -0.1}, "random_token_prob"),
    ("bert", {"mask_token_prob": 0.8, "random_token_prob": 0.3}, "at most 1"),
    ("randommask", {"phase_ends": []}, "phase_ends"),
    ("randommask", {"phase_ends": [10, 10]}, "strictly increasing"),
    ("randommask", {"phase_ends": [20, 10]}, "strictly increasing"),
    ("randommask", {"phase_ends": [0, 10]}, "positive"),
    ("randommask", {"span_step": -1}, "span_step"),
    ("randommask", {"start_span": 0}, "start_span"),
    ("randommask", {"sampling": "gaussian"}, "sampling"),
    ("bert", {"span": 3}, "takes no parameter span"),
])
def test_bad_parameters(strategy, params, match):
    with pytest.raises(ValueError, match=match):
        make_masker(strategy, K, **params)
