# Two commands on a fresh machine: `make demo` and `make test`. Each bootstraps .venv itself.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
MLFLOW_VENV := .venv-mlflow
MLFLOW_SERVER_VERSION := 3.17.2
MUTMUT_VERSION := 3.8.1
GENOME ?= ../shared/data/genomes/ecoli_536.fna.gz
PYTEST_ARGS ?=
MUTANTS_ARGS ?=

.PHONY: venv demo lint test test-unit mutants bench gpu-check clean

venv: $(STAMP)

# Reinstall when the dependency list or the pins change; the editable install tracks source edits by
# itself. The pins (cluster/constraints.txt) are the cluster image's too: the cluster runs what the tests ran.
$(STAMP): pyproject.toml cluster/constraints.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=python3 ...'" >&2; exit 1; }
	@# The tests' MLflow tracking server is a service of its own, as it is where teams host it: its own
	@# environment (its pins would clash with Ray's pyarrow); the package itself needs only the client.
	@# It installs beside the package's environment (two pip processes, two cores); both must succeed.
	{ test -x $(MLFLOW_VENV)/bin/mlflow || { $(PYTHON) -m venv $(MLFLOW_VENV) && \
	  $(MLFLOW_VENV)/bin/pip install --quiet "mlflow==$(MLFLOW_SERVER_VERSION)"; }; } & mlflow=$$!; \
	{ test -x $(PY) || $(PYTHON) -m venv $(VENV); } && \
	$(PY) -m pip install --quiet --upgrade pip && \
	$(PY) -m pip install --quiet -c cluster/constraints.txt -e '.[dev]'; main=$$?; \
	wait $$mlflow; server=$$?; \
	test $$main -eq 0 || { echo "error: installing the package into $(VENV) failed (above)" >&2; exit 1; }; \
	test $$server -eq 0 || { echo "error: installing the MLflow server into $(MLFLOW_VENV) failed (above)" >&2; exit 1; }
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/randommask demo --genome "$(GENOME)"

# Seconds, before any test: the lint rules and the layer contract (pyproject.toml) fail a broken habit
# or an upward import at once.
lint: $(STAMP)
	$(VENV)/bin/ruff check platform tests jobs
	$(VENV)/bin/lint-imports --no-cache

# Everything: lint first, then the integration tier and the unit tier (no Ray, no servers) as two pytest
# processes at once, the unit tier under SCHED_IDLE so it only fills the cores the integration tier
# leaves idle (tests/streams.py says why). One process, in order: $(PY) -m pytest
test: lint
	$(PY) tests/streams.py $(PYTEST_ARGS)

test-unit: lint
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

# Mutation testing of the modules that compute the numbers, against their unit tests (docs/testing.md);
# not part of `make test`. mutmut is installed here on demand, pinned; it runs in build/mutants, never in platform/.
# One module, within the half hour: make mutants MUTANTS_ARGS="--only data/counting.py"
mutants: $(STAMP)
	$(PY) -m pip install --quiet -c cluster/constraints.txt "mutmut==$(MUTMUT_VERSION)"
	PYTHONPATH=platform $(PY) -m randommask.tools.mutants run --markdown build/mutants-report.md $(MUTANTS_ARGS)

# The whole genome, as the README's figures were measured (the CLI's default is the packaged 300-kb slice).
bench: $(STAMP)
	$(VENV)/bin/randommask bench tokenize --genome "$(GENOME)"
	$(VENV)/bin/randommask bench mask --genome "$(GENOME)"
	$(VENV)/bin/randommask bench mlm-step --genome "$(GENOME)"
	$(VENV)/bin/randommask bench pipeline --genome "$(GENOME)"
	$(VENV)/bin/randommask bench train-overhead --genome "$(GENOME)"
	$(VENV)/bin/randommask bench e2e --genome "$(GENOME)"
	$(VENV)/bin/randommask bench embed --genome "$(GENOME)"
	$(VENV)/bin/randommask bench score-variants --genome "$(GENOME)"

# The CUDA paths the CPU suite cannot run (docs/testing.md). On a bare GPU machine without .venv:
#   PYTHONPATH=platform python3 -m randommask.tools.gpu_check
gpu-check: $(STAMP)
	PYTHONPATH=platform $(PY) -m randommask.tools.gpu_check

clean:
	rm -rf $(VENV) $(MLFLOW_VENV) .pytest_cache build mutants *.egg-info platform/*.egg-info
