# The user's verbs. Every target installs what it needs into .venv on demand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
RUNS   ?= runs
CONFIG ?= configs/seed_best.yaml

.PHONY: install test lint format bench train data clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

install: $(STAMP)

## test: the whole suite (what CI runs)
test: $(STAMP)
	$(BIN)/ruff check monolith ray_jobs tests bench
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check monolith ray_jobs tests bench
	$(BIN)/ruff format --check monolith ray_jobs tests bench

format: $(STAMP)
	$(BIN)/ruff format monolith ray_jobs tests bench
	$(BIN)/ruff check --fix monolith ray_jobs tests bench

## data: prepare the default (synthetic) dataset under $(RUNS)/prepared
data: $(STAMP)
	$(BIN)/monolith data prepare --config $(CONFIG) --output $(RUNS)/prepared --overwrite

## train: prepare data, train the seed's best config in one process, verify the bundle
train: $(STAMP)
	$(BIN)/monolith train --config $(CONFIG) --output $(RUNS)/bundles/seed_best --overwrite
	$(BIN)/monolith inspect $(RUNS)/bundles/seed_best

## bench: benchmarks, each printing figures against a baseline measured in the same run
bench: $(STAMP)
	$(BIN)/python bench/data_prep.py
	$(BIN)/python bench/train_throughput.py

clean:
	rm -rf $(RUNS) .pytest_cache .ruff_cache
