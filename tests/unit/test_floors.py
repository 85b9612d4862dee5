"""The floors a [MASK]-only loss is read against, on synthetic genomes of known entropy and against plain
implementations with strings and Counters, the splits they count (training bases only) and the bases a
masked span hides (the floors of prepared genomes, the evaluation windows and a copying model scored on
them are in tests/integration/test_floors.py)."""

import json
import math
from collections import Counter

import numpy as np
import pytest
import torch

from randommask.data.floors import (
    BASE_TABLE_FLANKS,
    base_table_loss,
    compute_floors,
    context_free_floor,
    eval_reference,
    hidden_bases,
    overlap_reference,
)
from randommask.data.shards import FORMAT, FORMAT_VERSION
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


def test_the_overlap_reference_of_an_evaluation_set_by_hand():
    """eval_reference: the mean bases hidden over the labelled [MASK] positions only (not a kept
    labelled token, not an unlabelled [MASK]), times the per-base entropy; k-mers every other base."""
    k = 6
    ids = torch.arange(90, 120)[None].clone()  # k-mer id 100 stands at position 10, inside the span
    labels = torch.full_like(ids, -100)
    labels[0, 8:20] = ids[0, 8:20]  # a span of 2k tokens: 1, 2, ..., 6, 6, ..., 1 bases hidden
    inputs = torch.where(labels != -100, MASK, ids)
    labels[0, 25] = ids[0, 25]  # kept: labelled, its own k-mer shown, hides nothing
    inputs[0, 2] = MASK  # not labelled: not scored (its bases are shown by tokens 1 and 3)
    assert eval_reference(inputs, labels, k, 1, 0.9) == pytest.approx(42 / 12 * 0.9, abs=1e-12)
    # 4-mers every 2 bases: token t covers bases 2(t - 1) .. 2(t - 1) + 3. Masking tokens 5 and 6 hides
    # bases 10 and 11 (in no other token) for token 5, and the same two for token 6 (12, 13 are in token 7).
    ids = torch.arange(NUM_SPECIAL, NUM_SPECIAL + 12)[None].clone()
    labels = torch.full_like(ids, -100)
    labels[0, 5:7] = ids[0, 5:7]
    inputs = torch.where(labels != -100, MASK, ids)
    assert hidden_bases(inputs, labels, 4, 2)[0, 5:7].tolist() == [2, 2]
    assert eval_reference(inputs, labels, 4, 2, 0.9) == pytest.approx(1.8, abs=1e-12)


def plain_kmers(pieces: list[str], k: int, stride: int = 1) -> Counter:
    """Counts of the k-mers (strings) starting every ``stride`` bases of each piece, those holding an N
    left out, one strand."""
    return Counter(p[i : i + k] for p in pieces for i in range(0, len(p) - k + 1, stride) if "N" not in p[i : i + k])


def plain_context_free(train: list[str], validation: list[str], k: int, stride: int = 1) -> float:
    q, v = plain_kmers(train, k, stride), plain_kmers(validation, k, stride)
    total = sum(q.values()) + 4**k  # add-one over every k-mer
    return -sum(n * math.log((q[w] + 1) / total) for w, n in v.items()) / sum(v.values())


def plain_base_table_loss(train: list[str], validation: list[str], m: int) -> float:
    joint = plain_kmers(train, 2 * m + 1)
    context = Counter()
    for w, n in joint.items():
        context[w[:m] + w[m + 1 :]] += n
    v = plain_kmers(validation, 2 * m + 1)
    return -sum(n * math.log((joint[w] + 1) / (context[w[:m] + w[m + 1 :]] + 4)) for w, n in v.items()) / sum(v.values())


def plain_overlap(train: list[str], flank: int) -> float:
    """Plug-in H(middle base | flanks) = H(window) - H(flanks)."""
    joint = plain_kmers(train, 2 * flank + 1)
    context = Counter()
    for w, n in joint.items():
        context[w[:flank] + w[flank + 1 :]] += n

    def entropy(c: Counter) -> float:
        total = sum(c.values())
        return -sum(n / total * math.log(n / total) for n in c.values())

    return entropy(joint) - entropy(context)


def codes_of(text: str) -> np.ndarray:
    return np.array(["ATCGN".index(c) for c in text], dtype=np.uint8)


def test_count_tables_by_hand_and_against_plain_counting():
    # by hand: train AAAA has the 3-mer AAA twice, so P(A | A_A) = (2 + 1) / (2 + 4) = 1/2; its 1-mers
    # are A four times, so P(A) = (4 + 1) / (4 + 4)
    assert base_table_loss([codes_of("AAAA")], [codes_of("AAA")], 1) == pytest.approx(math.log(2), abs=1e-12)
    assert context_free_floor([codes_of("AAAA")], [codes_of("AA")], 1) == pytest.approx(-math.log(5 / 8), abs=1e-12)
    rng = np.random.default_rng(4)
    train = ["".join(rng.choice(list("ACGT"), n)) for n in (3_000, 1_200)]
    train[1] = train[1][:500] + "NN" + train[1][502:]  # no k-mer across an N
    validation = ["".join(rng.choice(list("ACGT"), 900)) + "N" + "".join(rng.choice(list("ACGT"), 300))]
    tc, vc = [codes_of(t) for t in train], [codes_of(v) for v in validation]
    for m in (1, 2, 3):
        assert base_table_loss(tc, vc, m) == pytest.approx(plain_base_table_loss(train, validation, m), abs=1e-12)
    for k in (1, 3, 5):
        assert context_free_floor(tc, vc, k) == pytest.approx(plain_context_free(train, validation, k), abs=1e-12)
    assert overlap_reference(tc, flank=2) == pytest.approx(plain_overlap(train, 2), abs=1e-12)
    for k in (2, 3):  # k-mers every other base
        assert context_free_floor(tc, vc, k, 2) == pytest.approx(plain_context_free(train, validation, k, 2), abs=1e-12)
    # one validation 2-mer (AA): P(AA) = (3 + 1) / (3 + 16); none is refused
    assert context_free_floor([codes_of("AAAA")], [codes_of("AA")], 2) == pytest.approx(-math.log(4 / 19), abs=1e-12)
    with pytest.raises(ValueError, match="^no valid validation k-mer$"):
        context_free_floor([codes_of("AAAA")], [codes_of("NAN")], 2)


def write_prepared(path, records: list[str], validation: list[tuple[int, int, int]]) -> None:
    """A prepared directory by hand: the records one after another in one shard (every 7th base
    soft-masked: the lowercase bit, which counting ignores), the validation blocks (record, start, end)."""
    shard = np.concatenate([codes_of(r) for r in records])
    shard[::7] |= 8
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in records])[:-1]]).tolist()
    (path / "shards").mkdir(parents=True)
    (path / "shards" / "s0.bin").write_bytes(shard.tobytes())
    (path / "manifest.json").write_text(json.dumps({
        "format": FORMAT, "version": FORMAT_VERSION,
        "records": [{"name": f"r{i}", "length": len(r), "shard": "shards/s0.bin", "offset": off, "global_offset": off}
                    for i, (r, off) in enumerate(zip(records, offsets))],
        "validation": [{"record": r, "start": s, "end": e} for r, s, e in validation]}))


def test_the_floors_of_a_prepared_dataset_count_its_training_bases_only(tmp_path):
    """compute_floors on a prepared directory written by hand (two records in one shard, validation
    blocks inside and at the end, an N, soft-masked bases): every reference equals the plain counts of
    the bases outside the manifest's validation blocks, scored on those inside; counted with the
    validation bases too (a leak), none would."""
    rng = np.random.default_rng(7)
    records = ["".join(rng.choice(list("ACGT"), n)) for n in (4_000, 3_000)]
    records[0] = records[0][:2_000] + "N" + records[0][2_001:]
    validation = [(0, 1_000, 1_600), (1, 2_500, 3_000)]
    write_prepared(tmp_path, records, validation)
    train = [records[0][:1_000], records[0][1_600:], records[1][:2_500]]
    held = [records[0][1_000:1_600], records[1][2_500:]]
    assert sum(map(len, train + held)) == sum(map(len, records))  # disjoint, and every base in one of them
    floors = compute_floors(str(tmp_path), 3)
    assert floors["train_bases_used"] == 5_900 and floors["validation_bases"] == 1_100
    assert floors["context_free"] == round(plain_context_free(train, held, 3), 4)
    assert floors["overlap_per_base"] == round(plain_overlap(train, 3), 4)
    assert floors["base_table"] == {str(m): round(plain_base_table_loss(train, held, m), 4) for m in BASE_TABLE_FLANKS}
    leaked = train + held
    assert abs(floors["context_free"] - plain_context_free(leaked, held, 3)) > 1e-3
    assert abs(floors["overlap_per_base"] - plain_overlap(leaked, 3)) > 1e-3
    for m in BASE_TABLE_FLANKS:
        assert abs(floors["base_table"][str(m)] - plain_base_table_loss(leaked, held, m)) > 1e-3


def test_the_lines_a_plot_or_card_draws_are_the_references_by_hand():
    """The (value, label) lines users read beside a loss: chance, each evaluation set's lowest
    geometry-matched table (a missing m skipped), the plain table only when no geometry table exists,
    and the [MASK]-input references that exist (values typed here, unequal so a mix-up shows)."""
    from randommask.data.floors import base_lines, best_counting, best_table, floor_lines

    floors = {"k": 6, "context_free": 8.17, "eval_span_k_overlap": 1.31, "overlap_only_span_k": 8.3,
              "eval_span_2k_overlap": None, "overlap_only_span_2k": 9.7,
              "base_table": {"1": 1.37, "3": 1.30, "5": 1.33},
              "base_table_span_k": {"1": 1.36, "4": 1.29, "8": 1.291, "9": None},
              "base_table_span_2k": {"1": 1.38, "2": 1.35, "6": 1.352}}
    assert best_counting(floors, "span_k") == ("4", 1.29) and best_counting(floors, "span_2k") == ("2", 1.35)
    assert best_counting(floors, "span_3k") is None and best_counting(None, "span_k") is None
    assert best_table(floors) == ("3", 1.30) and best_table({"base_table": {"2": None}}) is None
    assert base_lines(floors) == [(1.3863, "chance (ln 4)"), (1.29, "best counting, span-k geometry (m=4)"),
                                  (1.35, "best counting, span-2k geometry (m=2)")]
    old = {"base_table": floors["base_table"]}  # floors written before the geometry tables
    assert base_lines(old) == [(1.3863, "chance (ln 4)"),
                               (1.30, "plain count table (m=3; sees bases the model does not)")]
    assert base_lines({}) == [(1.3863, "chance (ln 4)")]
    assert floor_lines(floors, "span_k") == [
        (8.17, "context-free floor (6-mer frequencies)"), (1.31, "span-k overlap reference (approx.)"),
        (8.3, "span-k overlap only (reads every visible base, knows no DNA)")]
    assert floor_lines(floors, "span_2k") == [
        (8.17, "context-free floor (6-mer frequencies)"),
        (9.7, "span-2k overlap only (reads every visible base, knows no DNA)")]
    assert floor_lines(None) == [] and floor_lines({}) == []
    assert floor_lines(floors) == floor_lines(floors, "span_k")  # the default set is span-k


FLOOR_KEYS = {"k", "stride", "context_free", "overlap_per_base", "overlap_flank_bp", "train_bases_used",
              "validation_bases", "base_table"}


def test_compute_floors_reads_through_storage_options_caps_the_training_split_and_keeps_the_stride(tmp_path):
    """Through a filesystem only its storage options make usable (fsspec's dir://, rooted by them), with
    at most 4,000 training bases (of the three training pieces, 1,000 + 2,400 + 2,500 bases, the two
    evenly spaced: the first and the last), 3-mers every other base, and an evaluation set: every
    number equals the plain counts of those pieces, and the keys are exactly these."""
    from randommask.data.floors import geometry_tables
    from randommask.data.tokenizer import kmer_ids_from_codes

    rng = np.random.default_rng(8)
    records = ["".join(rng.choice(list("ACGT"), n)) for n in (4_000, 3_000)]
    write_prepared(tmp_path / "ds", records, [(0, 1_000, 1_600), (1, 2_500, 3_000)])
    train = [records[0][:1_000], records[1][:2_500]]
    held = [records[0][1_000:1_600], records[1][2_500:]]
    windows = np.stack([codes_of(held[0][s : s + 21]) for s in range(0, 500, 50)])
    ids = torch.from_numpy(kmer_ids_from_codes(windows, 3, 2).astype(np.int64))
    ids = torch.cat([torch.full((len(ids), 1), 2), ids, torch.full((len(ids), 1), 3)], dim=1)
    labels = torch.full_like(ids, -100)
    labels[:, 4:6] = ids[:, 4:6]
    sets = {"span_k": (torch.where(labels != -100, MASK, ids), labels)}
    floors = compute_floors("dir://ds", 3, stride=2, max_train_bases=4_000, eval_sets=sets,
                            storage_options={"path": str(tmp_path), "target_protocol": "file"})
    assert set(floors) == FLOOR_KEYS | {"base_table_span_k", "best_counting_span_k"}
    assert (floors["k"], floors["stride"], floors["overlap_flank_bp"]) == (3, 2, 3)
    assert floors["train_bases_used"] == 3_500 and floors["validation_bases"] == 1_100
    assert floors["context_free"] == round(plain_context_free(train, held, 3, 2), 4)
    assert floors["overlap_per_base"] == round(plain_overlap(train, 3), 4)
    assert floors["base_table"] == {str(m): round(plain_base_table_loss(train, held, m), 4) for m in BASE_TABLE_FLANKS}
    geometry = geometry_tables([codes_of(t) for t in train], sets, 3, 2)
    assert floors["base_table_span_k"] == geometry["base_table_span_k"]
    assert floors["best_counting_span_k"] == geometry["best_counting_span_k"]


@pytest.mark.parametrize(("block", "stride", "has_context_free", "has_tables"), [
    ("NAAA", 2, False, False),  # 3-mers every 2 bases: only NAA, holding an N (AAA starts at base 1)
    ("ACGTACG", 1, True, False),  # 3-mers, but no 9-mer (m = 4 bases each side)
    ("ACGTACGTA", 1, True, True),  # one 9-mer
])
def test_a_reference_the_validation_bases_cannot_score_is_none(tmp_path, block, stride, has_context_free, has_tables):
    rng = np.random.default_rng(9)
    record = "".join(rng.choice(list("ACGT"), 1_000)) + block + "".join(rng.choice(list("ACGT"), 1_000))
    write_prepared(tmp_path, [record], [(0, 1_000, 1_000 + len(block))])
    train = [record[:1_000], record[1_000 + len(block) :]]
    floors = compute_floors(str(tmp_path), 3, stride=stride)
    assert set(floors) == FLOOR_KEYS
    want = round(plain_context_free(train, [block], 3, stride), 4) if has_context_free else None
    assert floors["context_free"] == want
    want = {str(m): round(plain_base_table_loss(train, [block], m), 4) for m in BASE_TABLE_FLANKS} if has_tables else None
    assert floors["base_table"] == want


def test_kmer_counts_skip_a_piece_shorter_than_k_and_count_the_pieces_after_it():
    from randommask.data.floors import kmer_counts

    counts = kmer_counts([codes_of("AT"), codes_of("AAAA"), codes_of("N"), codes_of("TTA")], 3)
    want = np.zeros(4**3, dtype=np.int64)
    want[0] = 2  # AAA twice (A = 0)
    want[1 * 16 + 1 * 4 + 0] = 1  # TTA once (T = 1, first base most significant)
    np.testing.assert_array_equal(counts, want)


def test_a_training_cap_under_one_piece_keeps_the_first_piece_alone(tmp_path):
    """Three training pieces (1,000 + 2,400 + 2,500 bases) capped at 1,000 bases: int(3 * 1,000 / 5,900)
    is 0, so one piece is read, the first."""
    from randommask.data.floors import split_codes

    rng = np.random.default_rng(10)
    records = ["".join(rng.choice(list("ACGT"), n)) for n in (4_000, 3_000)]
    write_prepared(tmp_path, records, [(0, 1_000, 1_600), (1, 2_500, 3_000)])
    pieces = split_codes(str(tmp_path), "train", 1_000)
    assert len(pieces) == 1
    np.testing.assert_array_equal(pieces[0], codes_of(records[0][:1_000]))


def test_hidden_bases_count_what_a_random_token_an_unk_or_the_window_start_does_not_show():
    """k = 6, token t covers bases t - 1 .. t + 4 (values worked out by hand)."""
    k = 6
    ids = torch.arange(NUM_SPECIAL + 1, NUM_SPECIAL + 31)[None].clone()
    labels = torch.full_like(ids, -100)
    span = slice(10, 16)  # hides base 14 alone
    labels[0, span] = ids[0, span]
    inputs = torch.where(labels != -100, MASK, ids)
    # a random replacement shows nothing: as if masked
    random = inputs.clone()
    random[0, 12] = ids[0, 12] + 7
    assert hidden_bases(random, labels, k)[0].tolist() == [0] * 10 + [1] * 6 + [0] * 14
    # the all-A k-mer (id NUM_SPECIAL) is a k-mer like any other: unselected, it shows its bases
    all_a = inputs.clone()
    all_a[0, 9] = NUM_SPECIAL
    assert hidden_bases(all_a, labels, k)[0].tolist() == [0] * 10 + [1] * 6 + [0] * 14
    # an unselected [UNK] at token 9 shows nothing: bases 13 and 14 are hidden; it is not labelled, so 0
    unk = inputs.clone()
    unk[0, 9] = 1
    assert hidden_bases(unk, labels, k)[0].tolist() == [0] * 10 + [2, 2, 2, 2, 2, 1] + [0] * 14
    # a span at the window's start: tokens 1-6 hide bases 0-5; token 1 covers 0-5, token 6 covers 5-10
    start = torch.full_like(ids, -100)
    start[0, 1:7] = ids[0, 1:7]
    h = hidden_bases(torch.where(start != -100, MASK, ids), start, k)
    assert h[0].tolist() == [0, 6, 5, 4, 3, 2, 1] + [0] * 23


def test_visible_bases_by_hand_with_the_default_stride():
    from randommask.data.floors import visible_bases

    shows = torch.tensor([[False, False, False, True, False, False], [True, True, False, False, False, True]])
    # 3-mers every base (the default): 6 tokens, 6 bases; token 3 covers bases 2-4; token 0 ([CLS]) none,
    # token 1 bases 0-2, token 5 ([SEP]'s place) bases 4-5 (clipped at the window's end)
    assert visible_bases(shows, 3).tolist() == [[False, False, True, True, True, False],
                                               [True, True, True, False, True, True]]


def test_visible_bases_stay_on_the_device_of_their_input():
    """The training calls it on the accelerator's tensors (training.baseloss); the meta device stands in
    for one here: a part built on the CPU would fail or move the result there. (The first meta
    operation of a process costs about a second: torch loads its meta kernels.)"""
    from randommask.data.floors import visible_bases

    shows = torch.tensor([[False, True, False, True, True, False]], device="meta")
    assert visible_bases(shows, 3).device.type == "meta"
