# jit-runners: build, test and benchmark everything from one place.
# `make tools` installs what the targets need into .tools/ (idempotent).

SHELL       := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

GO          ?= go
TOOLS       := $(CURDIR)/.tools
TOOLS_BIN   := $(TOOLS)/bin
export PATH := $(TOOLS_BIN):$(PATH)
# Reproducible builds: no VCS stamping, no build id, no local paths.
export GOFLAGS := -buildvcs=false

RIE_VERSION           := v0.0.0-20261030222936-bef5c4ba774d
GOLANGCI_LINT_VERSION := v2.15.0

LAMBDAS     := $(notdir $(wildcard $(addprefix runtime/cmd/,webhook scaleup scaledown)))
LDFLAGS     := -s -w -buildid=
FUZZTIME    ?= 2m
BENCHTIME   ?= 1x

.PHONY: help
help: ## List the targets.
	@grep -hE '^[a-zA-Z_.-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

.PHONY: tools
tools: $(TOOLS_BIN)/aws-lambda-rie $(TOOLS_BIN)/golangci-lint ## Install the test tools (idempotent).
	@command -v shellcheck >/dev/null || { echo "installing shellcheck (apt)"; \
	  (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null; }
	@command -v moto_server >/dev/null || { echo "installing moto[server] (pip)"; \
	  pip install --quiet 'moto[server]' || { echo "moto_server is missing and pip could not install it" >&2; exit 1; }; }
	@echo "tools ready: $$(aws-lambda-rie --version 2>/dev/null | head -1 || true)$$(golangci-lint version --short 2>/dev/null) shellcheck $$(shellcheck --version | sed -n 2p | cut -d' ' -f2) moto $$(python3 -c 'import moto; print(moto.__version__)')"

$(TOOLS_BIN)/aws-lambda-rie:
	GOBIN=$(TOOLS_BIN) $(GO) install github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie@$(RIE_VERSION)

$(TOOLS_BIN)/golangci-lint:
	GOBIN=$(TOOLS_BIN) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)

.PHONY: build
build: ## Cross-compile the Lambdas for linux/arm64 into bin/<fn>/bootstrap (reproducible).
	@for fn in $(LAMBDAS); do \
	  mkdir -p bin/$$fn; \
	  GOOS=linux GOARCH=arm64 CGO_ENABLED=0 $(GO) build -trimpath -tags lambda.norpc -ldflags='$(LDFLAGS)' -o bin/$$fn/bootstrap ./runtime/cmd/$$fn; \
	  printf '%-10s %8d bytes  sha256 %s\n' $$fn $$(stat -c %s bin/$$fn/bootstrap) $$(sha256sum bin/$$fn/bootstrap | cut -c1-16); \
	done

.PHONY: lint
lint: ## gofmt, go vet, golangci-lint, shellcheck.
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.tools/*')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	golangci-lint run --config .github/golangci.yml ./...

.PHONY: test
test: tools lint ## Every test (starts moto, the GitHub fake and the Lambda emulator itself).
	$(GO) test -race -count=1 ./...

.PHONY: fuzz
fuzz: ## Fuzz the webhook handler for FUZZTIME (default 2m); new corpus entries land in the cache.
	$(GO) test ./runtime/webhook/ -run '^$$' -fuzz '^FuzzHandler$$' -fuzztime $(FUZZTIME)

.PHONY: bench
bench: tools ## Benchmarks: handler time and allocations, bootstrap cold start under RIE, warm latency, binary size.
	@mkdir -p out
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) -count 1 ./runtime/... | tee out/bench.txt

.PHONY: clean
clean: ## Remove build output.
	rm -rf bin out
