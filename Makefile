# Two commands on a fresh machine: `make demo` and `make test`. Each bootstraps .venv itself.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
GENOME ?= ../shared/data/genomes/ecoli_536.fna.gz
PYTEST_ARGS ?=

.PHONY: venv demo test bench gpu-check clean

venv: $(STAMP)

# Reinstall when the dependency list or the pins change; the editable install tracks source edits by
# itself. The pins (cluster/constraints.txt) are the cluster image's too: the cluster runs what the tests ran.
$(STAMP): pyproject.toml cluster/constraints.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=python3 ...'" >&2; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c cluster/constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/randommask demo --genome "$(GENOME)"

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(VENV)/bin/randommask bench tokenize
	$(VENV)/bin/randommask bench mask
	$(VENV)/bin/randommask bench mlm-step
	$(VENV)/bin/randommask bench pipeline
	$(VENV)/bin/randommask bench train-overhead
	$(VENV)/bin/randommask bench e2e

# The CUDA paths the CPU suite cannot run (docs/testing.md). On a bare GPU machine without .venv:
#   PYTHONPATH=platform python3 -m randommask.gpu_check
gpu-check: $(STAMP)
	PYTHONPATH=platform $(PY) -m randommask.gpu_check

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info platform/*.egg-info
