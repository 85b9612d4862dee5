"""Progress output: bars on a terminal, plain lines in logs."""

import io
import os

from randommask.common.progress import PlainProgress, progress


def test_plain_lines_in_a_log_and_a_bar_on_a_terminal():
    log = io.StringIO()
    bar = progress(300, "attention", "windows", every=0.0, stream=log)
    assert isinstance(bar, PlainProgress)
    for _ in range(3):
        bar.update(100)
    bar.close()
    lines = log.getvalue().splitlines()
    assert lines == ["attention: 100/300 windows", "attention: 200/300 windows", "attention: 300/300 windows"]
    assert "\r" not in log.getvalue()

    quiet = io.StringIO()
    bar = progress(None, "prepare", "bp", every=3600.0, stream=quiet, unit_scale=True)
    bar.update(4_938_920)
    bar.set_postfix_str("1/1 files")
    bar.close()
    assert quiet.getvalue() == ""  # nothing within the interval: a short command prints no progress at all

    scaled = PlainProgress(None, "prepare", "bp", 0.0, io.StringIO(), unit_scale=True)
    scaled.set_postfix_str("1/3 files")
    scaled.update(4_938_920)
    assert scaled.stream.getvalue() == "prepare: 4.94M bp (1/3 files)\n"

    off = progress(10, "x", "y", show=False, stream=log)
    off.update(5)
    assert off.n == 5

    main, child = os.openpty()  # a real terminal: tqdm's bar
    with os.fdopen(child, "w") as tty:
        bar = progress(10, "prepare", "bp", stream=tty)
        assert type(bar).__name__ == "tqdm"
        bar.close()
    os.close(main)

