"""The report of ``make mutants`` (``randommask.tools.mutants``): every mutant of a finished run, where each
survivor is and what it changed, the score per module, and each survivor's explanation from
``tests/mutants-explained.toml`` (a survivor no test should kill: an equivalent change, or one that no
user-visible number can show).

This module imports mutmut only to read a finished run's diffs, inside ``collect``.
"""

from __future__ import annotations

import ast
import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import tomllib

from randommask.errors import UserError

PACKAGE = "randommask"
DEAD = ("killed", "timeout", "caught by type check")  # mutmut's statuses of a mutant the tests caught
NOT_RUN = "not checked"  # mutmut's status of a mutant a stopped run never reached
EXPLAINED = Path("tests") / "mutants-explained.toml"


@dataclass(frozen=True)
class Mutant:
    """One mutant of a finished run: ``name`` as mutmut knows it, ``module`` (e.g. data/counting.py),
    its ``status``, where it is (``line`` in the original file), what it changed, and ``why`` it may
    survive (from the explanations file; empty if none applies)."""

    name: str
    module: str
    status: str
    line: int | None = None
    before: str = ""
    after: str = ""
    why: str = ""

    @property
    def alive(self) -> bool:
        return self.status not in DEAD and self.status != NOT_RUN


@dataclass(frozen=True)
class Explanation:
    """Why survivors of one kind are left alive: those of ``module`` ("*": any), of ``function`` if set
    ("f" or "Class.f"), whose original line holds ``before`` and whose mutated line holds ``after``
    (if set)."""

    module: str
    before: str
    why: str
    function: str = ""
    after: str = ""

    def covers(self, m: Mutant) -> bool:
        return (self.module in ("*", m.module) and (not self.function or self.function == function_of(m.name))
                and self.before in m.before and self.after in m.after)


def explanations(path: Path) -> list[Explanation]:
    """The entries of the explanations file (none if it does not exist)."""
    if not path.exists():
        return []
    try:
        entries = tomllib.loads(path.read_text()).get("explained", [])
        out = [Explanation(**entry) for entry in entries]
    except (tomllib.TOMLDecodeError, TypeError) as e:
        raise UserError(f"{path}: {e}; each [[explained]] needs module, before and why "
                        "(function and after optional)") from None
    for e in out:
        if not e.why.strip() or not e.before:
            raise UserError(f"{path}: an entry for {e.module} has an empty 'before' or 'why'; say what and why")
    return out


def explain(mutants: list[Mutant], entries: list[Explanation]) -> list[Mutant]:
    """``mutants`` with each survivor's ``why`` filled from the first entry that covers it."""
    out = []
    for m in mutants:
        if m.alive:
            hit = next((e for e in entries if e.covers(m)), None)
            m = replace(m, why=hit.why) if hit else m
        out.append(m)
    return out


def unused(mutants: list[Mutant], entries: list[Explanation], modules: tuple[str, ...]) -> list[Explanation]:
    """Entries for the modules run that cover no survivor: stale (the code or a test changed), to remove."""
    live = [m for m in mutants if m.alive]
    return [e for e in entries if (e.module == "*" or e.module in modules) and not any(e.covers(m) for m in live)]


def _function_start(tree: ast.Module, name: str) -> int | None:
    """The first line (decorators included) of function ``name`` ("f" or "Class.f") in ``tree``."""
    cls, _, func = name.rpartition(".")
    for node in ast.walk(tree):
        if cls and isinstance(node, ast.ClassDef) and node.name == cls:
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name == func:
                    return min([item.lineno] + [d.lineno for d in item.decorator_list])
        elif not cls and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == func:
            return min([node.lineno] + [d.lineno for d in node.decorator_list])
    return None


def function_of(mutant_name: str) -> str:
    """The original function of a mutmut mutant name: "f" or "Class.f"
    (``randommask.m.x_f__mutmut_3``, ``randommask.m.xǁClassǁf__mutmut_3``)."""
    mangled = mutant_name.rpartition(".")[2].partition("__mutmut_")[0]
    if mangled.startswith("xǁ"):
        _, cls, func = mangled.split("ǁ")
        return f"{cls}.{func}"
    return mangled[2:]


def locate(source: str, function: str, diff: str) -> tuple[int | None, str, str]:
    """(line in ``source``, the line before, the line after) of a one-function unified ``diff`` (mutmut's,
    which starts at the function's first line). Where the offset does not land on the removed text, the
    text is searched for from the function's start."""
    lines = source.splitlines()
    start = _function_start(ast.parse(source), function)
    removed = [x[1:] for x in diff.splitlines() if x.startswith("-") and not x.startswith("---")]
    added = [x[1:] for x in diff.splitlines() if x.startswith("+") and not x.startswith("+++")]
    before, after = (removed[0].strip() if removed else ""), (added[0].strip() if added else "")
    if start is None or not removed:
        return None, before, after
    hunk = re.search(r"^@@ -(\d+)", diff, re.M)
    offset = 0
    if hunk:  # the hunk's first line, then the context lines before the first removed one
        body = diff[hunk.end():].split("\n")[1:]
        first = next(i for i, x in enumerate(body) if x.startswith("-"))
        offset = int(hunk.group(1)) - 1 + sum(1 for x in body[:first] if not x.startswith("+"))
    guess = start + offset
    if 0 < guess <= len(lines) and lines[guess - 1].strip() == removed[0].strip():
        return guess, before, after
    for i in range(start - 1, len(lines)):
        if lines[i].strip() == removed[0].strip():
            return i + 1, before, after
    return None, before, after


def collect(work: Path, modules: tuple[str, ...], keep: Callable[[str, str], bool],
            previous: dict[str, str] | None = None) -> list[Mutant]:
    """Every mutant of the last run in ``work`` that ``keep(name, module)`` selects, with where it is and
    what it changed unless caught. A mutant this run did not reach takes its status from ``previous``
    (a run of the last run's survivors only)."""
    out: list[Mutant] = []
    status_of, diff_of = _mutmut(work)
    for module in modules:
        meta = work / "mutants" / PACKAGE / (module + ".meta")
        if not meta.exists():
            raise UserError(f"{meta}: no results; run `make mutants` first")
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        source = (work / PACKAGE / module).read_text()
        for name, code in sorted(codes.items(), key=lambda kv: _natural(kv[0])):
            if not keep(name, module):
                continue
            status = status_of[code]
            if status == NOT_RUN and previous and name in previous:
                status = previous[name]
            if status in DEAD:
                out.append(Mutant(name, module, status))
                continue
            line, before, after = locate(source, function_of(name), diff_of(name, PACKAGE + "/" + module))
            out.append(Mutant(name, module, status, line, before, after))
    return out


def _natural(name: str) -> tuple[str, int]:
    stem, _, n = name.rpartition("__mutmut_")
    return stem, int(n) if n.isdigit() else 0


def _mutmut(work: Path):
    """mutmut's own names of its exit codes, and its diff of one mutant against its function (read from
    the run's files in ``work``)."""
    os.chdir(work)  # mutmut reads its configuration and files relative to the working directory
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    from mutmut.stats import status_by_exit_code

    return status_by_exit_code, lambda name, path: get_diff_for_mutant(name, path=path)


def markdown(mutants: list[Mutant], modules: tuple[str, ...], wall: str | None = None,
             stale: list[Explanation] = ()) -> str:
    """The score per module and the survivors (the unexplained first), as the tables in docs/testing.md."""
    rows = ["| module | mutants | killed | timeout | survived | no tests | not run | score | explained |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    total = dict.fromkeys("nktsure", 0)
    for module in modules:
        ms = [m for m in mutants if m.module == module]
        n, t, u = len(ms), sum(m.status == "timeout" for m in ms), sum(m.status == "no tests" for m in ms)
        r = sum(m.status == NOT_RUN for m in ms)  # a run stopped early: neither caught nor missed
        k = sum(m.status in DEAD for m in ms) - t
        s = n - k - t - u - r
        e = sum(bool(m.alive and m.why) for m in ms)
        for key, v in zip("nktsure", (n, k, t, s, u, r, e)):
            total[key] += v
        rows.append(f"| {module} | {n} | {k} | {t} | {s} | {u} | {r} | {_score(k + t, n - r)} | {e} of {s + u} |")
    rows.append(f"| **all** | {total['n']} | {total['k']} | {total['t']} | {total['s']} | {total['u']} | "
                f"{total['r']} | {_score(total['k'] + total['t'], total['n'] - total['r'])} | "
                f"{total['e']} of {total['s'] + total['u']} |")
    live = [m for m in mutants if m.alive]
    live.sort(key=lambda m: bool(m.why))  # stable: the unexplained first, each group in file order
    bare = sum(not m.why for m in live)
    out = ["Score = (killed + timed out) / mutants run (a stopped run leaves some not run)." + (f" Wall time: {wall}." if wall else ""),
           "", *rows, "", f"Survivors ({len(live)}; unexplained: {bare}):", "",
           "| where | status | before | after | mutant | why it may live |", "|---|---|---|---|---|---|"]
    for m in live:
        where = f"{m.module}:{m.line}" if m.line else m.module
        out.append(f"| {where} | {m.status} | `{_cell(m.before)}` | `{_cell(m.after)}` | "
                   f"{m.name.rpartition('.')[2]} | {_cell(m.why, 400) if m.why else '**unexplained**'} |")
    if stale:
        out += ["", f"Explanations that cover no survivor of this run ({len(stale)}; remove them from {EXPLAINED}):", ""]
        out += [f"- {e.module} {e.function} `{_cell(e.before)}` → `{_cell(e.after)}`" for e in stale]
    return "\n".join(out) + "\n"


def _score(killed: int, n: int) -> str:
    return f"{100 * killed / n:.1f}%" if n else "-"


def _cell(text: str, width: int = 90) -> str:
    return text.replace("|", "\\|").replace("`", "'")[:width]

