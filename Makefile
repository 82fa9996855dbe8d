# clrdist: `make demo` and `make test` are all a newcomer types.
# Both create (or refresh) .venv and install what they need first.
#
# Install order matters: torch first (the CPU wheel pinned in constraints.txt; an unpinned torch,
# or one pulled in by another package, would download a multi-GB CUDA build), then the package
# with its extras, then deepspeed, which ships only as source and imports torch in its build.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.clrdist-installed
TORCH_VERSION := $(shell sed -n 's/^torch==//p' constraints.txt)

.PHONY: demo test test-cluster test-slurm test-fast bench lint venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip wheel "setuptools>=68"
	$(PIP) install --quiet "torch==$(TORCH_VERSION)"
	$(PIP) install --quiet -c constraints.txt -e ".[dev,generation]"
	$(PIP) install --quiet -c constraints.txt --no-build-isolation deepspeed
	$(PY) -c "import torch, ray, zarr, mlflow, deepspeed, clrdist; print('clrdist env ok: torch', torch.__version__, 'ray', ray.__version__, 'zarr', zarr.__version__, 'mlflow', mlflow.__version__, 'deepspeed', deepspeed.__version__)"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/clrdist demo

# Test tiers (docs/development.md): unit, integration, slow, cluster.
# `make test`: every tier but the cluster one (real Ray, MLflow, Zarr, DeepSpeed), in
# TEST_WORKERS pytest-xdist processes (2: the cores of the machine CI runs on; each Ray test
# starts its own cluster, so more is not better on a small machine). The longest tests start
# first (tests/conftest.py); the ones sharing the uninterrupted-run fixture share a worker.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -q -m "not cluster" -n $(TEST_WORKERS) --dist loadgroup --durations=30 tests

# The cluster tier: the real two-node SLURM tests (as root they install slurm-wlm + munge with
# apt, and skip, saying why, where that is impossible). CI runs it after `make test`.
test-cluster: $(STAMP)
	$(PY) -m pytest -q -m cluster --durations=5 tests

test-slurm: test-cluster

# The unit tier in random order (a test that depends on another's side effects fails here), in
# TEST_WORKERS processes too.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m unit --random-order -n $(TEST_WORKERS) tests

bench: $(STAMP)
	$(PY) -m bench.loader
	$(PY) -m bench.train_step --model-dim 128 --ff-dim 512 --layers 4 --heads 4 --batch 256 --constituents 50 --json
	$(PY) -m bench.generate
	$(PY) -m bench.nplm
	$(PY) -m bench.scaling
	$(PY) -m bench.quick_paths
	$(PY) -m bench.learning $(if $(wildcard demo_out/train.zarr),--stores demo_out,)

lint: $(STAMP)
	$(VENV)/bin/ruff check clrdist tests bench jobs tuning

clean:
	rm -rf $(VENV) demo_out .pytest_cache
