# The user's verbs. Every target installs what it needs into .venv on demand.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
RUNS   ?= runs
CONFIG ?= configs/seed_best.yaml
TUNE_CONFIG    ?= configs/local.yaml
CLUSTER_CONFIG ?= configs/local.yaml
TUNE_ARGS      ?=
# Each `make tune` is a new experiment under runs/experiments/<name>; `make train-final`
# takes the newest one that has results.
TUNE_NAME      ?= monolith-tune-$(shell date +%Y%m%d-%H%M%S)
LAST_EXPERIMENT = $(patsubst %/results/best_config.json,%,$(firstword $(shell ls -td $(RUNS)/experiments/*/results/best_config.json 2>/dev/null)))
FINAL_OUTPUT   ?= $(abspath $(RUNS))/bundles
FINAL_ARGS     ?=

# A local multi-node Ray cluster on the loopback interface (make ray-up / ray-down):
# a head (drivers only) and one worker node, token auth on.
RAY_PORT        ?= 6390
DASHBOARD_PORT  ?= 8265
RAY_HEAD_CPUS   ?= 1
RAY_WORKER_CPUS ?= 2
# The worker node needs its own temp dir: sharing the head's on one machine lets its
# runtime-env agent delete the job's working dir while the job still runs in it.
RAY_WORKER_TMP  ?= /tmp/ray-worker-$(RAY_PORT)
RAY_ADDRESS     ?= http://127.0.0.1:$(DASHBOARD_PORT)
# Experiment storage for cluster jobs: an absolute folder every node can read (all nodes of
# the local cluster share this machine's disk) or s3://bucket/prefix on a real cluster.
TUNE_STORAGE    ?= $(abspath $(RUNS))/experiments
RAY_ENV := RAY_AUTH_MODE=token PATH=$(abspath $(BIN)):$$PATH
# Cluster processes that query the State API (Ray Train's placement-group cleaner) must ask
# this cluster's dashboard, not scan the machine for "the" cluster.
RAY_NODE_ENV := $(RAY_ENV) RAY_API_SERVER_ADDRESS=$(RAY_ADDRESS)
# .git stays behind: the commit travels as MONOLITH_GIT_COMMIT (the lineage of results).
GIT_COMMIT := $(shell git rev-parse HEAD 2>/dev/null)$(shell git status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo -dirty)
JOB_RUNTIME_ENV := {"working_dir": ".", "excludes": [".venv", ".venv-k8s", ".git", "runs", "*.egg-info", "__pycache__"], "env_vars": {"MONOLITH_GIT_COMMIT": "$(GIT_COMMIT)"}}

.PHONY: install test lint format bench train data clean tune tune-cluster ray-up ray-down \
	train-final train-final-cluster kfp-compile chromium

include k8s/k8s.mk

# pip -qq: errors only (a pip index configured on the machine but missing packages otherwise
# prints a warning line per package looked up; PIP_VERBOSE=1 make install shows them).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -qq --upgrade pip
	$(BIN)/python -m pip install -qq -e '.[dev]'
	touch $@

install: $(STAMP)

## chromium: the headless browser tests/integration/test_report.py loads the report in (Debian, as root)
chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } || \
		echo "warning: chromium not installed: the report's browser test will be skipped" >&2

## test: the whole suite (what CI runs)
test: $(STAMP) k8s-validate chromium
	$(BIN)/ruff check monolith ray_jobs pipelines tests bench k8s
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check monolith ray_jobs pipelines tests bench k8s
	$(BIN)/ruff format --check monolith ray_jobs pipelines tests bench k8s

format: $(STAMP)
	$(BIN)/ruff format monolith ray_jobs pipelines tests bench k8s
	$(BIN)/ruff check --fix monolith ray_jobs pipelines tests bench k8s

## data: prepare the default (synthetic) dataset under $(RUNS)/prepared
data: $(STAMP)
	$(BIN)/monolith data prepare --config $(CONFIG) --output $(RUNS)/prepared --overwrite

## train: prepare data, train the seed's best config in one process, verify the bundle
train: $(STAMP)
	$(BIN)/monolith train --config $(CONFIG) --output $(RUNS)/bundles/seed_best --overwrite
	$(BIN)/monolith inspect $(RUNS)/bundles/seed_best

## tune: the embedded default: local Ray, synthetic data, local storage (runs/experiments)
tune: $(STAMP)
	$(BIN)/python -m ray_jobs.tune --config $(TUNE_CONFIG) --name $(TUNE_NAME) $(TUNE_ARGS)

## train-final: train the newest experiment's best config and publish the bundle
train-final: $(STAMP)
	@test -n "$(LAST_EXPERIMENT)" || { echo "error: no experiment with results under $(RUNS)/experiments: run make tune first" >&2; exit 2; }
	$(BIN)/python -m ray_jobs.train_final --config $(TUNE_CONFIG) \
		--experiment $(LAST_EXPERIMENT) --output $(FINAL_OUTPUT) $(FINAL_ARGS)

## ray-up / ray-down: a local two-node Ray cluster on 127.0.0.1 with token auth
ray-up: $(STAMP)
	$(RAY_NODE_ENV) $(BIN)/ray start --head --node-ip-address=127.0.0.1 --port=$(RAY_PORT) \
		--dashboard-host=127.0.0.1 --dashboard-port=$(DASHBOARD_PORT) \
		--num-cpus=$(RAY_HEAD_CPUS) --disable-usage-stats
	$(RAY_NODE_ENV) $(BIN)/ray start --address=127.0.0.1:$(RAY_PORT) --node-ip-address=127.0.0.1 \
		--num-cpus=$(RAY_WORKER_CPUS) --disable-usage-stats --temp-dir=$(RAY_WORKER_TMP)
	@echo "Ray cluster up: dashboard $(RAY_ADDRESS); token in ~/.ray/auth_token"

ray-down: $(STAMP)
	$(RAY_ENV) $(BIN)/ray stop

## tune-cluster: submit the tune job to the cluster at RAY_ADDRESS (its dashboard URL)
tune-cluster: $(STAMP)
	$(RAY_ENV) $(BIN)/ray job submit --address $(RAY_ADDRESS) \
		--runtime-env-json '$(JOB_RUNTIME_ENV)' \
		-- python -m ray_jobs.tune --config $(CLUSTER_CONFIG) --storage $(TUNE_STORAGE) $(TUNE_ARGS)

## train-final-cluster: submit the final job (EXPERIMENT=<folder or s3:// URI>)
train-final-cluster: $(STAMP)
	$(RAY_ENV) $(BIN)/ray job submit --address $(RAY_ADDRESS) \
		--runtime-env-json '$(JOB_RUNTIME_ENV)' \
		-- python -m ray_jobs.train_final --config $(CLUSTER_CONFIG) \
		--experiment $(or $(EXPERIMENT),$(abspath $(LAST_EXPERIMENT))) --output $(FINAL_OUTPUT) $(FINAL_ARGS)

## bench: benchmarks, each printing figures against a baseline measured in the same run
bench: $(STAMP)
	$(BIN)/python bench/data_prep.py
	$(BIN)/python bench/data_scale.py
	$(BIN)/python bench/train_throughput.py
	$(BIN)/python bench/publish.py
	$(BIN)/python bench/embed.py
	$(BIN)/python bench/tune_efficiency.py

## kfp-compile: the Kubeflow pipeline as KFP v2 YAML (MONOLITH_IMAGE=registry/...:tag to pin yours)
KFP_PIPELINE ?= pipelines/monolith-tune-and-publish.yaml
kfp-compile: $(STAMP)
	$(BIN)/python pipelines/monolith_pipeline.py $(KFP_PIPELINE)

clean:
	rm -rf $(RUNS) .pytest_cache .ruff_cache
