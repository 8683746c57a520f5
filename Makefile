# framefold — two commands on a fresh machine:
#   make demo   set up .venv and run the demo manifest
#   make test   set up .venv and run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export HF_HUB_OFFLINE ?= 1

.PHONY: demo test test-fast bench bench-quick clean-demo setup chromium

# The batch report's browser test drives the system's Chromium (never a downloaded one).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

setup: $(STAMP)

# torch first, pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	# spandrel (learned upscaling) without its torchvision requirement: tasks/superres.py
	$(BIN)/pip install --quiet --no-deps -c constraints.txt spandrel
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/framefold run manifests/examples/demo.yaml

# Tests run on TEST_WORKERS processes (pytest-xdist), a test file per process at a time; the
# tests that start Ray clusters of their own take turns (docs/development.md).
TEST_WORKERS ?= 2

test: $(STAMP) chromium
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=25

chromium:
	@test -x /usr/bin/chromium || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }

# Skips the slow end-to-end and fault cases (CI runs everything via `make test`).
test-fast: $(STAMP) chromium
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow"

# The benchmark suite (about 23 minutes): writes bench/RESULTS.md and its plots.
bench: $(STAMP)
	$(BIN)/python -m bench

# Every figure at tiny sizes (under 2 minutes), written to a temporary folder, not bench/.
bench-quick: $(STAMP)
	$(BIN)/python -m bench --quick

clean-demo:
	rm -rf manifests/examples/out
