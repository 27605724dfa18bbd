# Callers in other languages: the Go and TypeScript clients generated from protos/, the example orchestrator
# journeys in examples/, and the contract's compatibility check. Included by the main Makefile; `make test`
# depends on `polyglot`, so a fresh machine installs all of it (go and npm are the prerequisites; a JDK with
# Maven too for the Java example, which is skipped with a note when mvn is missing).
# See the README, "Calling from other languages".

# Pinned generator versions: change them here only. protoc-gen-go must match google.golang.org/protobuf in
# client/go/go.mod, and protoc-gen-es must match @bufbuild/protobuf in client/ts/package.json: the generated
# code is written for that runtime.
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
PROTOC_GEN_ES_VERSION      := 2.17.0

NPM_CI := npm ci --silent --no-audit --no-fund

$(BIN)/protoc-gen-go:
	GOBIN=$(BIN) go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)

$(BIN)/protoc-gen-go-grpc:
	GOBIN=$(BIN) go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

# Installed under .cache/ like buf, so the npm package's own pinned dependencies stay beside it.
$(BIN)/protoc-gen-es:
	mkdir -p .cache/protoc-gen-es
	npm install --silent --no-audit --no-fund --prefix .cache/protoc-gen-es @bufbuild/protoc-gen-es@$(PROTOC_GEN_ES_VERSION)
	mkdir -p $(BIN) && ln -sf $(CURDIR)/.cache/protoc-gen-es/node_modules/.bin/protoc-gen-es $(BIN)/protoc-gen-es

POLYGLOT_GENERATORS := $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc $(BIN)/protoc-gen-es

# npm dependencies exactly as package-lock.json pins them; redone only when the lock file changes.
client/ts/node_modules/.package-lock.json: client/ts/package-lock.json
	cd client/ts && $(NPM_CI)

# examples/ts installs the client from ../../client/ts as a packed copy (install-links, see its .npmrc), so
# the client is built first and its dist/ is what the example gets.
client/ts/dist/index.js: client/ts/node_modules/.package-lock.json $(wildcard client/ts/src/*.ts client/ts/src/gen/*/*/*.ts)
	cd client/ts && npm run --silent build

examples/ts/node_modules/.package-lock.json: examples/ts/package-lock.json client/ts/dist/index.js
	cd examples/ts && $(NPM_CI)

.PHONY: polyglot-tools
polyglot-tools: $(POLYGLOT_GENERATORS) ## Install the pinned Go and TypeScript generators into .bin/

# Starts clean so a removed .proto leaves no stale file behind (the drift test generates into an empty folder).
.PHONY: polyglot-gen
polyglot-gen: $(POLYGLOT_GENERATORS) ## Regenerate the Go and TypeScript clients from protos/ (buf.gen.yaml)
	rm -rf client/go/stepexecutor client/ts/src/gen
	$(BIN)/buf generate

.PHONY: polyglot-deps
polyglot-deps: client/ts/dist/index.js examples/ts/node_modules/.package-lock.json ## Pinned Go modules, npm and Maven packages of the clients and examples
	cd client/go && go mod download
	cd examples/go && go mod download
	@# The Java example is optional for a person without a JDK; CI has one, and its test fails there without it.
	@if command -v mvn >/dev/null; then echo "cd examples/java && mvn -B -q -Dstyle.color=never package"; cd examples/java && mvn -B -q -Dstyle.color=never package; \
	 else echo "mvn not found: the Java example is not built (install a JDK 17+ and Maven)"; fi

.PHONY: polyglot
polyglot: polyglot-tools polyglot-deps ## Everything tests/polyglot needs: generators, Go modules, npm packages

.PHONY: polyglot-test
polyglot-test: $(STAMP) polyglot ## Drift, compatibility (buf breaking) and the Go/TypeScript example journeys only
	PATH=$(BIN):$$PATH $(PY) -m pytest tests/polyglot $(PYTEST_ARGS)
