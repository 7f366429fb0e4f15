# Two targets for a fresh machine: `make demo` (the main job on the embedded default) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# pip >= 26.2 ignores the machine's constraint file inside isolated build environments and would fetch another
# torch there; point it at that file when there is one.
PIP_CONSTRAINT_FILE := $(shell $(PYTHON) -m pip config get global.constraint 2>/dev/null)
export PIP_BUILD_CONSTRAINT ?= $(PIP_CONSTRAINT_FILE)

.PHONY: setup demo test lint bench clean

setup: $(VENV)/.installed

# torch first, so BasicSR's sdist (whose setup imports torch) builds without an isolated environment; BasicSR
# only if no distribution of it (basicsr, basicsr-fixed) is installed; then the plugin, editable, with dev tools.
$(VENV)/.installed: setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install 'torch>=2.1' 'torchvision>=0.16'
	$(BIN)/pip show -q basicsr || $(BIN)/pip show -q basicsr-fixed || \
		$(BIN)/pip install --no-build-isolation 'basicsr>=1.4.2'
	$(BIN)/pip install -e '.[dev]'
	touch $@

demo: setup
	$(BIN)/interir demo

lint: setup
	$(BIN)/ruff check interir_plugin tests benchmarks setup.py

test: setup lint
	$(BIN)/python -m pytest -q -n 2 --durations=15 tests

# the measuring benchmarks; bench_ablation (minutes of training), bench_recipe and bench_tiles (need a trained model
# or arguments) are run by hand, as docs/benchmarks.md says. `make test` runs every script's --quick mode.
BENCHES := data dgunet interir interir_variants training
bench: setup
	for f in $(BENCHES); do OMP_NUM_THREADS=2 $(BIN)/python benchmarks/bench_$$f.py || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
