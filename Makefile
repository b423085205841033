# spiderpool-rs — the two commands a newcomer needs:
#   make run    the demo: a local control plane, the CRDs, the controller-manager and the samples
#   make test   everything CI checks: fmt, clippy, CRD drift, unit and integration tests
SHELL := /usr/bin/env bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
# k8s-openapi needs a Kubernetes version for `cargo check`-style commands that skip dev-dependencies.
export K8S_OPENAPI_ENABLED_VERSION ?= 1.36
export CARGO_TERM_COLOR ?= never
TARGET_DIR := $(or $(CARGO_TARGET_DIR),$(CURDIR)/target)
BIN_DIR := $(TARGET_DIR)/debug

.PHONY: help
help:
	@echo "make run      build everything, start a local control plane, the controller-manager and the samples (Ctrl-C stops it all)"
	@echo "make test     fmt check, clippy -D warnings, CRD drift check, unit + integration tests on a fresh control plane, then the RBAC audit of that run"
	@echo "make bench    benchmarks against a fresh control plane (see docs/benchmarks.md)"
	@echo "make crds     regenerate crds/ from the Rust types"
	@echo "make testenv  build (or reuse) the test control plane binary and print its path"
	@echo "make images   build the OCI image archives (controller-manager, node installer) and print their paths"

## System packages the tests need (Debian). Installs only what is missing.
.PHONY: deps
deps:
	@missing=""; \
	command -v ip >/dev/null 2>&1 || missing="$$missing iproute2"; \
	command -v curl >/dev/null 2>&1 || missing="$$missing curl"; \
	[ -x /usr/lib/cni/macvlan ] || missing="$$missing containernetworking-plugins"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi; \
	command -v go >/dev/null 2>&1 || { echo "Go (1.25 or newer) is needed to build the test control plane; it is not on PATH" >&2; exit 1; }

## Image builds: static (musl) release binaries, assembled offline with umoci.
MUSL_TARGET := x86_64-unknown-linux-musl
VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' Cargo.toml | head -n 1)
IMAGES_DIR := $(TARGET_DIR)/images

.PHONY: image-deps
image-deps:
	@missing=""; \
	command -v umoci >/dev/null 2>&1 || missing="$$missing umoci"; \
	command -v musl-gcc >/dev/null 2>&1 || missing="$$missing musl-tools"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing" >&2; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi; \
	rustup target list --installed 2>/dev/null | grep -qx $(MUSL_TARGET) || rustup target add $(MUSL_TARGET) >&2

.PHONY: images
images: image-deps
	$(CARGO) build --profile dist --target $(MUSL_TARGET) -p spiderpool-controller-manager -p spiderpool-cni --bins >&2
	@config/images/build.sh $(TARGET_DIR)/$(MUSL_TARGET)/dist $(IMAGES_DIR) $(VERSION)

.PHONY: build
build:
	$(CARGO) build --workspace --bins --all-features

.PHONY: fmt-check
fmt-check:
	$(CARGO) fmt --all -- --check

.PHONY: clippy
clippy:
	$(CARGO) clippy --workspace --all-targets --all-features -- -D warnings

.PHONY: crds
crds:
	$(CARGO) run -q -p spiderpool-api --features crdgen --bin crdgen -- crds

.PHONY: crd-check
crd-check:
	$(CARGO) run -q -p spiderpool-api --features crdgen --bin crdgen -- --check crds

.PHONY: testenv
testenv:
	@e2e/testenv/build.sh | tail -n 1

.PHONY: test
test: deps fmt-check clippy crd-check build
	@start=$$(date +%s); \
	SPIDERPOOL_BIN_DIR=$(BIN_DIR) e2e/scripts/with-testenv.sh --with-controller-manager -- \
	  e2e/scripts/with-rbac-audit.sh -- $(CARGO) test --workspace --all-features --no-fail-fast; \
	echo "tests took $$(( $$(date +%s) - start ))s"

.PHONY: run
run: deps build
	INTERRUPT_IS_SUCCESS=1 SPIDERPOOL_BIN_DIR=$(BIN_DIR) e2e/scripts/with-testenv.sh --with-controller-manager -- e2e/scripts/demo.sh

.PHONY: bench
bench: deps
	$(CARGO) build --workspace --bins --all-features --release
	SPIDERPOOL_BIN_DIR=$(TARGET_DIR)/release e2e/scripts/with-testenv.sh --with-controller-manager -- \
	  $(CARGO) test --release -p spiderpool-e2e -- --ignored --nocapture --test-threads=1 2>&1 | tee bench.log | grep -E '^BENCH|^test result|panicked'
