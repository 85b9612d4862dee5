"""Zero-shot scoring of held-out bases (inference.zeroshot, inference.centre): both strands give one
answer on either strand of the genome, positions are drawn reproducibly and avoid N, and the count
tables score what their counts say. The command on a pretrained model is in
tests/integration/test_inference.py."""

import math

import numpy as np
import pytest

from randommask.data.tokenizer import reverse_complement_codes
from randommask.inference.zeroshot import draw_positions, model_log_p_ref, standing, table_log_p_ref


@pytest.fixture(scope="module")
def checkpoint(sharp_checkpoint):
    return str(sharp_checkpoint)


def test_both_strands_give_one_answer_on_either_strand_of_the_genome(checkpoint):
    windows = np.random.default_rng(0).integers(0, 4, (64, 23)).astype(np.uint8)
    rc = reverse_complement_codes(windows)
    both, forward = model_log_p_ref(checkpoint, windows, "both", 16, 1, None)
    both_rc, forward_rc = model_log_p_ref(checkpoint, rc, "both", 16, 1, None)
    np.testing.assert_allclose(both, both_rc, atol=1e-5)  # the same base, seen from the other strand
    assert np.abs(forward - forward_rc).max() > 1e-3  # one strand alone is not symmetric
    only, _ = model_log_p_ref(checkpoint, windows, "forward", 16, 1, None)
    np.testing.assert_allclose(only, forward, atol=1e-9)
    assert (both < 0).all()


def test_positions_are_seeded_distinct_and_free_of_n():
    rng = np.random.default_rng(0)
    pieces = [rng.integers(0, 4, 300).astype(np.uint8), rng.integers(0, 4, 10).astype(np.uint8)]
    pieces[0][100] = 4  # an N
    a, b = draw_positions(pieces, 50, 5, seed=3), draw_positions(pieces, 50, 5, seed=3)
    assert a.shape == (50, 11) and np.array_equal(a, b) and (a < 4).all()
    assert not np.array_equal(a, draw_positions(pieces, 50, 5, seed=4))
    assert len(draw_positions(pieces, 10_000, 5, seed=0)) == 300 - 10 - 11  # every N-free window, once
    assert len(draw_positions([pieces[1]], 5, 5, seed=0)) == 0  # shorter than a window


def test_the_tables_score_what_their_counts_say():
    # zero-shot's tables are the back-off tables of the centre base, every other base of the window
    # visible: checked against the plain dict implementation, m = 1..10 capped at the window's half
    from randommask.data.counting import Queries
    from unit.test_counting import slow_log_probs

    rng = np.random.default_rng(1)
    train = [rng.integers(0, 4, 3_000).astype(np.uint8)]
    windows = rng.integers(0, 4, (30, 9)).astype(np.uint8)
    got = table_log_p_ref(train, windows)
    assert set(got) == {str(m) for m in range(1, 11)}
    want = slow_log_probs(train, Queries.centred(windows), (1, 2, 3, 4))
    for m in range(1, 11):
        np.testing.assert_allclose(got[str(m)], want[min(m, 4)][np.arange(30), windows[:, 4]], rtol=0, atol=1e-9)
    assert abs(got["1"].mean() + math.log(4)) < 0.1  # random DNA: about chance


def test_every_n_free_window_is_drawn_once_in_genome_order_from_pieces_of_any_length():
    # by hand: piece 0 (shorter than a window, first) holds none; piece 1 is exactly one window;
    # piece 2 (8 bases, an N at 5) holds the windows starting at 0, 1 and 2 only (3..5 cover the N)
    half = 1
    pieces = [np.array([0, 1], np.uint8), np.array([3, 2, 1], np.uint8),
              np.array([0, 1, 2, 3, 0, 4, 1, 2], np.uint8), np.array([2, 2, 3], np.uint8)]
    got = draw_positions(pieces, 100, half, seed=0)
    want = [[3, 2, 1], [0, 1, 2], [1, 2, 3], [2, 3, 0], [2, 2, 3]]
    assert got.dtype == np.uint8 and got.tolist() == want  # each once (no replacement), in order
    assert len(draw_positions(pieces, 3, half, seed=0)) == 3


def test_pieces_whose_every_window_holds_an_n_give_no_window_of_the_right_shape():
    none = draw_positions([np.array([0, 1, 4, 2, 3], np.uint8), np.array([4, 0, 1], np.uint8)], 5, 1, seed=0)
    assert none.shape == (0, 3) and none.dtype == np.uint8
    empty = draw_positions([], 5, 2, seed=0)
    assert empty.shape == (0, 5) and empty.dtype == np.uint8


def test_one_window_scores_as_it_does_in_a_batch(checkpoint):
    windows = np.random.default_rng(2).integers(0, 4, (3, 23)).astype(np.uint8)
    both, forward = model_log_p_ref(checkpoint, windows, "both", 2, 1, None)  # batches of 2 and 1
    one, one_forward = model_log_p_ref(checkpoint, windows[1:2], "both", 16, 1, None)
    np.testing.assert_allclose(one, both[1:2], atol=1e-6)
    np.testing.assert_allclose(one_forward, forward[1:2], atol=1e-6)


def test_the_checkpoint_loads_as_the_masked_lm_on_the_cpu_with_the_users_threads_and_storage(monkeypatch):
    from randommask.inference import runtime

    seen = {}

    def load_model(checkpoint, kind, gpu, threads, storage_options=None):
        seen.update(checkpoint=checkpoint, kind=kind, gpu=gpu, threads=threads, storage_options=storage_options)
        raise RuntimeError("stop here")

    monkeypatch.setattr(runtime, "load_model", load_model)
    opts = {"key": "k"}
    with pytest.raises(RuntimeError, match="stop here"):
        model_log_p_ref("s3://b/ckpt", np.zeros((1, 9), np.uint8), "both", 4, 3, opts)
    assert seen["checkpoint"] == "s3://b/ckpt" and seen["threads"] == 3 and seen["storage_options"] is opts
    assert seen["kind"] != "encoder" and not seen["gpu"]


def _result(mean, vs, vs_sem, best_value=-1.2):
    return {"mean_log_p_ref": mean, "sem": 0.0123, "n": 42, "chance": -1.38629, "best_table": "3",
            "tables": {"1": -1.37, "3": best_value, "5": -1.25}, "vs_best_table": vs, "vs_best_table_sem": vs_sem}


def test_the_standing_line_reads_between_chance_and_the_best_table():
    # by hand: (-1.25 - -1.38629) / (-1.2 - -1.38629) = 0.13629 / 0.18629 = 73.2%
    line = standing(_result(-1.25, 0.05, 0.02))
    assert line == ("mean log P(ref) -1.2500 ± 0.0123 (n=42): 73% of the way from chance (-1.3863) to the best "
                    "count table (-1.2000, 3 base(s) each side); +0.0500 ± 0.0200 vs that table: above the best table")
    assert line.endswith("+0.0500 ± 0.0200 vs that table: above the best table")
    # the verdict: beyond two standard errors either side, else at the table's level (2 sem exactly: at)
    verdict = {vs: standing(_result(-1.25, vs, 0.02)).rsplit(": ", 1)[1]
               for vs in (0.05, 0.041, 0.04, 0.039, 0.0, -0.039, -0.04, -0.041, -0.05)}
    assert verdict == {0.05: "above the best table", 0.041: "above the best table", 0.04: "at the best table's level",
                       0.039: "at the best table's level", 0.0: "at the best table's level",
                       -0.039: "at the best table's level", -0.04: "at the best table's level",
                       -0.041: "below the best table", -0.05: "below the best table"}
    # sem 0.5 tells 2 * sem (1.0) from 2 / sem (4.0) and 3 * sem (1.5)
    assert standing(_result(-1.25, 1.2, 0.5)).endswith("above the best table")
    assert standing(_result(-1.25, -1.2, 0.5)).endswith("below the best table")
    assert standing(_result(-1.30, -0.01, 0.0)).split(": ")[1].startswith("46% of the way")  # 0.08629 / 0.18629 = 0.463
    # a best table at chance leaves the fraction undefined
    assert ": nan% of the way from chance (-1.3863) to the best count table (-1.3863," in standing(
        _result(-1.25, 0.05, 0.02, best_value=-1.38629))
