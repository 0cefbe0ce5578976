# Parley — build, run and test. `make test` is the README's test command
# and what CI runs (.ci/run).

GO      ?= go
PKGS    ?= ./...
GOFLAGS ?= -buildvcs=false
export GOFLAGS

.PHONY: all build run test test-short vet fmt-check bench fuzz clean

all: build

## build: the parley binary in ./bin
build:
	$(GO) build -o bin/parley ./cmd/parley

## run: Parley with embedded NATS, the demo page and the echo agent
run:
	$(GO) run ./cmd/parley serve

## test: formatting, vet, and every test with the race detector
test: fmt-check vet
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

## test-short: the quick tests only (no subprocesses), without -race
test-short:
	$(GO) test -short -count=1 $(PKGS)

vet:
	$(GO) vet $(PKGS)

fmt-check:
	@out=$$(gofmt -l $$(git ls-files -co --exclude-standard -- '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi

## bench: the benchmarks whose figures go into docs/BENCHMARKS.md
bench:
	$(GO) test -run '^$$' -bench . -benchtime 2x -timeout 20m ./cmd/parley/

## fuzz: a short run of every fuzz target (FUZZTIME per target)
FUZZTIME ?= 15s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "fuzz $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

clean:
	rm -rf bin parley-data
