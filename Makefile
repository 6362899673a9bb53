# Everything a newcomer needs: `make demo` and `make test` both set up .venv from scratch.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test test-fast bench lint format clean

setup: $(STAMP)

# torch/torchvision are pinned to the builds that lie on this kind of machine's disk (no multi-GB download).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# The demo study (configs/studies/demo.yaml), two runs at a time; a second `make demo` skips every finished run.
# The last line gives the wall time and the sum of the runs' own times.
DEMO_JOBS ?= 2
demo: setup
	FGVLM_CACHE=$${FGVLM_CACHE:-$(CURDIR)/.cache} $(BIN)/python -m fgvlm study run configs/studies/demo.yaml \
		--out runs/demo --jobs $(DEMO_JOBS)

test: setup
	$(BIN)/python -m pytest -q -x --durations=15

bench: setup
	$(BIN)/python benchmarks/run.py

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: setup
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build src/*.egg-info
