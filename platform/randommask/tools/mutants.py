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

``--survivors`` runs again only the last run's survivors of the modules named (after new tests: minutes,
not the half hour); the rest keep their last status. The report (``mutants_report``) marks each
survivor with its explanation from ``tests/mutants-explained.toml``, or as unexplained.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from randommask.errors import UserError
from randommask.tools.mutants_report import DEAD, EXPLAINED, PACKAGE, collect, explain, explanations, markdown, unused

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

WORK = Path("build") / "mutants"
LAST = Path("build") / "mutants-last.json"  # outside WORK (rebuilt each run): every mutant's last status


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
             "# mutmut runs the tests inside mutants/, where conftest.REPO points: test_sweep.py reads jobs/configs/ there",
             'also_copy = ["jobs"]',
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
    # copied into mutants/ by also_copy (the mutmut table)
    (work / "jobs").symlink_to((repo / "jobs").resolve())
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


def fingerprint(package: Path, module: str) -> str:
    """A module's source under ``package`` (a survivors-only rerun needs the names of the last run's
    mutants to mean the same changes: the staged copy that ran against the source now)."""
    return hashlib.sha256((package / module).read_bytes()).hexdigest()[:16]


def last_survivors(repo: Path, modules: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
    """The last run's live mutants of ``modules`` and every mutant's last status; refused where a module
    was never run whole or has changed since."""
    path = repo / LAST
    last = json.loads(path.read_text()) if path.exists() else {"modules": {}, "status": {}}
    for module in modules:
        if last["modules"].get(module) != fingerprint(repo / "platform" / PACKAGE, module):
            raise UserError(f"--survivors: {module} has changed since its last run (or never ran); "
                            f"run it whole: make mutants MUTANTS_ARGS=\"--only {module}\"")
    status = last["status"]
    names = [n for n, s in status.items() if s not in DEAD and any(selected(n, m) for m in modules)]
    return names, status


def remember(repo: Path, work: Path, modules: tuple[str, ...], mutants: list) -> None:
    """Every mutant's status after the run staged in ``work``, with the fingerprint of each module's source
    as it ran. ``mutants`` holds every selected mutant of ``modules`` (a survivors-only run's others with
    their last status), so it replaces what was known of those modules: a mutant of an older source that
    no longer exists never comes back as a survivor to rerun."""
    path = repo / LAST
    last = json.loads(path.read_text()) if path.exists() else {"modules": {}, "status": {}}
    ran = tuple(f"{PACKAGE}." + m.removesuffix(".py").replace("/", ".") + "." for m in modules)
    last["status"] = {n: s for n, s in last["status"].items() if not n.startswith(ran)}
    last["status"].update({m.name: m.status for m in mutants})
    last["modules"].update({module: fingerprint(work / PACKAGE, module) for module in modules})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")  # a run stopped mid-write leaves the last record whole
    tmp.write_text(json.dumps(last, indent=0, sort_keys=True))
    os.replace(tmp, path)


def run_mutmut(work: Path, max_children: int, names: list[str]) -> int:
    """``mutmut run`` in ``work``. PYTHONPATH names the mutated copy first, so that a test's subprocess
    (``python -m randommask``) imports it too, and never the original sources."""
    (work / "mutants").mkdir(exist_ok=True)
    original = (work.parents[1] / "platform").resolve()
    kept = [x for x in os.environ.get("PYTHONPATH", "").split(os.pathsep) if x and Path(x).resolve() != original]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str((work / "mutants").resolve()), *kept]),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # one thread a mutant, --max-children of them at once
    cmd = [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children), *names]
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="randommask.tools.mutants", description=__doc__.split("\n\n")[0])
    p.add_argument("command", nargs="?", default="run", choices=("run", "report"),
                   help="run: stage, run mutmut and report; report: the last run's report again (default: run)")
    p.add_argument("--repo", type=Path, default=Path("."), help="the repository's root (default: .)")
    p.add_argument("--max-children", type=int, default=os.cpu_count() or 2,
                   help="mutants tested at once (default: the number of CPUs, here %(default)s)")
    p.add_argument("--markdown", type=Path, default=None,
                   help="also write the report to this file (default: only build/mutants/report.md)")
    p.add_argument("--survivors", action="store_true",
                   help="run only the last run's survivors of these modules, the rest keeping their status "
                        "(after adding tests; refused where a module's source changed since; default: every mutant)")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 if any survivor is unexplained (default: report it and exit 0)")
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
    previous = None
    if args.command == "run":
        started = time.monotonic()
        names = patterns(modules)
        if args.survivors:
            names, previous = last_survivors(repo, modules)
            print(f"--survivors: {len(names)} mutant(s) of the last run", flush=True)
            if not names:
                print("nothing to run: the last run left no survivor in " + ", ".join(modules))
                return 0
        stage(repo, work, modules)
        # what `report` needs to read this run again: a survivors-only run leaves the rest unrun
        (work / "run.json").write_text(json.dumps({"survivors": args.survivors}))
        code = run_mutmut(work, args.max_children, names)
        secs = time.monotonic() - started
        wall = f"{int(secs // 60)}m{int(secs % 60):02d}s ({args.max_children} at once)"
        if code != 0:
            print(f"mutmut run exited with {code} after {wall}", file=sys.stderr)
            return code
    if args.command == "report" and (work / "run.json").exists() and json.loads((work / "run.json").read_text())["survivors"]:
        previous = json.loads((repo / LAST).read_text())["status"]  # the rest keep their last status, as in the run
    entries = explanations(repo / EXPLAINED)
    mutants = explain(collect(work, modules, selected, previous), entries)
    remember(repo, work, modules, mutants)
    report = markdown(mutants, modules, wall, unused(mutants, entries, modules))
    (work / "report.md").write_text(report)
    if out:
        out.write_text(report)
    print(report)
    bare = sum(m.alive and not m.why for m in mutants)
    return 1 if args.strict and bare else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
