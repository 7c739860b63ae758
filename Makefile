# Slipway. Quick start on a fresh Debian machine:
#   make start   # install what is missing, build, run the all-in-one
#   make test    # install test dependencies, run every test

GO      ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
BIN     := bin/slipway
DATA    ?= slipway.local
LISTEN  ?= :8443
FUZZTIME ?= 10s
SOURCES := $(shell find . -name '*.go' -not -path './bench/*' 2>/dev/null) go.mod go.sum
# The web console's pages, built with npm into console/ui/dist, which
# go build embeds (console/assets.go).
CONSOLE := console/ui/dist/index.html
WEB_SOURCES := $(shell find console/web -path console/web/node_modules -prune -o -type f -print 2>/dev/null)

.PHONY: build start test unit e2e fuzz bench deps test-deps clean

build: $(BIN) bin/buildkitd bin/cosign

$(BIN): $(SOURCES) $(CONSOLE)
	@hack/install-deps.sh build
	$(GO) build -o $(BIN) ./cmd/slipway

$(CONSOLE): $(WEB_SOURCES)
	@hack/install-deps.sh build
	cd console/web && npm ci --no-audit --no-fund && npm run build

# buildkitd, pinned in go.mod as a tool; slipway start supervises it.
bin/buildkitd: go.mod go.sum
	@hack/install-deps.sh build
	$(GO) build -o bin/buildkitd github.com/moby/buildkit/cmd/buildkitd

# cosign, pinned in go.mod as a tool: the tests verify Slipway's
# signatures with the stock CLI.
bin/cosign: go.mod go.sum
	@hack/install-deps.sh build
	$(GO) build -o bin/cosign github.com/sigstore/cosign/v2/cmd/cosign

# SeaweedFS's weed, pinned in its own module (hack/weed: its dependencies
# are not Slipway's): the tests run its S3 gateway as the registry's
# object storage.
bin/weed: hack/weed/go.mod hack/weed/go.sum
	@hack/install-deps.sh build
	$(GO) build -C hack/weed -o ../../bin/weed github.com/seaweedfs/seaweedfs/weed

deps:
	@hack/install-deps.sh build

test-deps:
	@hack/install-deps.sh test

# Runs in the foreground; Ctrl-C (SIGINT) or SIGTERM stops it gracefully.
start: build
	@hack/install-deps.sh start
	@hack/ensure-docker.sh $(DATA)
	./$(BIN) start --data-dir $(DATA) --listen $(LISTEN)

# Every test: unit, API, store, and end-to-end against the real binary.
test: test-deps build bin/weed
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 40m ./...

unit: build
	$(GO) test -count=1 -timeout 15m $$($(GO) list ./... | grep -v /e2e)

# Every fuzz target for FUZZTIME each (default 10s); CI runs it after test.
fuzz:
	FUZZTIME=$(FUZZTIME) GO=$(GO) hack/fuzz.sh

e2e: test-deps build bin/weed
	$(GO) test -count=1 -timeout 15m -v ./e2e/...

# One run of every benchmark; each prints its ratios against its peer.
# Results go to BENCHMARKS.md by hand. fsbench first: on a file system
# without a journal, creating files costs more for minutes after a large
# delete, and the registry and rebase figures move with it.
bench: build
	@hack/install-deps.sh bench
	$(GO) run ./bench/fsbench
	$(GO) run ./bench/apibench
	$(GO) run ./bench/registrybench
	$(GO) run ./bench/buildbench
	$(GO) run ./bench/rebasebench -n 1000
	$(GO) run ./bench/schedbench
	$(GO) run ./bench/proxybench
	$(GO) run ./bench/proxybench -mode nftables
	$(GO) run ./bench/proxybench -mode nftables -client pod
	$(GO) run ./bench/deploybench
	$(GO) run ./bench/policybench
	$(GO) run ./bench/scanbench
	$(GO) run ./bench/routerbench
	$(GO) run ./bench/gcbench
	$(GO) run ./bench/failoverbench

clean:
	rm -rf bin console/ui/dist
