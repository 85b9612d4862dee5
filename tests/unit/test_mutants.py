"""The report of `make mutants` (randommask.tools.mutants): where each survivor is and the score per module.
mutmut itself is not needed here; its diffs are made the way it makes them (a unified diff of one function)."""

from __future__ import annotations

from difflib import unified_diff

from randommask.tools.mutants import MODULES, Mutant, function_of, locate, markdown, mutmut_table

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
    assert f"| {MODULES[0]} | 5 | 1 | 1 | 1 | 1 | 1 | 50.0% |" in text
    assert f"| {MODULES[1]} | 1 | 1 | 0 | 0 | 0 | 0 | 100.0% |" in text
    assert "| **all** | 6 | 2 | 1 | 1 | 1 | 1 | 60.0% |" in text
    assert f"| {MODULES[0]}:7 | survived | `x < 1` | `x <= 1` | c |" in text
    assert "Survivors (2):" in text and "| f |" not in text


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
