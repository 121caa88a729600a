# The two commands of the README:
#   make repro   set up .venv, fetch the data, run the whole DVC pipeline
#   make test    set up the same way, then run the test suite
# While developing: make test-fast (no real `dvc repro`), make lint.
# Python 3.12 or 3.13 is found by scripts/find-python.sh (PATH, pyenv, Homebrew), or set PYTHON=.
VENV ?= .venv
BIN := $(VENV)/bin
MIRROR ?= /usr/share/datasets/fashion-mnist
export PATH := $(abspath $(BIN)):$(PATH)
# Every command imports this checkout's library, whichever checkout the venv was installed from
# (a VENV shared between clones, as the workflow tests do).
export PYTHONPATH := $(abspath src)$(if $(PYTHONPATH),:$(PYTHONPATH))

.PHONY: docs repro pull push remote-local verify verify-check calibrate plots plots-diff test test-fast setup system data lint lock bench bench-memory bench-loop bench-floors bench-global report clean-venv

# Pull what the shared DVC remote has (one line and on when there is none or it cannot be read),
# then compute only what is missing or changed.
repro: setup data
	$(BIN)/python -m fmnist_shap.remote pull --or-compute
	dvc repro

# Upload what dvc.lock names to the shared remote (write keys; publish.yml does it for main);
# refuses a corrupted cache, and a push cut off midway is one line: rerunning it finishes.
push: setup
	$(BIN)/python -m fmnist_shap.remote push

# Outputs from the shared DVC remote; stops with one line when it cannot be read.
pull: setup
	$(BIN)/python -m fmnist_shap.remote pull

# This clone's shared remote (.dvc/config.local, not committed) from $DVC_REMOTE_URL, e.g.
# s3://team-bucket/fmnist-shap, and $DVC_REMOTE_ENDPOINT for an S3-compatible store (the workflows).
remote-local: setup
	@test -n "$$DVC_REMOTE_URL" || { echo "error: DVC_REMOTE_URL is empty; export it, e.g. s3://team-bucket/fmnist-shap" >&2; exit 2; }
	dvc remote add --local --force -d team "$$DVC_REMOTE_URL"
	@if [ -n "$$DVC_REMOTE_ENDPOINT" ]; then dvc remote modify --local team endpointurl "$$DVC_REMOTE_ENDPOINT"; fi

# After `dvc repro`: which outputs are bit-identical to the committed dvc.lock, which differ and
# by how much, and this machine's environment against the one that made dvc.lock.
verify: setup
	$(BIN)/python -m fmnist_shap.review.verify

# publish.yml's guard: exit 1 with one line when outputs differ that no change explains.
verify-check: setup
	$(BIN)/python -m fmnist_shap.review.verify --check

# reports/calibration.json: how far retraining with train.seed + 1 moves every metric (the whole
# pipeline once more, as a temporary experiment); `make verify` shows it beside each difference.
calibrate: setup
	$(BIN)/python -m fmnist_shap.review.calibrate

test: setup data
	$(BIN)/python -m pytest

# The quick tier: everything but the tests that run real `dvc repro` in a temporary repository
# or start Dask clusters.
test-fast: setup data
	$(BIN)/python -m pytest -m "not slow"

setup: system
	@./scripts/setup-venv.sh $(VENV)

# System packages, only when missing: git, venv support, and Debian's copy of the data set.
system:
	@./scripts/system-deps.sh "$(MIRROR)"

# Refresh requirements.lock from pyproject.toml: the newest releases that resolve for Python
# 3.12 and 3.13 on every platform, with hashes. Commit it with the `dvc repro` it leads to.
UV_VERSION := 0.13.8
lock: setup
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(BIN)/uv pip compile pyproject.toml --extra dev --universal --python-version 3.12 \
		--generate-hashes --upgrade --quiet -o requirements.lock
	$(BIN)/python -m pip uninstall --quiet --yes uv
	@./scripts/setup-venv.sh $(VENV)

# The raw files: DVC remote if one is configured, else the local mirror, else the official URL.
# Every file is checked against its pinned SHA-256; then DVC's cache gets a copy.
data: setup
	$(BIN)/python -m fmnist_shap.fetch data/raw --mirror "$(MIRROR)"
	dvc commit --force --quiet data/raw.dvc

# Side-by-side speed of our training and SHAP against tutorial-style code (about 5 minutes).
bench: setup data
	$(BIN)/python benchmarks/bench.py
	$(MAKE) --no-print-directory bench-memory

# Peak memory of explain and global (and global over all 10k images), ~5 min, on the
# workspace's prepared data and model (make repro first: nothing to do when up to date).
bench-memory: repro
	$(BIN)/python benchmarks/memory.py

# The experiment loop's timings next to their targets, in a temporary clone of HEAD (~12 min);
# ARGS="--skip-tests --rev COMMIT" passes options to benchmarks/loop.py.
bench-loop: setup data
	$(BIN)/python benchmarks/loop.py $(ARGS)

# Each explain variant's worker-seconds against its floor: its model evaluations as large batches.
bench-floors: setup
	$(BIN)/python benchmarks/floors.py

# The global stage's images/s with 1 and 2 Dask workers, and all 10k projected (~3 min).
bench-global: setup data
	$(BIN)/python benchmarks/global_bench.py

# dvc_plots/index.html: DVC's plots page with vega inlined from vendor/vega (works offline).
plots: setup
	$(BIN)/python -m fmnist_shap.plots_page show

# The same page for the workspace against BASE (default main).
plots-diff: setup
	$(BIN)/python -m fmnist_shap.plots_page diff $(BASE)

# reports/pr-report.md: params, metrics and plots of the workspace against BASE (default main).
BASE ?= main
report: setup
	$(BIN)/python -m fmnist_shap.review.report --base "$(BASE)"

# The figures README.md and docs/ quote from reports/, rendered into their marked blocks.
docs: setup
	$(BIN)/python -m fmnist_shap.docs

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/actionlint

clean-venv:
	rm -rf $(VENV)
