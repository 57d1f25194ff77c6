# ppkit — the two set-up commands of a fresh Debian machine are `make run` and `make test`.
GO      ?= go
BIN     := bin/ppkit
# End-to-end tests (real stg, real QEMU, real kernel) carry the e2e build tag; `go test ./...`
# without it stays fast.
E2E_TIMEOUT ?= 85m

.PHONY: all deps build check unit test run pgo clean

all: build

deps:
	./harness/install-deps.sh

build:
	$(GO) build -o $(BIN) ./cmd/ppkit

check:
	@out=$$(gofmt -l $$(git ls-files '*.go') $$(git ls-files --others --exclude-standard '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change: $$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags e2e ./...

unit:
	$(GO) test ./...

# The longest end-to-end packages start first (go test runs packages in the order given, two at a
# time here): `tests/procedure` after `ci` rather than last, where it ran alone on a CPU half idle
# for the last ten minutes of a cold run; then `stgit` and `harness` (7 and 6 minutes cold),
# which came last in alphabetical order and ran on one CPU while the other idled.
E2E_FIRST := ./ci ./cmd/ppkit ./tests/procedure ./stgit ./harness

# The whole suite: installs what is missing, then unit and end-to-end tests.
test: deps check build
	$(GO) test -tags e2e -count=1 -timeout $(E2E_TIMEOUT) $(E2E_FIRST) ./...

# Installs what is missing, builds, and runs `ppkit test` on the shipped series.
run: deps build
	./$(BIN) test

# cmd/ppkit/default.pgo is the CPU profile `go build` optimises ppkit with (PGO, -pgo=auto): the
# replay of two procedures' raw traces (gomodel/rawtrace's BenchmarkCapture), ppkit's hottest
# loop. Regenerate it after a change to gomodel or gomodel/rawtrace; a stale profile only
# optimises less.
pgo:
	$(GO) test -run '^$$' -bench 'Capture/.*/memory' -benchtime 5s -o $${TMPDIR:-/tmp}/ppkit-pgo.test \
	  -cpuprofile cmd/ppkit/default.pgo ./gomodel/rawtrace

clean:
	rm -rf bin
