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
	@echo "make test     fmt check, build + tests linted by clippy -D warnings, CRD drift check, unit + integration tests on a fresh control plane, the real node, then the RBAC audit of the run"
	@echo "make bench    benchmarks against a fresh control plane (see docs/benchmarks.md)"
	@echo "make bench-peers  our IPAM plugin and Whereabouts side by side, same driver and workload, one table (see docs/benchmarks.md)"
	@echo "make fuzz     coverage-guided fuzzing of every parser on stable Rust (>= 10 million inputs, at most ~20 min)"
	@echo "make crds     regenerate crds/ from the Rust types"
	@echo "make testenv  build (or reuse) the test control plane binary and print its path"
	@echo "make images   build the OCI image archives (controller-manager, node installer) and the kubectl-spiderpool plugin (static), and print their paths"
	@echo "make node-smoke  (root) a real node next to the control plane; proves it and that the host is restored"
	@echo "make chaos    the long chaos run (>= 10,000 operations, its own control plane; CHAOS_SEED replays, CHAOS_OPS sizes it)"

## System packages the tests need (Debian), the real node's included. Installs only what is missing.
# iproute2, curl and containernetworking-plugins for the CNI suites; containerd, runc, umoci,
# busybox-static, iptables and nftables for the real node (e2e/testenv); musl-tools and umoci for
# the images; openssl and python3 for e2e/testenv/node-smoke.sh; prometheus (prometheus and
# promtool) for e2e/tests/prometheus.rs.
DEB_PACKAGES := iproute2 curl containernetworking-plugins containerd runc umoci busybox-static \
	iptables nftables musl-tools openssl python3 prometheus

.PHONY: deps
deps:
	@missing=""; \
	for package in $(DEB_PACKAGES); do \
	  dpkg -s $$package >/dev/null 2>&1 || missing="$$missing $$package"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing" >&2; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi; \
	command -v go >/dev/null 2>&1 || { echo "Go (1.25 or newer) is needed to build the test control plane; it is not on PATH" >&2; exit 1; }; \
	if [ -n "$${CLIPPY_ARGS:-}" ] && [ ! -x "$${RUSTC_WORKSPACE_WRAPPER:-}" ]; then \
	  echo "clippy-driver not found: make test lints with it (rustup component add clippy)" >&2; exit 1; \
	fi; \
	rustup target list --installed 2>/dev/null | grep -qx $(MUSL_TARGET) || rustup target add $(MUSL_TARGET) >&2

## Image builds: static (musl) release binaries, assembled offline with umoci. The kubectl plugin
## ships as a static binary next to the archives (copy it onto PATH: `kubectl spiderpool ...`).
MUSL_TARGET := x86_64-unknown-linux-musl
VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' Cargo.toml | head -n 1)
IMAGES_DIR := $(TARGET_DIR)/images

.PHONY: images
images: deps
	$(CARGO) build --profile dist --target $(MUSL_TARGET) -p spiderpool-controller-manager -p spiderpool-cni -p spiderpool-kubectl-plugin --bins >&2
	@config/images/build.sh $(TARGET_DIR)/$(MUSL_TARGET)/dist $(IMAGES_DIR) $(VERSION)
	@install -m 0755 $(TARGET_DIR)/$(MUSL_TARGET)/dist/kubectl-spiderpool $(IMAGES_DIR)/kubectl-spiderpool
	@echo $(IMAGES_DIR)/kubectl-spiderpool

.PHONY: build
build:
	$(CARGO) build --workspace --bins --all-features

.PHONY: fmt-check
fmt-check:
	$(CARGO) fmt --all -- --check

.PHONY: clippy
clippy:
	$(CARGO) clippy --workspace --all-targets --all-features -- -D warnings

# crdgen is one of the workspace's binaries (`build` makes it with --all-features); running the
# built one instead of `cargo run -p spiderpool-api` avoids a second dependency build with
# another feature set.
.PHONY: crds
crds: build
	$(BIN_DIR)/crdgen crds

.PHONY: crd-check
crd-check: build
	$(BIN_DIR)/crdgen --check crds

.PHONY: testenv
testenv:
	@e2e/testenv/build.sh | tail -n 1

# Two control planes, one after the other: every suite but the real node's against the first;
# then the real node (kubelet, containerd, Multus; root only) with the images of `make images`
# installed from config/. The RBAC audit checks the roles against both runs' audit logs.
AUDIT_DIR := $(TARGET_DIR)/e2e-audit

# The test control plane (Go) builds in the background while Rust compiles: on 2 cores the two
# overlap well (long single-threaded rustc and link steps), which matters on a cold machine.
# with-testenv.sh's own build.sh call waits for it (a lock) and reports any build error itself.
.PHONY: testenv-background
testenv-background:
	@mkdir -p $(TARGET_DIR)
	@(e2e/testenv/build.sh >$(TARGET_DIR)/testenv-build.log 2>&1 &)

# `make test` lints while it compiles: clippy-driver as the workspace's compiler, which is what
# `cargo clippy` does but with code generated too, so the dependencies compile once (for the
# build) instead of twice (clippy's metadata-only pass, then the build). CLIPPY_ARGS is how
# cargo-clippy hands `-- -D warnings` to the driver. Every cargo call below `test` inherits the
# two variables; a call without them would recompile the workspace crates. The test binaries are
# compiled (and linted) before the control plane is needed, while its Go build still runs.
CLIPPY_DRIVER = $(shell rustup which clippy-driver 2>/dev/null || command -v clippy-driver)
# The real node's suite is selected by its test target, not with `-p`: `-p` resolves the
# dependencies' features for that one package and rebuilt 41 of them (53 s on 2 cores).
SUITES_ARGS := --workspace --all-features --exclude spiderpool-e2e-realnode
REALNODE_ARGS := --workspace --all-features --test realnode

#
# One build of every target (bins, crdgen included, and tests): `cargo build --bins` alone
# resolves features without the dev-dependencies (tokio's test-util, ...), and the test build
# after it recompiled tokio and everything above it.
.PHONY: build-tests
build-tests:
	$(CARGO) build $(SUITES_ARGS) --all-targets
	$(CARGO) test $(SUITES_ARGS) --no-run
	$(CARGO) test $(REALNODE_ARGS) --no-run

.PHONY: test
test: export RUSTC_WORKSPACE_WRAPPER = $(CLIPPY_DRIVER)
test: export CLIPPY_ARGS = -D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__
#
# The images (a release build for another target, with its own lock in the target directory)
# build while the first suites run: those leave about two thirds of the CPU idle (measured 34 %
# busy), and only the real node needs the images.
test: deps testenv-background fmt-check build-tests
	$(BIN_DIR)/crdgen --check crds
	@start=$$(date +%s); status=0; \
	($(MAKE) -s --no-print-directory images >$(TARGET_DIR)/images.out 2>$(TARGET_DIR)/images.log; \
	  echo $$? >$(TARGET_DIR)/images.rc) & images_pid=$$!; \
	rm -rf $(AUDIT_DIR); \
	SPIDERPOOL_AUDIT_DIR=$(AUDIT_DIR) SPIDERPOOL_BIN_DIR=$(BIN_DIR) e2e/scripts/with-testenv.sh --with-controller-manager -- \
	  e2e/scripts/with-rbac-audit.sh --save suites -- \
	  $(CARGO) test $(SUITES_ARGS) --no-fail-fast || status=1; \
	echo "suites took $$(( $$(date +%s) - start ))s"; \
	wait $$images_pid; \
	if [ "$$(cat $(TARGET_DIR)/images.rc)" != 0 ]; then \
	  tail -n 40 $(TARGET_DIR)/images.log >&2; echo "make images failed (log: $(TARGET_DIR)/images.log)" >&2; exit 1; \
	fi; \
	images=$$(grep '\.oci\.tar$$' $(TARGET_DIR)/images.out | tr '\n' ' '); \
	echo "images built in the background: $$images"; node_start=$$(date +%s); \
	SPIDERPOOL_AUDIT_DIR=$(AUDIT_DIR) SPIDERPOOL_IMAGES="$$images" SPIDERPOOL_BIN_DIR=$(BIN_DIR) \
	  e2e/scripts/with-testenv.sh --with-node -- \
	  e2e/scripts/with-rbac-audit.sh --save realnode --check-saved -- \
	  $(CARGO) test $(REALNODE_ARGS) || status=1; \
	echo "real node took $$(( $$(date +%s) - node_start ))s; tests took $$(( $$(date +%s) - start ))s"; \
	exit $$status

# On a real node where the machine allows it (root: kubelet, containerd and Multus next to the
# control plane); elsewhere the control-plane-only demo, saying why.
.PHONY: run
run: deps build
	@if [ "$$(id -u)" = 0 ]; then \
	  images=$$($(MAKE) -s --no-print-directory images | grep '\.oci\.tar$$' | tr '\n' ' '); \
	  INTERRUPT_IS_SUCCESS=1 SPIDERPOOL_IMAGES="$$images" SPIDERPOOL_BIN_DIR=$(BIN_DIR) \
	    e2e/scripts/with-testenv.sh --with-node -- e2e/scripts/demo-node.sh; \
	else \
	  echo "not root: no real node (kubelet and containerd need root); showing the control-plane demo" >&2; \
	  INTERRUPT_IS_SUCCESS=1 SPIDERPOOL_BIN_DIR=$(BIN_DIR) e2e/scripts/with-testenv.sh --with-controller-manager -- e2e/scripts/demo.sh; \
	fi

.PHONY: bench
bench: deps
	$(CARGO) build --workspace --bins --all-features --release
	SPIDERPOOL_BIN_DIR=$(TARGET_DIR)/release e2e/scripts/with-testenv.sh --with-controller-manager -- \
	  $(CARGO) test --release -p spiderpool-e2e -- --ignored --nocapture --test-threads=1 --skip peers_ --skip a_long_chaos_run 2>&1 | tee bench.log | grep -E '^BENCH|^test result|panicked'

# Ours and Whereabouts side by side (e2e/scripts/bench-peers.sh): the same driver and workload
# as `make bench`'s IPAM benchmark, each plugin on a fresh control plane, one table. Builds
# Whereabouts from the Go module proxy (e2e/peers/build.sh, cached) and our release plugin.
.PHONY: bench-peers
bench-peers: deps
	e2e/scripts/bench-peers.sh

# The long chaos run (e2e/tests/chaos.rs): its own control plane, which it restarts; the short
# run is part of `make test`. Prints the seed, the operations by kind, kills and restarts.
.PHONY: chaos
chaos: deps build
	@start=$$(date +%s); \
	TESTENV=$$(e2e/testenv/build.sh | tail -n 1) SPIDERPOOL_BIN_DIR=$(BIN_DIR) \
	  $(CARGO) test -p spiderpool-e2e --test chaos -- --ignored --nocapture 2>&1 | tee chaos.log | grep -E '^CHAOS|^test result|panicked'; \
	status=$${PIPESTATUS[0]}; echo "make chaos took $$(( $$(date +%s) - start ))s"; exit $$status

# libFuzzer on the stable toolchain (see e2e/fuzz/run.sh): 10.5 million inputs over eight targets,
# two at a time, each target stopped by its wall-clock budget at the latest (1440 s in all, so
# at most about 12 min of fuzzing on 2 jobs after the instrumented build); 10 s per input at most.
.PHONY: fuzz
fuzz:
	e2e/fuzz/run.sh

.PHONY: node-smoke
node-smoke: deps
	e2e/testenv/node-smoke.sh
