# milvus-scaler — every target a user or CI runs. `make help` lists them.
SHELL := /bin/bash
export PATH := $(HOME)/.cargo/bin:$(PATH)
VENV := .venv
PYTEST := $(VENV)/bin/pytest
CARGO ?= cargo

.PHONY: help setup build lint unit e2e test run load bench clean

help: ## List targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

setup: ## Install test/demo tools (Debian packages, .venv with Milvus 2.3.5, moto, pytest, ...)
	@bash tests/setup.sh

build: ## Build every crate and test binary (debug)
	$(CARGO) build --workspace --all-targets --locked

lint: ## rustfmt and clippy, warnings are errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

unit: ## Rust unit and integration tests (no external services)
	$(CARGO) test --workspace --locked

e2e: setup build ## End-to-end tests against real Milvus, moto, Prometheus (one Milvus at a time)
	$(PYTEST) tests/e2e -p no:cacheprovider -v --durations=15

test: setup build lint unit e2e ## Everything CI runs: lint, unit tests, end-to-end tests

run: setup build ## Real Milvus 2.3.5 cluster scaled by milvus-scaler + local-hpa; live view (ARGS=--standalone: one Milvus, both APIs)
	$(VENV)/bin/python tests/demo.py $(ARGS)

load: setup ## Quiet / 10x spike / cool-down searches against `make run`'s Milvus, sized from its measured capacity (ARGS=--help)
	$(VENV)/bin/python tests/load.py $(ARGS)

bench: setup ## Benchmarks (release build); report in bench/results/
	$(CARGO) build --release --workspace --locked
	$(VENV)/bin/python bench/run.py

clean: ## Remove build output and run data (keeps .venv)
	$(CARGO) clean
	rm -rf .run

# Images and release bundle (images/, docs/images.md). PROFILE: cargo profile of the binaries that
# go in (release by default; CI uses debug: a release build does not fit its time).
PROFILE ?= release
VERSION ?=
REGISTRY ?= ghcr.io/milvus-scaler
# The same cargo command as `make build` (debug) or `make bench` (release): no rebuild with other features.
IMAGE_CARGO_BUILD := $(if $(filter release,$(PROFILE)),$(CARGO) build --release --workspace --locked,$(CARGO) build --workspace --all-targets --locked)

.PHONY: image release fuzz
image: ## Build both images with buildah (PROFILE=release|debug, VERSION=tag, REGISTRY=prefix)
	@bash tests/setup.sh --images
	$(IMAGE_CARGO_BUILD)
	PROFILE=$(PROFILE) VERSION=$(VERSION) REGISTRY=$(REGISTRY) bash images/build.sh

release: ## Release bundle in dist/: install YAMLs pinned by digest, OCI archives, SBOMs, SHA256SUMS, notes (VERSION=x.y.z required)
	@test -n "$(VERSION)" || { echo "make release: VERSION=x.y.z is required"; exit 2; }
	@bash tests/setup.sh --images
	$(IMAGE_CARGO_BUILD)
	PROFILE=$(PROFILE) VERSION=$(VERSION) REGISTRY=$(REGISTRY) bash images/release.sh

# Coverage-guided fuzzing of every parser of untrusted bytes (fuzz/, docs in fuzz/run.sh).
FUZZ_SECONDS ?= 60
fuzz: ## libFuzzer on each parser of untrusted input for FUZZ_SECONDS (default 60) each; summary in fuzz/results.md
	@bash tests/setup.sh --fuzz
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash fuzz/run.sh
