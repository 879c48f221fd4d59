# sentrynet: every target sets up what it needs itself (venv, images).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

LOCK_VENV := .cache/lock-venv
# The node image's runtime closure: the image module's NODE_REQUIREMENTS (a unit test checks).
NODE_REQUIREMENTS := libp2p trio prometheus-client

.PHONY: lock help venv images images-tag test test-unit lint fmt testnet-sentry bench clean clean-images down

help:
	@echo "make testnet-sentry  venv + images + sentry testnet + scenario + report + teardown"
	@echo "make test            venv + images + unit, loopback and Docker tests"
	@echo "make lint            ruff + mypy"
	@echo "make images          build the node image (no-op when up to date)"
	@echo "make clean-images    remove sentrynet-node images no container uses"
	@echo "make bench           measured figures into bench/results/"
	@echo "make down            remove every sentrynet testnet on this machine"
	@echo "make clean           venv, caches, results"

venv: $(STAMP)

# One venv for everything: the bench extra (matplotlib) too, because the unit tests exercise
# the bench plots.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev,bench]'
	touch $@

# Base image (pulled or debootstrapped), host wheelhouse, node image tagged by content hash.
# Prints "... is up to date" and does nothing when node/, the node lock (constraints-node.txt)
# and the Dockerfile are unchanged; harness, test and bench dependencies never rebuild it.
images: venv
	$(BIN)/sentrynet images build

images-tag: venv
	@$(BIN)/sentrynet images tag

# Images first (the Docker tests need them), then one pytest run; conftest orders it
# unit -> loopback/netns -> docker -> scenario, so the fast failures come first.
test: venv images
	$(BIN)/pytest $(PYTEST_ARGS)

test-unit: venv
	$(BIN)/pytest -m "not docker and not scenario" $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

testnet-sentry: venv images
	$(BIN)/sentrynet scenario sentry $(SCENARIO_ARGS)

bench: venv images
	$(BIN)/python -m bench.run $(BENCH_ARGS)

down: venv
	$(BIN)/sentrynet down --all

clean:
	rm -rf $(VENV) .cache build *.egg-info .pytest_cache .mypy_cache .ruff_cache results

# Without -f: an image a container still uses stays. The base image is kept (rebuilding it
# takes a minute); remove it with `docker rmi sentrynet-base:bookworm`.
clean-images:
	docker images --filter label=sentrynet.image=node --format '{{.Repository}}:{{.Tag}}' | xargs -r docker rmi || true

# Regenerate both locks from pyproject.toml in a throwaway venv:
# - constraints.txt, the full lock of the host venv (runtime, dev and bench extras);
# - constraints-node.txt, the node image's own lock: the closure of NODE_REQUIREMENTS only,
#   resolved by pip against constraints.txt into an empty --target (so it ignores what the
#   lock venv has installed) and frozen from there. Only this one goes into the image's tag.
lock:
	rm -rf $(LOCK_VENV) && $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install -q '.[dev,bench]'
	{ echo "# Lock for the host venv: pip install -c constraints.txt. Regenerate with 'make lock'."; \
	  $(LOCK_VENV)/bin/pip freeze --all --exclude-editable | grep -v -E '^(pip|sentrynet)( @ |==)'; } > constraints.txt
	$(LOCK_VENV)/bin/pip install -q --no-compile --target $(LOCK_VENV)/node -c constraints.txt $(NODE_REQUIREMENTS)
	{ echo "# Lock for the node image ($(NODE_REQUIREMENTS) and their dependencies)."; \
	  echo "# Generated from constraints.txt by 'make lock'; the image tag hashes this file."; \
	  $(LOCK_VENV)/bin/pip freeze --all --path $(LOCK_VENV)/node; } > constraints-node.txt
