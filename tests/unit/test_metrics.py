"""The metrics processor alone (one rank, CPU, no Ray): the line it builds has exactly the keys named
in training.metrics, with sums over the interval, and what goes to Ray adds this rank's figures."""

import torch

from randommask.training.checkpointer import TrainState
from randommask.training.metrics import LINE_KEYS, REPORT_KEYS, MetricsProcessor


def step_out(loss: float) -> dict:
    return {"loss": loss, "correct": 3.0, "selected": 10.0, "mask_loss_sum": 8.0, "mask_correct": 2.0,
            "mask_selected": 4.0, "tokens": 100, "wait": 0.0, "lr": 1e-3, "crc": 7}


def test_the_line_has_the_named_keys_and_the_intervals_sums():
    state = TrainState()
    m = MetricsProcessor("t", 0, 1, torch.device("cpu"), state)
    m.start(0)
    for loss in (1.0, 3.0):
        m.add(step_out(loss))
    line, overdue = m.collect(2, 0, (6, 8), checkpoint_overdue=True)
    assert tuple(line) == LINE_KEYS and overdue
    assert line["loss"] == 2.0 and line["acc"] == 0.3 and line["mask_loss"] == 2.0 and line["mask_acc"] == 0.5
    assert line["tokens"] == state.tokens == 200 and (line["span_min"], line["span_max"]) == (6, 8)
    report = m.publish(line, full=True, param_checksum=lambda: 1.5)
    assert state.history == [line] and set(report) - set(line) == set(REPORT_KEYS) - {"gpu_memory_bytes"}
    assert m.publish(line, full=False) is line
    m.add(step_out(5.0))  # the window restarts after each line
    assert m.collect(3, 0, (6, 8), checkpoint_overdue=False)[0]["loss"] == 5.0
