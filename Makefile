# One entry point for people and CI. Every install step lives here, so a fresh machine needs nothing but
# python3, go, npm (and apt-get for redis-server) — see README "Quick start".
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON      ?= python3
VENV        := .venv
PY          := $(VENV)/bin/python
BIN         := $(CURDIR)/.bin
# Pinned tool versions: change them here only.
UV_VERSION  := 0.13.8
GHZ_VERSION := v0.121.0
BUF_VERSION := 1.75.0
# Jaeger v2 is pinned by tools/jaeger/go.mod (v1.76.0 of the module), Toxiproxy by tools/toxiproxy/go.mod
# (v2.12.0); see `$(BIN)/jaeger` and `$(BIN)/toxiproxy-server` below.
UV          := $(BIN)/uv
# uv uses the machine's python3 (never downloads an interpreter) and the lock file as it is.
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := $(shell command -v $(PYTHON))

EMULATOR_PORT ?= 4566
SERVICE_ADDR  ?= 127.0.0.1:50051
RUN_DIR       := var/run

MEMBERS := client/stepexecutor-proto client/otp-step-client server/otp-step-service server/cognito-emulator server/otp-step-demo
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml uv.lock $(addsuffix /pyproject.toml,$(MEMBERS)) | sha1sum | cut -c1-12)

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

# ---------------------------------------------------------------------------------------------------------
# Set-up
$(UV):
	$(PYTHON) -m venv .cache/uv
	.cache/uv/bin/pip install --quiet uv==$(UV_VERSION)
	mkdir -p $(BIN) && ln -sf $(CURDIR)/.cache/uv/bin/uv $(UV)

# Every workspace member editable, plus the dev group, exactly as uv.lock pins them.
$(STAMP): pyproject.toml uv.lock $(addsuffix /pyproject.toml,$(MEMBERS)) | $(UV)
	$(UV) sync --frozen --all-packages --quiet
	@rm -f $(VENV)/.installed-* && touch $@

.PHONY: venv
venv: $(STAMP) ## Create the virtualenv with every workspace package (uv.lock)

$(BIN)/ghz:
	GOBIN=$(BIN) go install github.com/bojand/ghz/cmd/ghz@$(GHZ_VERSION)

# Jaeger's own go.mod has replace directives, so `go install ...@version` refuses it; a tool module of ours
# (tools/jaeger, committed with its go.sum) pins it instead.
$(BIN)/jaeger: tools/jaeger/go.mod tools/jaeger/go.sum
	mkdir -p $(BIN)
	cd tools/jaeger && go build -o $(BIN)/jaeger github.com/jaegertracing/jaeger/cmd/jaeger

# Toxiproxy (the fleet tests' network faults between the service and Redis / Cognito), pinned the same way:
# tools/toxiproxy/go.mod holds v2.12.0 of github.com/Shopify/toxiproxy/v2.
$(BIN)/toxiproxy-server: tools/toxiproxy/go.mod tools/toxiproxy/go.sum
	mkdir -p $(BIN)
	cd tools/toxiproxy && go build -o $(BIN)/toxiproxy-server github.com/Shopify/toxiproxy/v2/cmd/server

$(BIN)/buf:
	mkdir -p .cache/buf
	npm install --silent --no-audit --no-fund --prefix .cache/buf @bufbuild/buf@$(BUF_VERSION)
	mkdir -p $(BIN) && ln -sf $(CURDIR)/.cache/buf/node_modules/.bin/buf $(BIN)/buf

.PHONY: redis
redis: ## Install redis-server from apt when it is missing
	@command -v redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }

.PHONY: lock
lock: $(UV) ## Re-resolve uv.lock after changing a pyproject.toml
	$(UV) lock

.PHONY: tools
tools: $(BIN)/ghz $(BIN)/jaeger $(BIN)/toxiproxy-server $(BIN)/buf redis prometheus ## Install ghz, Jaeger, Toxiproxy, buf (pinned), redis-server and prometheus

# ---------------------------------------------------------------------------------------------------------
# Contract
.PHONY: proto
proto: $(STAMP) ## Regenerate Python code and type stubs from protos/ (pinned generators)
	$(PY) scripts/gen_proto.py

.PHONY: lint
lint: $(STAMP) $(BIN)/buf ## ruff, mypy --strict, buf lint
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(BIN)/buf lint

# ---------------------------------------------------------------------------------------------------------
# Running
.PHONY: emulator
emulator: $(STAMP) ## Run the local Cognito emulator in the foreground (EMULATOR_PORT=$(EMULATOR_PORT))
	$(PY) -m cognito_emulator --port $(EMULATOR_PORT)

.PHONY: run
run: $(STAMP) $(if $(JAEGER),$(BIN)/jaeger) ## Start the seeded emulator and the service (JAEGER=1: and Jaeger; TLS=1: mTLS, local CA); prints how to try it
	$(PY) -m otp_step_demo --emulator-port $(EMULATOR_PORT) --listen $(SERVICE_ADDR) --run-dir $(RUN_DIR) $(if $(JAEGER),--jaeger) $(if $(TLS),--tls) $(RUN_ARGS)

# ---------------------------------------------------------------------------------------------------------
# Checking
.PHONY: test
test: $(STAMP) tools polyglot image chart-tools ## Lint, then the whole test suite against real parts
	$(MAKE) --no-print-directory lint
	PATH=$(BIN):$$PATH $(PY) -m pytest $(PYTEST_ARGS)

# The fast tier: pure Python (tests/unit, the architecture guard, the docs), no server or tool outside the venv.
.PHONY: test-unit
test-unit: $(STAMP) ## The fast tier only, in seconds: domain units, the guards, the docs build
	$(PY) -m pytest -m unit -q tests/unit tests/test_architecture.py tests/docs $(PYTEST_ARGS)

include mk/docs.mk
include mk/conformance.mk
include mk/metrics.mk
include mk/image.mk

.PHONY: bench
bench: $(STAMP) $(BIN)/ghz redis ## Load test with ghz (QUICK=1 for a smoke run); results under bench-results/
	PATH=$(BIN):$$PATH $(PY) -m bench $(if $(QUICK),--quick)

.PHONY: clean
clean: ## Remove generated state (not the venv or tools)
	rm -rf var bench-results .pytest_cache .mypy_cache .ruff_cache

include mk/polyglot.mk
