"""The report of `make mutants` (randommask.tools.mutants): where each survivor is and the score per module.
mutmut itself is not needed here; its diffs are made the way it makes them (a unified diff of one function)."""

from __future__ import annotations

from difflib import unified_diff

from randommask.tools.mutants import MODULES, mutmut_table
from randommask.tools.mutants_report import Explanation, Mutant, explain, function_of, locate, markdown, unused

SOURCE = '''"""A module."""


def helper(x):
    x = x + 1
    x = x + 1
    return x


class Table:
    @staticmethod
    def score(a, b):
        total = a * b
        if total > 10:
            return total - 10
        return total
'''


def _mutmut_diff(original_function: str, mutated_function: str) -> str:
    """As mutmut's ``get_diff_for_mutant``: the function (decorators included) against its mutant."""
    return "\n".join(unified_diff(original_function.split("\n"), mutated_function.split("\n"),
                                  fromfile="m.py", tofile="m.py", lineterm=""))


def test_function_names_come_back_from_mutmut_names():
    assert function_of("randommask.data.counting.x_count_tables__mutmut_12") == "count_tables"
    assert function_of("randommask.inference.centre.xǁTableǁscore__mutmut_3") == "Table.score"


def test_a_survivor_is_located_on_its_line_in_the_original_file():
    lines = SOURCE.splitlines()
    method = "\n".join(lines[10:16])  # "@staticmethod" .. "return total"
    mutated = method.replace("if total > 10:", "if total >= 10:")
    line, before, after = locate(SOURCE, "Table.score", _mutmut_diff(method, mutated))
    assert (line, before, after) == (14, "if total > 10:", "if total >= 10:")
    assert lines[13].strip() == "if total > 10:"
    # the second of two equal lines: found by its place in the diff, not by its text
    func = "\n".join(lines[3:7])
    second = func.rpartition("x = x + 1")
    assert locate(SOURCE, "helper", _mutmut_diff(func, second[0] + "x = x - 1" + second[2])) == (6, "x = x + 1", "x = x - 1")


def test_the_score_counts_timeouts_as_killed_untested_as_alive_and_leaves_out_what_was_not_run():
    ms = [Mutant("a", MODULES[0], "killed"), Mutant("b", MODULES[0], "timeout"),
          Mutant("c", MODULES[0], "survived", 7, "x < 1", "x <= 1"), Mutant("d", MODULES[0], "no tests", 9, "y", "z"),
          Mutant("f", MODULES[0], "not checked", 11, "u", "v"), Mutant("e", MODULES[1], "killed")]
    text = markdown(ms, MODULES[:2])
    # by hand: module 0 ran 4 of its 5 (f never ran), 2 caught: 50%; in all 3 caught of 5 run: 60%
    assert f"| {MODULES[0]} | 5 | 1 | 1 | 1 | 1 | 1 | 50.0% | 0 of 2 |" in text
    assert f"| {MODULES[1]} | 1 | 1 | 0 | 0 | 0 | 0 | 100.0% | 0 of 0 |" in text
    assert "| **all** | 6 | 2 | 1 | 1 | 1 | 1 | 60.0% | 0 of 2 |" in text
    assert f"| {MODULES[0]}:7 | survived | `x < 1` | `x <= 1` | c | **unexplained** |" in text
    assert "Survivors (2; unexplained: 2):" in text and "| f |" not in text


def test_the_staged_configuration_names_every_module_and_only_unit_tests():
    table = mutmut_table()
    assert all(f'"randommask/{m}"' in table for m in MODULES)
    assert "tests/integration" not in table and '"tests/unit/test_counting.py"' in table


def test_focus_patterns_select_the_number_functions_and_whole_modules():
    from randommask.tools.mutants import patterns, selected

    assert patterns(("data/counting.py",)) == ["randommask.data.counting.*"]
    assert patterns(("inference/variants.py",)) == ["randommask.inference.variants.x_windows__mutmut_*",
                                                    "randommask.inference.variants.xǁScorerǁ__call____mutmut_*"]
    assert selected("randommask.inference.variants.xǁScorerǁ__call____mutmut_12", "inference/variants.py")
    assert not selected("randommask.inference.variants.x_score_variants__mutmut_3", "inference/variants.py")
    assert not selected("randommask.inference.variants.x_windows_of__mutmut_3", "inference/variants.py")
    assert selected("randommask.data.counting.xǁBackoffTableǁ_count__mutmut_1", "data/counting.py")


def test_an_explanation_covers_survivors_by_module_function_and_text_and_the_unexplained_come_first():
    m = "data/counting.py"
    ms = [Mutant("randommask.data.counting.x__pack__mutmut_1", m, "survived", 3, "a = np.zeros(n, dtype=np.int64)", "a = np.zeros(n, dtype=None)"),
          Mutant("randommask.data.counting.x_other__mutmut_1", m, "survived", 5, "b = np.zeros(n, dtype=np.int64)", "b = np.zeros(n, dtype=None)"),
          Mutant("randommask.data.counting.x__pack__mutmut_2", m, "no tests", 4, "if by > 0:", "if by >= 0:"),
          Mutant("randommask.data.counting.x__pack__mutmut_3", m, "killed")]
    entries = [Explanation(m, "dtype=np.int64", "int64 is numpy's default here", function="_pack", after="dtype=None"),
               Explanation("*", "never matches", "stale"), Explanation("inference/embed.py", "x", "not run here")]
    out = explain(ms, entries)
    assert [x.why for x in out] == ["int64 is numpy's default here", "", "", ""]  # the function narrows it
    assert unused(out, entries, (m,)) == [entries[1]]  # embed.py did not run: its entry is not stale here
    text = markdown(out, (m,), stale=unused(out, entries, (m,)))
    assert f"| {m} | 4 | 1 | 0 | 2 | 1 | 0 | 25.0% | 1 of 3 |" in text
    rows = [r for r in text.splitlines() if r.startswith(f"| {m}:")]
    assert [r.split(" | ")[0] for r in rows] == [f"| {m}:5", f"| {m}:4", f"| {m}:3"]  # unexplained first
    assert "Survivors (3; unexplained: 2):" in text and "cover no survivor of this run (1;" in text


def test_a_survivors_rerun_is_refused_once_the_source_changed(tmp_path):
    import json

    import pytest

    from randommask.errors import UserError
    from randommask.tools.mutants import LAST, fingerprint, last_survivors

    pkg = tmp_path / "platform" / "randommask" / "data"
    pkg.mkdir(parents=True)
    (pkg / "counting.py").write_text("x = 1\n")
    status = {"randommask.data.counting.x_f__mutmut_1": "survived", "randommask.data.counting.x_f__mutmut_2": "killed",
              "randommask.data.floors.x_g__mutmut_1": "survived"}
    (tmp_path / LAST).parent.mkdir()
    (tmp_path / LAST).write_text(json.dumps({"modules": {"data/counting.py": fingerprint(tmp_path / "platform" / "randommask",
                                                                                          "data/counting.py")}, "status": status}))
    names, previous = last_survivors(tmp_path, ("data/counting.py",))
    assert names == ["randommask.data.counting.x_f__mutmut_1"] and previous == status
    (pkg / "counting.py").write_text("x = 2\n")
    with pytest.raises(UserError, match="has changed since its last run"):
        last_survivors(tmp_path, ("data/counting.py",))


def test_a_run_replaces_what_was_known_of_its_modules_and_keeps_the_others(tmp_path):
    import json

    from randommask.tools.mutants import LAST, PACKAGE, remember

    work = tmp_path / "work"
    (work / PACKAGE / "data").mkdir(parents=True)
    (work / PACKAGE / "data" / "counting.py").write_text("x = 2\n")
    (tmp_path / LAST).parent.mkdir()
    (tmp_path / LAST).write_text(json.dumps({"modules": {}, "status": {
        "randommask.data.counting.x_gone__mutmut_1": "survived",  # of a function the new source no longer has
        "randommask.data.counting.x_f__mutmut_1": "survived", "randommask.data.floors.x_g__mutmut_1": "survived"}}))
    remember(tmp_path, work, ("data/counting.py",), [Mutant("randommask.data.counting.x_f__mutmut_1", "data/counting.py", "killed")])
    last = json.loads((tmp_path / LAST).read_text())
    assert last["status"] == {"randommask.data.counting.x_f__mutmut_1": "killed",
                              "randommask.data.floors.x_g__mutmut_1": "survived"}
    assert list(last["modules"]) == ["data/counting.py"] and not list(tmp_path.glob("build/*.tmp"))
