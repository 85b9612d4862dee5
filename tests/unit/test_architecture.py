"""The package's shape: a light top-level import with a lazy public API, modules in subpackages and of a
readable size, no reaching into another module's private names, and one table of evaluation metric
names that the Prometheus gauges cover."""

import ast
import itertools
import json
import subprocess
import sys

import pytest

from conftest import REPO

PACKAGE = REPO / "platform" / "randommask"
PUBLIC = ("KmerTokenizer", "make_masker", "build_mlm", "mlm_loss", "pretraining_dataset")
TOP_LEVEL = {"__init__.py", "__main__.py", "errors.py"}  # the only modules outside a subpackage
MAX_LINES = 450


def sources(*roots):
    return sorted(p for root in roots for p in root.rglob("*.py") if "__pycache__" not in p.parts)


def test_importing_the_package_loads_neither_ray_nor_torch_and_the_public_names_resolve():
    code = ("import json, sys, randommask; "
            "print(json.dumps({'ray': 'ray' in sys.modules, 'torch': 'torch' in sys.modules, "
            "'all': sorted(randommask.__all__)}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = json.loads(out.stdout)
    assert not loaded["ray"] and not loaded["torch"], loaded
    assert set(PUBLIC) <= set(loaded["all"])
    import randommask

    for name in PUBLIC:  # each loads its module on first use
        value = getattr(randommask, name)
        assert callable(value) and value.__name__ == name, name
    with pytest.raises(AttributeError):
        randommask.no_such_name  # noqa: B018


def test_only_the_entry_points_and_errors_sit_outside_the_subpackages():
    top = {p.name for p in PACKAGE.glob("*.py")}
    assert top <= TOP_LEVEL, f"move into a subpackage: {sorted(top - TOP_LEVEL)}"


def test_every_module_is_under_450_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in sources(PACKAGE)
            if (n := len(p.read_text().splitlines())) >= MAX_LINES}
    assert not long, f"modules of {MAX_LINES} lines or more (split them): {long}"


def test_no_module_imports_another_modules_private_names():
    found = []
    for path in sources(PACKAGE, REPO / "jobs", REPO / "tests"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.ImportFrom):
                continue
            ours = node.level > 0 or (node.module or "").split(".")[0] == "randommask"
            private = [a.name for a in node.names if a.name.startswith("_") and not a.name.endswith("__")]
            if ours and private:
                where = f"{path.relative_to(REPO)}:{node.lineno}"
                found.append(f"{where}: from {'.' * node.level}{node.module or ''} import {', '.join(private)}")
    assert not found, "private names imported from another module:\n" + "\n".join(found)


def test_eval_metric_names_are_one_table_that_the_gauges_cover():
    from randommask.training.metrics import EVAL_FIGURES, EVAL_METRICS, EVAL_SETS
    from randommask.training.observability import GAUGES

    assert set(EVAL_METRICS) == set(itertools.product(EVAL_SETS, EVAL_FIGURES))
    for (eval_set, figure), name in EVAL_METRICS.items():
        assert name == f"eval_{eval_set}_{figure}"
    assert set(EVAL_METRICS.values()) <= set(GAUGES), sorted(set(EVAL_METRICS.values()) - set(GAUGES))


def test_every_name_imported_from_the_package_exists():
    """An import inside a function runs only when the function does (Ray workers, rare branches): a
    name that a move left behind would fail there, at run time. Checked here for every such import."""
    import importlib

    missing = []
    for path in sources(PACKAGE, REPO / "jobs"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("randommask"):
                module = importlib.import_module(node.module)
                for alias in node.names:
                    submodule = hasattr(module, "__path__") and \
                        importlib.util.find_spec(f"{node.module}.{alias.name}") is not None
                    if not hasattr(module, alias.name) and not submodule:
                        missing.append(f"{path.relative_to(REPO)}:{node.lineno}: {node.module}.{alias.name}")
    assert not missing, "imports of names that do not exist:\n" + "\n".join(missing)
