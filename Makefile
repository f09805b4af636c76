# amime — see README.md. `make lab` brings up the lab and runs the guided tour;
# `make test` runs every test (unit and end-to-end; end-to-end needs root).

GO        ?= go
BIN       := $(CURDIR)/bin
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
export PATH := $(PATH):/usr/local/go/bin

.PHONY: all deps build amime controlplane lab tour docs down test unit e2e vet bench clean

all: build

deps:
	@scripts/deps.sh

build: amime controlplane

amime:
	@echo "build: bin/amime, bin/amime-pod, bin/amime-cni"
	@$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/amime ./cmd/amime
	@$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/amime-pod ./cmd/amime-pod
	@$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/amime-cni ./cmd/amime-cni

# The control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# kubectl) lives in its own module; its first build takes several minutes.
controlplane:
	@echo "build: bin/amime-controlplane (upstream Kubernetes; the first build takes minutes)"
	@cd controlplane && $(GO) build -ldflags '-s -w' -o $(BIN)/amime-controlplane ./cmd/amime-controlplane
	@printf '#!/bin/sh\nexec "$$(dirname "$$0")/amime-controlplane" kubectl "$$@"\n' > $(BIN)/kubectl && chmod +x $(BIN)/kubectl
	@command -v kubectl >/dev/null 2>&1 || { echo "deps: no kubectl on PATH; linking /usr/local/bin/kubectl to bin/kubectl"; ln -sf $(BIN)/kubectl /usr/local/bin/kubectl; }

# `make lab`: everything from a fresh machine to the guided tour.
lab: deps build
	@$(BIN)/amime lab up
	@$(BIN)/amime lab tour

tour:
	@$(BIN)/amime lab tour

# docs/reference.md is generated from the commands (a unit test checks it).
docs:
	@$(GO) run ./cmd/amime docs reference > docs/reference.md

down:
	@$(BIN)/amime lab down

vet:
	@$(GO) vet ./...
	@test -z "$$(gofmt -l cmd internal test)" || { gofmt -l cmd internal test; echo "gofmt: files above need formatting"; exit 1; }

unit:
	@$(GO) test ./...

# End-to-end tests bring up their own lab (named "e2e", on its own addresses) and
# take it down at the end.
e2e: build
	@$(GO) test -tags e2e -count=1 -timeout 40m -v ./test/e2e/... -args -amime-bin=$(BIN)/amime

test: deps build vet unit e2e

bench: build
	@bench/run.sh

clean:
	rm -rf $(BIN)
