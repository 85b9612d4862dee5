"""`make test`'s runner (tests/streams.py): the suite's exit status from its two tiers', and the unit
tier's scheduling policy."""

import os
import subprocess
import sys

from conftest import REPO

sys.path.insert(0, str(REPO / "tests"))  # the runner is a script there, not a package module
from streams import NO_TESTS, idle_policy, status  # noqa: E402


def test_the_exit_status_is_the_first_failing_tiers_and_no_tests_selected_passes_beside_tests():
    assert status([0, 0]) == 0
    assert status([NO_TESTS, 0]) == 0 and status([0, NO_TESTS]) == 0  # -k selected tests in one tier only
    assert status([NO_TESTS, NO_TESTS]) == NO_TESTS  # nothing selected anywhere is not a pass
    assert status([1, 0]) == 1 and status([0, 1]) == 1 and status([2, 1]) == 2 and status([NO_TESTS, 1]) == 1


def test_the_unit_tier_runs_under_sched_idle():
    """What the runner applies in the child before pytest starts (inherited by what it starts)."""
    code = "import os; print(os.sched_getscheduler(0))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         preexec_fn=idle_policy)
    assert out.returncode == 0 and int(out.stdout) == os.SCHED_IDLE, out.stderr
