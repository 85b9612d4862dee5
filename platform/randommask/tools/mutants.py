"""Mutation testing (``make mutants``, docs/testing.md) of the modules that compute the numbers users
read, against the unit tests that cover them; the integration tier (Ray) is left out.

    make mutants                                          # stage, run mutmut, print the score and survivors
    python -m randommask.tools.mutants report             # print them again from the last run

mutmut 3 (pinned in the Makefile, installed on demand) copies the sources to ``mutants/``, runs the
selected tests once to learn which tests reach which function, then runs only those tests against
each mutant. It puts ``mutants/`` (or its ``src/``) first on ``sys.path`` and names mutants after
their path, so it expects the package at the top of the folder it runs in; here it sits under
``platform/``. So the run happens in a staging folder outside the source tree (``build/mutants/``,
git-ignored, rebuilt on every run) holding copies of ``platform/randommask`` and ``tests/``, the
project's pyproject.toml with a ``[tool.mutmut]`` table added, and a link to ``../shared`` (the real
data, which ``tests/conftest.py`` finds beside the repository). Nothing is written in ``platform/``.

This module imports mutmut only to read a finished run's diffs, inside ``report``.
"""

from __future__ import annotations

import argparse
import ast
import fnmatch
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from randommask.errors import UserError

# The modules that compute the numbers: counting tables and floors, the per-base loss and zero-shot
# scores, variant scoring, pooling, the probe, and the fine-tuning selection.
MODULES = (
    "data/counting.py",
    "data/floors.py",
    "training/baseloss.py",
    "inference/zeroshot.py",
    "inference/variants.py",
    "inference/centre.py",
    "inference/alleles.py",
    "inference/embed.py",
    "evaluation/probe.py",
    "finetune/search.py",
    "finetune/protocol.py",
    "finetune/trial.py",
)
# Where a module also holds plumbing (Ray Data pipelines, command orchestration, a training loop run
# end to end by the integration tier), only the functions that compute a number are mutated: the rest
# would cost a trial or a pipeline per mutant and blow the half-hour budget. None: every function.
FOCUS: dict[str, tuple[str, ...] | None] = {
    "inference/variants.py": ("windows", "Scorer.__call__"),
    "inference/embed.py": ("tokenize_regions", "Embedder.__call__", "Embedder.embed"),
    "evaluation/probe.py": ("windows_of", "embed", "kmer_bag", "fit_score", "_splits", "linear_probe"),
    "finetune/trial.py": ("evaluate",),
    "inference/zeroshot.py": ("draw_positions", "table_log_p_ref", "model_log_p_ref", "standing"),
}
# The unit-test files that reach them (mutmut then runs, per mutant, only the tests that reach its function).
TESTS = (
    "test_counting.py",
    "test_floors.py",
    "test_baseloss.py",
    "test_zeroshot.py",
    "test_inference_numbers.py",
    "test_alleles.py",
    "test_inference.py",
    "test_probe.py",
    "test_sweep.py",
    "test_finetune.py",
    "test_finetune_search.py",
)
# Lines not mutated: the text of a refusal (the condition before it is mutated), of a warning and of a
# log line. A test pins what a user reads where it matters; mutating the wording only adds noise.
NO_MUTATE = (r"raise UserError\(", r"warnings\.warn\(", r"\blog(ger)?\.(debug|info|warning|error)\(")

PACKAGE = "randommask"
WORK = Path("build") / "mutants"
DEAD = ("killed", "timeout", "caught by type check")  # mutmut's statuses of a mutant the tests caught
NOT_RUN = "not checked"  # mutmut's status of a mutant a stopped run never reached


@dataclass(frozen=True)
class Mutant:
    """One mutant of a finished run: ``name`` as mutmut knows it, ``module`` (e.g. data/counting.py),
    its ``status``, and where it is (``line`` in the original file) and what it changed."""

    name: str
    module: str
    status: str
    line: int | None = None
    before: str = ""
    after: str = ""


def mutmut_table(modules: tuple[str, ...] = MODULES, tests_dir: str = "tests/unit") -> str:
    """The ``[tool.mutmut]`` table the staging folder's pyproject.toml gets."""
    lines = ["", "# Added by randommask.tools.mutants for the staged run (build/mutants), not the project's own.",
             "[tool.mutmut]",
             f'source_paths = ["{PACKAGE}"]',
             "only_mutate = [" + ", ".join(f'"{PACKAGE}/{m}"' for m in modules) + "]",
             "pytest_add_cli_args_test_selection = [" + ", ".join(f'"{tests_dir}/{t}"' for t in TESTS) + "]",
             "pytest_add_cli_args = [\"-p\", \"no:cacheprovider\"]",
             "do_not_mutate_patterns = [" + ", ".join(json.dumps(p) for p in NO_MUTATE) + "]",
             "use_git_change_detection = false",
             '# torch is not fork-safe once its thread pool has run: fork each mutant from a server that never ran it',
             'process_isolation = "forkserver"',
             ""]
    return "\n".join(lines)


def stage(repo: Path, work: Path, modules: tuple[str, ...] = MODULES) -> None:
    """A fresh staging folder: the package at its top, the tests, pyproject.toml with the mutmut table."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    junk = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", ".hypothesis")
    shutil.copytree(repo / "platform" / PACKAGE, work / PACKAGE, ignore=junk)
    shutil.copytree(repo / "tests", work / "tests", ignore=junk)
    text = (repo / "pyproject.toml").read_text()
    if "[tool.mutmut]" in text:
        raise UserError("pyproject.toml has a [tool.mutmut] table; the staged run writes its own "
                        "(randommask/tools/mutants.py): remove it")
    (work / "pyproject.toml").write_text(text + mutmut_table(modules))
    shared = repo.resolve().parent / "shared"
    if shared.exists():  # tests/conftest.py looks for the real data beside the repository: here, beside mutants/
        (work / "shared").symlink_to(shared)
    else:
        print(f"warning: {shared} is absent; the tests that need real data skip, and their mutants count as "
              "survivors or untested", file=sys.stderr)


def patterns(modules: tuple[str, ...] = MODULES) -> list[str]:
    """mutmut's name patterns (fnmatch) for the mutants to run: every one of a module, or those of its
    FOCUS functions (``randommask.m.x_f__mutmut_*``, ``randommask.m.xǁClassǁf__mutmut_*``)."""
    out = []
    for module in modules:
        dotted = f"{PACKAGE}." + module.removesuffix(".py").replace("/", ".")
        focus = FOCUS.get(module)
        if focus is None:
            out.append(f"{dotted}.*")
            continue
        for name in focus:
            cls, _, func = name.rpartition(".")
            out.append(f"{dotted}.xǁ{cls}ǁ{func}__mutmut_*" if cls else f"{dotted}.x_{func}__mutmut_*")
    return out


def selected(name: str, module: str) -> bool:
    """Whether mutant ``name`` of ``module`` is one ``patterns`` runs."""
    return any(fnmatch.fnmatchcase(name, pat) for pat in patterns((module,)))


def run_mutmut(work: Path, max_children: int, modules: tuple[str, ...] = MODULES) -> int:
    """``mutmut run`` in ``work``. PYTHONPATH names the mutated copy first, so that a test's subprocess
    (``python -m randommask``) imports it too, and never the original sources."""
    (work / "mutants").mkdir(exist_ok=True)
    original = (work.parents[1] / "platform").resolve()
    kept = [x for x in os.environ.get("PYTHONPATH", "").split(os.pathsep) if x and Path(x).resolve() != original]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str((work / "mutants").resolve()), *kept]),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # one thread a mutant, --max-children of them at once
    cmd = [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children), *patterns(modules)]
    # mutmut's progress goes to the terminal; given names, it then lists every mutant's result, one line
    # each (thousands): that list goes only to the log, the report below says the same per module.
    with subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc, \
            open(work / "mutmut.log", "wb") as log:
        seen, quiet = b"", False
        for chunk in iter(lambda: proc.stdout.read1(4096), b""):
            log.write(chunk)
            seen = (seen + chunk)[-64:]
            if not quiet and b"Mutant results" in seen:
                quiet = True
                print(f"\n(each mutant's result: {work / 'mutmut.log'})", flush=True)
            if not quiet:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
    return proc.returncode


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


def collect(work: Path, modules: tuple[str, ...] = MODULES) -> list[Mutant]:
    """Every mutant of the last run in ``work``, with where it is and what it changed unless killed."""
    out: list[Mutant] = []
    status_of, diff_of = _mutmut(work)
    for module in modules:
        meta = work / "mutants" / PACKAGE / (module + ".meta")
        if not meta.exists():
            raise UserError(f"{meta}: no results; run `make mutants` first")
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        source = (work / PACKAGE / module).read_text()
        for name, code in sorted(codes.items(), key=lambda kv: _natural(kv[0])):
            if not selected(name, module):
                continue
            status = status_of[code]
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


def markdown(mutants: list[Mutant], modules: tuple[str, ...] = MODULES, wall: str | None = None) -> str:
    """The score per module and the survivors, as the tables in docs/testing.md."""
    rows = ["| module | mutants | killed | timeout | survived | no tests | not run | score |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    total = {"n": 0, "k": 0, "t": 0, "s": 0, "u": 0, "r": 0}
    for module in modules:
        ms = [m for m in mutants if m.module == module]
        n, t, u = len(ms), sum(m.status == "timeout" for m in ms), sum(m.status == "no tests" for m in ms)
        r = sum(m.status == NOT_RUN for m in ms)  # a run stopped early: neither caught nor missed
        k = sum(m.status in DEAD for m in ms) - t
        s = n - k - t - u - r
        for key, v in zip("nktsur", (n, k, t, s, u, r)):
            total[key] += v
        rows.append(f"| {module} | {n} | {k} | {t} | {s} | {u} | {r} | {_score(k + t, n - r)} |")
    rows.append(f"| **all** | {total['n']} | {total['k']} | {total['t']} | {total['s']} | {total['u']} | "
                f"{total['r']} | {_score(total['k'] + total['t'], total['n'] - total['r'])} |")
    live = [m for m in mutants if m.status not in DEAD and m.status != NOT_RUN]
    out = ["Score = (killed + timed out) / mutants run (a stopped run leaves some not run)." + (f" Wall time: {wall}." if wall else ""), "", *rows, "",
           f"Survivors ({len(live)}):", "", "| where | status | before | after | mutant |", "|---|---|---|---|---|"]
    for m in live:
        where = f"{m.module}:{m.line}" if m.line else m.module
        out.append(f"| {where} | {m.status} | `{_cell(m.before)}` | `{_cell(m.after)}` | {m.name.rpartition('.')[2]} |")
    return "\n".join(out) + "\n"


def _score(killed: int, n: int) -> str:
    return f"{100 * killed / n:.1f}%" if n else "-"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("`", "'")[:90]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="randommask.tools.mutants", description=__doc__.split("\n\n")[0])
    p.add_argument("command", nargs="?", default="run", choices=("run", "report"),
                   help="run: stage, run mutmut and report; report: the last run's report again (default: run)")
    p.add_argument("--repo", type=Path, default=Path("."), help="the repository's root (default: .)")
    p.add_argument("--max-children", type=int, default=os.cpu_count() or 2,
                   help="mutants tested at once (default: the number of CPUs, here %(default)s)")
    p.add_argument("--markdown", type=Path, default=None,
                   help="also write the report to this file (default: only build/mutants/report.md)")
    p.add_argument("--only", action="append", default=None, metavar="MODULE",
                   help="mutate only this module (repeatable; e.g. data/counting.py; default: all of " + ", ".join(MODULES) + ")")
    args = p.parse_args(argv)
    modules = tuple(args.only or MODULES)
    if set(modules) - set(MODULES):
        raise UserError(f"--only {', '.join(sorted(set(modules) - set(MODULES)))}: not one of {', '.join(MODULES)}")
    repo = args.repo.resolve()
    out = args.markdown.resolve() if args.markdown else None
    if not (repo / "platform" / PACKAGE).is_dir():
        raise UserError(f"--repo {args.repo}: no platform/{PACKAGE} there; run from the repository's root")
    work = repo / WORK
    wall = None
    if args.command == "run":
        started = time.monotonic()
        stage(repo, work, modules)
        code = run_mutmut(work, args.max_children, modules)
        secs = time.monotonic() - started
        wall = f"{int(secs // 60)}m{int(secs % 60):02d}s ({args.max_children} at once)"
        if code != 0:
            print(f"mutmut run exited with {code} after {wall}", file=sys.stderr)
            return code
    report = markdown(collect(work, modules), modules, wall)
    (work / "report.md").write_text(report)
    if out:
        out.write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
