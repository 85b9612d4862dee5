"""Zero-shot scoring of held-out bases (inference.zeroshot, inference.centre): both strands give one
answer on either strand of the genome, positions are drawn reproducibly and avoid N, and the count
tables score what their counts say. The command on a pretrained model is in
tests/integration/test_inference.py."""

import math

import numpy as np
import pytest

from randommask.data.tokenizer import reverse_complement_codes
from randommask.inference.zeroshot import draw_positions, model_log_p_ref, table_log_p_ref


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
