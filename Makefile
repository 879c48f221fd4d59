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

.PHONY: lock help venv images images-tag test test-unit lint fmt testnet-sentry bench clean clean-images down rust-node

help:
	@echo "make testnet-sentry  venv + images + sentry testnet + scenario + report + teardown"
	@echo "make test            venv + images + unit, loopback and Docker tests"
	@echo "make lint            ruff + mypy"
	@echo "make images          build the node image, and the rust node image where cargo is (no-op when up to date)"
	@echo "make rust-node       build the rust-libp2p reference node (peers/rust) with cargo"
	@echo "make clean-images    remove node and rust node images no container uses"
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
# Then the rust node image (make rust-node's binary on the same base) where cargo is found;
# without cargo it says how to get it and skips that image.
images: venv
	$(BIN)/sentrynet images build

images-tag: venv
	@$(BIN)/sentrynet images tag

# The rust-libp2p reference node (peers/rust), built on the host: cargo from PATH or from
# rustup's $HOME/.cargo/bin; the target dir (about 0.5 GB) is cached under .cache/. Cargo.lock
# is committed and --locked keeps it as is. CARGO_JOBS=1 (and the default nice) keep a cold
# build (a few minutes on 2 cores) from starving a shared machine.
RUST_DIR := peers/rust
RUST_TARGET := $(CURDIR)/.cache/rust-target
RUST_NODE := $(RUST_TARGET)/debug/sentrynet-rust-node
CARGO ?= $(shell command -v cargo 2>/dev/null || { test -x "$$HOME/.cargo/bin/cargo" && echo "$$HOME/.cargo/bin/cargo"; })
CARGO_JOBS ?=
CARGO_NICE ?= 10

rust-node:
	@test -n "$(CARGO)" || { \
	  echo "make rust-node: cargo not found (looked on PATH and in \$$HOME/.cargo/bin)." >&2; \
	  echo "Install the Rust toolchain with rustup (stable; libp2p 0.56 needs rustc 1.83 or newer)." >&2; \
	  echo "Only the rust reference node needs it; the default testnet does not." >&2; exit 1; }
	cd $(RUST_DIR) && CARGO_TARGET_DIR=$(RUST_TARGET) nice -n $(CARGO_NICE) $(CARGO) build --locked $(if $(CARGO_JOBS),-j $(CARGO_JOBS))
	@echo "rust node: $(RUST_NODE)"

# Images first (the Docker tests need them), then three pytest runs:
# 1. unit, loopback, netns and interop tests, NODE_WORKERS processes at a time (pytest-xdist
#    --dist loadfile: one file's tests on one worker, in file order, so a module's fixtures
#    are built once). Their nodes mostly wait on timers and sockets; every loopback port is
#    the kernel's pick and every netns lab has its own names and control subnet, so two
#    workers do not meet. conftest orders unit -> loopback/netns/interop: fast failures first.
# 2. the Docker tests but the scenarios, one after another (they start and kill testnets,
#    images and whole pytest tiers of their own).
# 3. the scenario tier, SCENARIO_WORKERS testnets at a time: its checks mostly wait on the
#    testnets. --dist loadscope hands each class, one testnet's checks, to one worker
#    (scenarios/test_scenarios.py).
# A workers setting of 0 runs that tier in-process. PYTEST_ARGS go to every run: select with
# paths or -k (a path outside a tier makes that run select nothing, exit 5, which is no
# failure unless no run selects anything); a -m in them replaces the split. Every run runs
# when an earlier one fails.
NODE_WORKERS ?= 2
SCENARIO_WORKERS ?= 2
xdist = $(if $(filter 0,$(1)),,-n $(1) --dist $(2))
test: venv images
	@rc1=0; rc2=0; rc3=0; \
	$(BIN)/pytest -m "not docker and not scenario" $(call xdist,$(NODE_WORKERS),loadfile) $(PYTEST_ARGS) || rc1=$$?; \
	$(BIN)/pytest -m "docker and not scenario" $(PYTEST_ARGS) || rc2=$$?; \
	$(BIN)/pytest -m scenario $(call xdist,$(SCENARIO_WORKERS),loadscope) $(PYTEST_ARGS) || rc3=$$?; \
	if [ $$rc1 = 5 ] && [ $$rc2 = 5 ] && [ $$rc3 = 5 ]; then echo "make test: no test selected" >&2; exit 5; fi; \
	for rc in $$rc1 $$rc2 $$rc3; do [ $$rc = 0 ] || [ $$rc = 5 ] || { echo "make test: failed (node tiers: exit $$rc1, Docker tier: exit $$rc2, scenario tier: exit $$rc3)" >&2; exit 1; }; done

test-unit: venv
	$(BIN)/pytest -m "not docker and not scenario" $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The sentry testnet runs no rust node: its images never involve cargo.
testnet-sentry: venv
	$(BIN)/sentrynet images build --rust no
	$(BIN)/sentrynet scenario sentry $(SCENARIO_ARGS)

bench: venv images
	$(BIN)/python -m bench.run $(BENCH_ARGS)

down: venv
	$(BIN)/sentrynet down --all

clean:
	rm -rf $(VENV) .cache build *.egg-info .pytest_cache .mypy_cache .ruff_cache results

# Without -f: an image a container still uses stays. The base image is kept (rebuilding it
# takes a minute); remove it with `docker rmi sentrynet-base:bookworm-nft`.
clean-images:
	for kind in node rust-node; do \
	  docker images --filter label=sentrynet.image=$$kind --format '{{.Repository}}:{{.Tag}}' | xargs -r docker rmi || true; \
	done

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
