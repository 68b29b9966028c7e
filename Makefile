# The project's commands. `make test` is the README's test command and what
# .ci/run runs after `make check`.

GO        ?= go
TESTFLAGS ?= -race -count=1 -timeout 8m

# Every module is built and tested on its own go.mod, as `go get` users see
# it, even though go.work ties the modules together for development
# (`make GOWORK= test` uses the workspace instead).
GOWORK ?= off
export GOWORK

# Modules besides the root: tests/ always; bench/ and cmd/ when they have
# their own go.mod.
SUBMODULES := $(patsubst %/go.mod,%,$(wildcard tests/go.mod bench/go.mod cmd/redlock/go.mod otel/go.mod))
# Modules with tests to run (bench/ holds benchmarks only: see make bench).
TESTMODULES := $(filter-out bench,$(SUBMODULES))

# All Go files that gofmt must accept (testdata is not Go to the go tool).
GOFILES = $(shell find . -name '*.go' -not -path './.git/*' -not -path '*/testdata/*' -not -path '*/vendor/*')

.PHONY: test test-docker generate check demo bench

## test: install Redis if needed, then run every test against real redis-server processes
test:
	@bash scripts/ensure-redis.sh
	@status=0; \
	echo "== go test $(TESTFLAGS) ./...   (module github.com/redlock-go/redlock)"; \
	$(GO) test $(TESTFLAGS) ./... || status=1; \
	for m in $(TESTMODULES); do \
		echo "== cd $$m && go test $(TESTFLAGS) ./..."; \
		(cd $$m && $(GO) test $(TESTFLAGS) ./...) || status=1; \
	done; \
	if [ $$status -ne 0 ]; then echo "make test: FAIL"; else echo "make test: ok"; fi; \
	exit $$status

## test-docker: the integration suite (tests/: core, Sentinel, the fault suite's short profile) with every
## server in a container on a Docker network of its own (REDLOCK_TEST_BACKEND=docker; needs a Docker engine, no registry)
test-docker:
	@bash scripts/ensure-redis.sh
	@echo "== cd tests && REDLOCK_TEST_BACKEND=docker go test $(TESTFLAGS) ./..."
	@cd tests && REDLOCK_TEST_BACKEND=docker $(GO) test $(TESTFLAGS) ./... && echo "make test-docker: ok" || { echo "make test-docker: FAIL"; exit 1; }

## generate: regenerate scripts_gen.go from lua/*.lua
generate:
	$(GO) generate ./...

## check: gofmt, go vet in every module, and a stale scripts_gen.go (all run; any failure fails)
check:
	@status=0; \
	echo "== gofmt -l"; \
	out="$$(gofmt -l $(GOFILES))"; \
	if [ -n "$$out" ]; then echo "gofmt would change these files (run gofmt -w):"; echo "$$out"; status=1; fi; \
	echo "== go vet ./..."; \
	$(GO) vet ./... || status=1; \
	for m in $(SUBMODULES); do \
		echo "== cd $$m && go vet ./..."; \
		(cd $$m && $(GO) vet ./...) || status=1; \
	done; \
	echo "== go run ./gen -check"; \
	$(GO) run ./gen -check || status=1; \
	if [ $$status -ne 0 ]; then echo "make check: FAIL"; else echo "make check: ok"; fi; \
	exit $$status

## demo: a Redlock demo on five embedded servers
demo:
	GOWORK= $(GO) run ./cmd/redlock demo

## bench: redlock vs redsync on five local redis-servers, one run (~10 min): prints the table, writes docs/benchmarks.md
## (BENCHFLAGS=... overrides "-benchtime 5s -count 5"; e.g. BENCHFLAGS="-benchtime 1x -count 1" checks it all runs)
bench:
	@bash scripts/ensure-redis.sh
	cd bench && $(GO) test -run '^$$' -bench . -benchmem $(or $(BENCHFLAGS),-benchtime 5s -count 5) -timeout 30m . | tee bench.out
	cd bench && $(GO) run ./cmd/report -in bench.out -out ../docs/benchmarks.md \
		-cmd "make bench  # = cd bench && GOWORK=off go test -run '^\$$' -bench . -benchmem $(or $(BENCHFLAGS),-benchtime 5s -count 5)" \
		-note "$(BENCHNOTE)"

.PHONY: chaos-long

## chaos-long: the fault suite's long profile (about 10 minutes; numbers in docs/safety.md)
chaos-long:
	@bash scripts/ensure-redis.sh
	cd tests && REDLOCK_CHAOS=long $(GO) test -count=1 -timeout 30m -v -run 'Chaos|Clock' ./chaos/
