"""The counting references in the evaluation's own geometry (data.counting, data.floors): the back-off
tables against a slow plain implementation with dicts and strings, the bases each evaluation hides
and what is seen beside them worked out by hand, and the properties the line must have (about 0
where a base is a function of its neighbours; equal to the centred table for interior bases; worse
near window edges)."""

import math
import warnings
from collections import defaultdict

import numpy as np
import pytest
import torch

from randommask.data.counting import ALPHAS, BackoffTable, Queries
from randommask.data.floors import GEOMETRY_FLANKS, eval_queries, geometry_tables, table_keys, window_codes
from randommask.data.tokenizer import MASK, kmer_ids_from_codes
from randommask.training.masking import make_masker

LN4 = math.log(4)
BASES = "ATCG"  # code order: A=0, T=1, C=2, G=3
COMPLEMENT = str.maketrans("ATCGN", "TAGCN")


def encode(codes: np.ndarray, k: int) -> torch.Tensor:
    ids = torch.from_numpy(kmer_ids_from_codes(codes, k).astype(np.int64))
    return torch.cat([torch.full((len(ids), 1), 2), ids, torch.full((len(ids), 1), 3)], dim=1)


def markov(n: int, stay: float, seed: int) -> np.ndarray:
    """A first-order chain: the next base repeats the previous one with probability ``stay``."""
    rng = np.random.default_rng(seed)
    out = np.empty(n, dtype=np.uint8)
    out[0] = 0
    other = rng.integers(0, 4, n)
    keep = rng.random(n) < stay
    for i in range(1, n):
        out[i] = out[i - 1] if keep[i] else other[i]
    return out


def codes_of_text(text: str) -> np.ndarray:
    return np.array([BASES.index(c) for c in text], dtype=np.uint8)


def slow_log_probs(train: list[np.ndarray], q: Queries, flanks: tuple[int, ...],
                   both_strands: bool = True) -> dict[int, np.ndarray]:
    """The estimator by its definition, with strings and dicts: counts of (left, base, right) on both
    strands (or the given one), leave-one-out choice of each context length's prior strength,
    back-off recursion."""
    strands = []
    for codes in train:
        s = "".join("ATCGN"[min(int(c), 4)] for c in codes)
        strands += [s, s.translate(COMPLEMENT)[::-1]] if both_strands else [s]

    def chain(a, b, lg, rg):  # the shapes (a, b, left gap, right gap) it backs off through
        out = [(a, b, lg if a else 0, rg if b else 0)]
        while a or b:
            if a >= b and a:
                a -= 1
            else:
                b -= 1
            out.append((a, b, lg if a else 0, rg if b else 0))
        return out

    rows = [("".join("ATCGN"[c] for c in q.left[i]), "".join("ATCGN"[c] for c in q.right[i]))
            for i in range(len(q.base))]
    lgaps, rgaps = q.gaps()

    def start(i, m):
        return chain(min(int(q.left_len[i]), m), min(int(q.right_len[i]), m), int(lgaps[i]), int(rgaps[i]))[0]

    needed = defaultdict(set)
    for m in flanks:
        for i, (left, right) in enumerate(rows):
            for a, b, lg, rg in chain(*start(i, m)):
                needed[(a, b, lg, rg)].add((left[:a], right[:b]))
    counts = {pair: {ctx: [0, 0, 0, 0] for ctx in ctxs} for pair, ctxs in needed.items()}
    for s in strands:
        for p, base in enumerate(s):
            if base == "N":
                continue
            for (a, b, lg, rg), table in counts.items():
                if p - lg - a < 0 or p + rg + b >= len(s):
                    continue
                ctx = (s[p - lg - a : p - lg][::-1], s[p + rg + 1 : p + rg + 1 + b])
                if ctx in table:
                    table[ctx][BASES.index(base)] += 1
    probs = {}
    for pair in sorted(needed, key=lambda shape: shape[0] + shape[1]):
        lower_pair = chain(*pair)[1] if pair[:2] != (0, 0) else None

        def lower(ctx, lower_pair=lower_pair):
            return probs[lower_pair][(ctx[0][: lower_pair[0]], ctx[1][: lower_pair[1]])] if lower_pair else [0.25] * 4

        def held_out(alpha, pair=pair, lower=lower):
            total = 0.0
            for ctx, n in counts[pair].items():
                for x in range(4):
                    if n[x]:
                        total += n[x] * math.log((n[x] - 1 + alpha * lower(ctx)[x]) / (sum(n) - 1 + alpha))
            return total

        best = None
        for alpha in ALPHAS:
            score = held_out(alpha)
            if best is None or score > best[0] + 1e-9 * abs(best[0]):
                best = (score, alpha)
        alpha = best[1]
        probs[pair] = {ctx: [(n[x] + alpha * lower(ctx)[x]) / (sum(n) + alpha) for x in range(4)]
                       for ctx, n in counts[pair].items()}
    out = {}
    for m in flanks:
        out[m] = np.array([[math.log(p) for p in probs[start(i, m)][(left[: start(i, m)[0]], right[: start(i, m)[1]])]]
                           for i, (left, right) in enumerate(rows)])
    return out


def test_the_bases_an_evaluation_hides_and_what_is_seen_beside_them_by_hand():
    # k = 3, a window of 10 bases (8 tokens). Masking tokens 1-3 hides bases 0, 1, 2 (base 3 is also in
    # token 4); masking tokens 4-6 hides base 5 alone (4 is in token 3, 6 in token 7).
    codes = np.array([[0, 1, 2, 3, 0, 1, 2, 3, 3, 2]], dtype=np.uint8)
    ids = encode(codes, 3)
    np.testing.assert_array_equal(window_codes(ids.numpy(), 3), codes)
    labels = torch.full_like(ids, -100)
    labels[0, 1:4] = ids[0, 1:4]
    q = eval_queries(torch.where(labels != -100, MASK, ids), labels, 3, width=10)
    np.testing.assert_array_equal(q.base, [0, 1, 2])
    np.testing.assert_array_equal(q.left_len, [0, 0, 0])  # nothing shows before the window's start
    np.testing.assert_array_equal(q.right_len, [7, 7, 7])  # bases 3..9 show, past 2, 1 and 0 hidden ones
    np.testing.assert_array_equal(q.right_gap, [2, 1, 0])
    for i in range(3):
        np.testing.assert_array_equal(q.right[i, :7], codes[0, 3:])
    labels = torch.full_like(ids, -100)
    labels[0, 4:7] = ids[0, 4:7]
    q = eval_queries(torch.where(labels != -100, MASK, ids), labels, 3, width=3)
    np.testing.assert_array_equal(q.base, [1])
    np.testing.assert_array_equal(q.left_len, [3])  # capped at the width
    np.testing.assert_array_equal(q.left[0], codes[0, [4, 3, 2]])  # nearest first
    np.testing.assert_array_equal(q.right[0], codes[0, [6, 7, 8]])
    np.testing.assert_array_equal([q.left_gap[0], q.right_gap[0]], [0, 0])
    # two spans: tokens 1-2 hide bases 0-1; tokens 5-7 hide base 6 (token t covers bases t-1..t+1)
    labels = torch.full_like(ids, -100)
    labels[0, [1, 2, 5, 6, 7]] = ids[0, [1, 2, 5, 6, 7]]
    q = eval_queries(torch.where(labels != -100, MASK, ids), labels, 3, width=10)
    np.testing.assert_array_equal(q.base, codes[0, [0, 1, 6]])
    np.testing.assert_array_equal(q.left_len, [0, 0, 4])  # base 6: bases 5, 4, 3, 2, then hidden base 1
    np.testing.assert_array_equal(q.right_len, [4, 4, 3])  # bases 0 and 1: 2-5, then base 6 hides
    np.testing.assert_array_equal(q.right_gap, [1, 0, 0])
    np.testing.assert_array_equal(q.left[2, :4], codes[0, [5, 4, 3, 2]])


def test_the_tables_match_a_plain_implementation_on_every_geometry():
    train = [markov(3_000, 0.5, 0), markov(1_500, 0.5, 1)]
    train[1][700] = 4  # an N: no context across it
    held_out = markov(3_000, 0.5, 2)
    ids = encode(np.stack([held_out[s : s + 20] for s in range(0, 2_800, 97)]), 3)
    inputs, labels = make_masker("span", 3, span=6)(ids, 0, torch.Generator().manual_seed(0))
    geometry = eval_queries(inputs, labels, 3, width=5)
    centred = Queries.centred(np.stack([held_out[s : s + 11] for s in range(5, 2_900, 131)]))
    q = Queries.concat([geometry, Queries(centred.left, centred.right, centred.left_len, centred.right_len,
                                          centred.base)])
    assert len(set(zip(q.left_len.tolist(), q.right_len.tolist()))) > 5  # several one- and two-sided shapes
    assert (q.gaps()[0] > 0).any() and (q.gaps()[1] > 0).any()  # and bases read past hidden ones
    flanks = (1, 2, 3, 5)
    table = BackoffTable(train, q, flanks)
    want = slow_log_probs(train, q, flanks)
    for m in flanks:
        np.testing.assert_allclose(table.log_probs(m), want[m], rtol=0, atol=1e-9)
    losses = table.losses()
    for m in flanks:
        assert losses[str(m)] == pytest.approx(-np.mean(want[m][np.arange(len(q.base)), q.base]), abs=1e-12)


def unique_unit(n: int, k: int) -> np.ndarray:
    """A random ``n``-base unit whose cyclic k-mers, on both strands, are all distinct: repeated, each
    base is a function of the k bases on either side of it (or at any fixed offset)."""
    for seed in range(1000):
        unit = np.random.default_rng(seed).integers(0, 4, n).astype(np.uint8)
        both = [np.concatenate([u, u[: k - 1]]) for u in (unit, np.array([1, 0, 3, 2])[unit[::-1]])]
        if len({tuple(u[i : i + k]) for u in both for i in range(n)}) == 2 * n:
            return unit
    raise AssertionError("no unit found")


def test_a_base_that_is_a_function_of_its_neighbours_is_predicted_at_about_zero_loss():
    train = [np.tile(unique_unit(60, 8), 400)]
    unit = train[0][:60]
    held_out = np.tile(unit, 30)[7:]
    ids = encode(np.stack([held_out[s : s + 40] for s in range(0, 1_700, 11)]), 6)
    one, two = torch.full_like(ids, -100), torch.full_like(ids, -100)
    one[:, 15:21] = ids[:, 15:21]  # one hidden base, bases on both sides
    two[:, 12:24] = ids[:, 12:24]  # seven hidden bases in a row: the middle one is 4 from any visible base
    sets = {"span_k": (torch.where(one != -100, MASK, ids), one), "span_2k": (torch.where(two != -100, MASK, ids), two)}
    floors = geometry_tables(train, sets, 6)
    tables, best = (floors[key] for key in table_keys("span_k"))
    assert set(tables) == {str(m) for m in GEOMETRY_FLANKS}
    assert best < 0.01 and tables["1"] > 0.3  # one base each side is not enough, eight are
    # six of the seven are read past at most 2 hidden bases, at about 0; the middle one is out of
    # reach, predicted from the base frequencies (both strands) alone
    q = eval_queries(*sets["span_2k"], 6)
    reach = q.left_len + q.right_len > 0
    n = len(ids)
    assert reach.sum() == 6 * n and len(q.base) == 7 * n
    log_p = BackoffTable(train, q, GEOMETRY_FLANKS).log_probs(8)[np.arange(7 * n), q.base]
    assert -log_p[reach].mean() < 0.01
    middle = held_out[np.arange(0, 1_700, 11) + 19]  # bases 16-22 hidden; 19 is 4 from bases 15 and 23
    counts = np.bincount(np.concatenate([train[0], np.array([1, 0, 3, 2])[train[0]]]), minlength=4)
    np.testing.assert_array_equal(np.sort(q.base[~reach]), np.sort(middle))
    assert -log_p[~reach].mean() == pytest.approx(-np.log(counts / counts.sum())[middle].mean(), abs=0.02)
    assert floors["best_counting_span_2k"] == pytest.approx(-log_p.mean(), abs=1e-4)


def test_interior_bases_score_as_the_centred_table_and_edges_score_worse():
    train = [markov(200_000, 0.6, 3)]
    held_out = markov(40_000, 0.6, 4)
    starts = np.arange(0, 39_000, 97)
    ids = encode(np.stack([held_out[s : s + 44] for s in starts]), 6)
    inside, edge = torch.full_like(ids, -100), torch.full_like(ids, -100)
    inside[:, 15:21] = ids[:, 15:21]  # hides base 19 alone: 19 bases show on the left, 24 on the right
    edge[:, 1:7] = ids[:, 1:7]  # hides bases 0-5 at the window's start
    sets = {"span_k": (torch.where(inside != -100, MASK, ids), inside),
            "span_2k": (torch.where(edge != -100, MASK, ids), edge)}
    floors = geometry_tables(train, sets, 6)
    centred = np.stack([held_out[s + 19 - 10 : s + 19 + 11] for s in starts])  # base 19 with 10 each side
    plain = BackoffTable(train, Queries.centred(centred), GEOMETRY_FLANKS).losses()
    for m in GEOMETRY_FLANKS:
        assert floors["base_table_span_k"][str(m)] == pytest.approx(plain[str(m)], abs=1e-4)
    # a first-order chain: H(base | one base each side) is what the interior line reaches
    assert floors["best_counting_span_k"] < LN4 - 0.2
    # at the edge five of the six hidden bases have no visible neighbour: near chance
    assert floors["best_counting_span_2k"] > floors["best_counting_span_k"] + 0.5
    assert floors["best_counting_span_2k"] == pytest.approx(LN4, abs=0.2)


def test_a_side_with_no_visible_base_has_no_gap():
    """``gaps`` by hand: a side's gap counts only where some base is read past it (a query with one
    visible base still reads past its gap); ``None`` means no gap anywhere."""
    q = Queries(np.zeros((4, 2), dtype=np.uint8), np.zeros((4, 2), dtype=np.uint8), np.array([0, 1, 2, 0]),
                np.array([2, 0, 1, 1]), np.zeros(4, dtype=np.int64), np.array([2, 1, 2, 1]), np.array([1, 2, 2, 0]))
    left, right = q.gaps()
    assert left.tolist() == [0, 1, 2, 0] and right.tolist() == [1, 0, 2, 0]
    assert left.dtype == right.dtype == np.int64
    plain = Queries(q.left, q.right, q.left_len, q.right_len, q.base)
    assert [g.tolist() for g in plain.gaps()] == [[0, 0, 0, 0], [0, 0, 0, 0]]


def test_the_index_finds_exactly_the_queried_contexts_past_a_hash_collision():
    """A long context (over DENSE_BASES bases) passes a hash filter, then an exact search: a training
    key that shares a queried key's hash bucket but is larger than every queried key is not found."""
    from randommask.data.counting import ContextIndex

    known = np.array([7, 1_000], dtype=np.int64)
    collides = 833_040  # found by search: its hash bucket is 1000's
    assert ContextIndex.bucket(np.array([collides]))[0] == ContextIndex.bucket(np.array([1_000]))[0]
    where, at = ContextIndex(known, 10).find(np.array([collides, 1_000, 5, 7, 2_000_000], dtype=np.int64))
    assert where.tolist() == [1, 3] and at.tolist() == [1, 0]
    where, at = ContextIndex(known, 8).find(np.array([65_535, 1_000, 5, 7], dtype=np.int64))  # the dense table
    assert where.tolist() == [1, 3] and at.tolist() == [1, 0]


def hand_queries(held_out: np.ndarray, at: np.ndarray, width: int, seed: int) -> Queries:
    """Queries at positions ``at`` of ``held_out`` with random side lengths (0..width) and gaps (left
    0-2, right 0-1: the two sides' gaps differ), the visible bases read past each gap."""
    rng = np.random.default_rng(seed)
    n = len(at)
    llen, rlen = rng.integers(0, width + 1, n), rng.integers(0, width + 1, n)
    lgap, rgap = rng.integers(0, 3, n), rng.integers(0, 2, n)
    left = np.full((n, width), 4, dtype=np.uint8)
    right = np.full((n, width), 4, dtype=np.uint8)
    for i, p in enumerate(at):
        for j in range(llen[i]):
            left[i, j] = held_out[p - lgap[i] - 1 - j]
        for j in range(rlen[i]):
            right[i, j] = held_out[p + rgap[i] + 1 + j]
    return Queries(left, right, llen, rlen, held_out[at].astype(np.int64), lgap, rgap)


def test_the_tables_match_a_plain_implementation_at_the_edges_of_their_input():
    """Against the plain implementation: m = 0 (no context: the base frequencies) beside longer m,
    left gaps the right side never has, a training piece shorter than the context and holding only A
    and T (so no C or G on either strand), one strand only, and no numpy warning while fitting
    (most long contexts are never seen in training)."""
    train = [markov(500, 0.5, 5), codes_of_text("ATA")]
    held_out = markov(300, 0.5, 6)
    q = hand_queries(held_out, np.arange(8, 290, 9), 3, 7)
    assert set(q.gaps()[0].tolist()) == {0, 1, 2} and set(q.gaps()[1].tolist()) == {0, 1}
    flanks = (0, 1, 3)
    for both in (True, False):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            table = BackoffTable(train, q, flanks, both_strands=both)
        want = slow_log_probs(train, q, flanks, both_strands=both)
        for m in flanks:
            np.testing.assert_allclose(table.log_probs(m), want[m], rtol=0, atol=1e-9)
    # m = 0 alone: every query's context is none, a table with no longer context to count
    alone = BackoffTable(train, q, (0,))
    np.testing.assert_allclose(alone.log_probs(0), slow_log_probs(train, q, (0,))[0], rtol=0, atol=1e-9)


def test_what_is_seen_beside_hidden_bases_by_hand_with_a_stride_an_n_and_one_base_tokens():
    def tokens(codes: np.ndarray, k: int, stride: int) -> torch.Tensor:
        ids = torch.from_numpy(kmer_ids_from_codes(codes, k, stride).astype(np.int64))
        return torch.cat([torch.full((len(ids), 1), 2), ids, torch.full((len(ids), 1), 3)], dim=1)

    def masked(ids: torch.Tensor, span: slice) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.full_like(ids, -100)
        labels[:, span] = ids[:, span]
        return torch.where(labels != -100, MASK, ids), labels

    # 3-mers every 2 bases over 9 bases: token t covers 2(t - 1) .. 2(t - 1) + 2. Masking tokens 2 and 3
    # hides bases 3, 4, 5 (2 and 6 are in tokens 1 and 4); each reads 2, 1, 0 on the left, 6, 7, 8 on the right.
    codes = np.array([[0, 1, 2, 3, 3, 2, 1, 0, 2]], dtype=np.uint8)
    q = eval_queries(*masked(tokens(codes, 3, 2), slice(2, 4)), 3, 2, width=4)
    np.testing.assert_array_equal(q.base, codes[0, 3:6])
    np.testing.assert_array_equal(q.left_len, [3, 3, 3])
    np.testing.assert_array_equal(q.right_len, [3, 3, 3])
    np.testing.assert_array_equal(q.left_gap, [0, 1, 2])
    np.testing.assert_array_equal(q.right_gap, [2, 1, 0])
    for i in range(3):
        np.testing.assert_array_equal(q.left[i], [*codes[0, [2, 1, 0]], 4])
        np.testing.assert_array_equal(q.right[i], [*codes[0, [6, 7, 8]], 4])
    # an N at base 5: tokens 4-6 (3-mers) are [UNK]; masking exactly them hides base 5, which no
    # selected valid k-mer covers: no base to score
    codes = np.array([[0, 1, 2, 3, 0, 4, 2, 3, 3, 2]], dtype=np.uint8)
    q = eval_queries(*masked(tokens(codes, 3, 1), slice(4, 7)), 3, width=4)
    assert len(q.base) == 0
    # 1-mers over 4 bases: masking tokens 2 and 3 hides bases 1 and 2; base 1 reads base 0 on the left,
    # and base 3 past base 2 on the right; masking tokens 1-3 leaves base 0 reading base 3 past two hidden
    codes = np.array([[3, 0, 1, 2]], dtype=np.uint8)
    q = eval_queries(*masked(tokens(codes, 1, 1), slice(2, 4)), 1, width=4)
    np.testing.assert_array_equal(q.left_len, [1, 1])
    np.testing.assert_array_equal(q.left_gap, [0, 1])
    np.testing.assert_array_equal(q.left[:, 0], [3, 3])
    q = eval_queries(*masked(tokens(codes, 1, 1), slice(1, 4)), 1, width=4)
    np.testing.assert_array_equal(q.base, [3, 0, 1])
    np.testing.assert_array_equal(q.right_len, [1, 1, 1])
    np.testing.assert_array_equal(q.right_gap, [2, 1, 0])
    np.testing.assert_array_equal(q.right[:, 0], [2, 2, 2])


def test_window_codes_keep_a_base_any_valid_k_mer_shows_beside_an_n():
    """3-mers over 12 bases with an N at base 5: tokens 4-6 ([UNK]) cover it, yet bases 4 and 6 are each
    in a valid k-mer too (tokens 3 and 7); only base 5 is INVALID (4)."""
    codes = np.array([[0, 1, 2, 3, 0, 4, 2, 3, 3, 1, 0, 2]], dtype=np.uint8)
    np.testing.assert_array_equal(window_codes(encode(codes, 3).numpy(), 3), codes)


def test_geometry_tables_keep_the_stride_round_to_4_places_and_leave_a_set_with_nothing_hidden_none():
    """3-mers every other base: each set's tables are the back-off tables on its own queries, read with
    that stride (eval_queries is pinned by hand above), rounded to 4 places; a set that hides no base
    has None for both keys, and so do sets that all hide none."""
    train = [markov(3_000, 0.5, 11)]
    held_out = markov(1_000, 0.5, 12)
    windows = np.stack([held_out[s : s + 21] for s in range(0, 900, 37)])
    ids = torch.from_numpy(kmer_ids_from_codes(windows, 3, 2).astype(np.int64))
    ids = torch.cat([torch.full((len(ids), 1), 2), ids, torch.full((len(ids), 1), 3)], dim=1)
    labels = torch.full_like(ids, -100)
    labels[:, 4:6] = ids[:, 4:6]
    inputs = torch.where(labels != -100, MASK, ids)
    nothing = (ids, torch.full_like(ids, -100))
    out = geometry_tables(train, {"span_k": (inputs, labels), "none": nothing}, 3, 2)
    plain = BackoffTable(train, eval_queries(inputs, labels, 3, 2), GEOMETRY_FLANKS).losses()
    want = {m: round(v, 4) for m, v in plain.items()}
    assert out == {"base_table_span_k": want, "best_counting_span_k": min(want.values()),
                   "base_table_none": None, "best_counting_none": None}
    assert any(round(v, 5) != round(v, 4) for v in plain.values())  # so the rounding shows
    assert geometry_tables(train, {"none": nothing}, 3, 2) == {"base_table_none": None, "best_counting_none": None}
