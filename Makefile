# weft — run `make help` for the targets.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION ?= $(shell git rev-parse --verify -q HEAD 2>/dev/null || echo unknown)
LDFLAGS  := -X github.com/weftmesh/weft/internal/version.Version=$(VERSION) \
            -X github.com/weftmesh/weft/internal/version.Revision=$(REVISION)
TOOL     := go tool -modfile=hack/tools/go.mod
# Every file's and the images' created time: the commit's, so the same commit
# gives the same image digests.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
REGISTRY ?= ghcr.io/weftmesh
# Integration tests start API servers; give a cold 2-core machine room.
TEST_TIMEOUT ?= 30m

.PHONY: help
help: ## List the targets.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: run
run: apiserver build ## The whole mesh on this machine: API server, weft-controller with its webhook, the canary sample carrying calls, a live view (Ctrl-C stops all).
	@bin/weft-run

.PHONY: test
test: testbins testdeps ## Run unit and integration tests (integration against a real kube-apiserver).
	go test -timeout $(TEST_TIMEOUT) ./...
	go -C hack/images test -timeout $(TEST_TIMEOUT) ./...
	go -C hack/promql test -timeout $(TEST_TIMEOUT) ./...

.PHONY: build
build: ## Build weft-controller, weft, weft-init, the weft-run dev launcher and its demo workload weft-demo into bin/.
	go build -ldflags '$(LDFLAGS)' -o bin/ ./cmd/weft-controller ./cmd/weft ./cmd/weft-init ./hack/weft-run ./hack/weft-demo

.PHONY: images
images: ## Build the weft-controller, weft and weft-init images (no Docker) into bin/images/*.tar.
	go -C hack/images run . -repo ../.. -out ../../bin/images -registry '$(REGISTRY)' \
		-version '$(VERSION)' -revision '$(REVISION)' -source-date-epoch '$(SOURCE_DATE_EPOCH)'

.PHONY: apiserver
apiserver: ## Build kube-apiserver, etcd and kubectl from Go modules into bin/ (reused when current).
	@hack/build-testbins.sh

.PHONY: testbins
testbins: apiserver ## Also build cert-manager's controllers (for the certificate tests) and helm (for the chart's tests) into bin/.
	@hack/build-cert-manager.sh
	@hack/build-helm.sh

.PHONY: testdeps
testdeps: ## Install iptables and iproute2 when running as root and they are missing (weft-init's test).
	@hack/install-test-deps.sh

# `make bench BENCH_FLAGS=--large` for the large profile; BENCH_FLAGS=--weft-only skips istiod.
BENCH_FLAGS ?=

.PHONY: bench
bench: apiserver bench-peer ## Measure weft and istiod side by side (issue 14's mesh; ~1 h on 2 cores): table, bench/results/*.{json,md,svg}.
	go run ./hack/bench $(BENCH_FLAGS)

.PHONY: bench-peer
bench-peer: ## Build istiod's pilot-discovery from the istio.io/istio module into bin/ (≈5 min once; reused until hack/istiod changes its version).
	@hack/build-istiod.sh

.PHONY: generate
generate: ## Regenerate deepcopy code and CRD YAML from crds/v1alpha1, the chart's copies of the CRDs and RBAC, and weft install's rendered config/default.
	$(TOOL) controller-gen object:headerFile=hack/boilerplate.go.txt paths=./crds/...
	$(TOOL) controller-gen crd paths=./crds/... output:crd:dir=crds
	hack/gen-kustomization.sh crds
	hack/gen-chart-files.sh
	hack/gen-install.sh

.PHONY: verify
verify: ## Fail when generated files are stale, or on gofmt, go vet or go mod tidy drift.
	hack/verify.sh

.PHONY: clean
clean: ## Remove bin/ (the next run rebuilds kube-apiserver and etcd from cache).
	rm -rf bin
