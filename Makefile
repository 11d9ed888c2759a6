# Strangler: see README.md.
GO        ?= go
BIN       := bin
PKGS      := ./...
TEST_FLAGS ?= -race -timeout 30m

.PHONY: all build test lint fmt-check vet demo bench postgres peers ops-tools fuzz-short fuzz-long clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/... ./example-monolith ./example-services/...

# Every test, against real PostgreSQL clusters the tests start themselves,
# then a short run of the HTTP parsers' fuzz targets.
test: postgres peers ops-tools fmt-check vet
	$(GO) test $(TEST_FLAGS) $(PKGS)
	@$(MAKE) --no-print-directory fuzz-short

# The fuzz targets of the proxy's HTTP/1.1 parsing, as package:target. Each
# runs alone (go test -fuzz takes one target at a time).
FUZZ_TARGETS := ./internal/h1serve:FuzzDifferential ./internal/h1serve:FuzzParsePlain ./internal/routing:FuzzParseResponse
FUZZ_SHORT   ?= 3s
FUZZ_LONG    ?= 10m

# A few seconds of each: new inputs beyond the seeds, on every make test.
fuzz-short:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$name ($$pkg) for $(FUZZ_SHORT)"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZ_SHORT) $$pkg >/dev/null || \
			{ $(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZ_SHORT) $$pkg; exit 1; }; \
	done

# The longer run (see docs/proxy.md): make fuzz-long FUZZ_LONG=1h
fuzz-long:
	@$(MAKE) --no-print-directory fuzz-short FUZZ_SHORT=$(FUZZ_LONG)

lint: fmt-check vet
	@if command -v staticcheck >/dev/null 2>&1; then staticcheck $(PKGS); else echo "staticcheck not installed: skipped"; fi

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet $(PKGS)

# Installs PostgreSQL from Debian's packages when its server programs are missing.
postgres:
	@scripts/ensure-postgres.sh >/dev/null

# Installs nginx and HAProxy, which some proxy tests compare with, when missing.
peers:
	@scripts/ensure-peers.sh

# Installs Chromium (the status page's browser test) and promtool (the alert
# rules' check) from Debian's packages when missing; their tests skip, saying
# why, where that is not possible.
ops-tools:
	@scripts/ensure-ops-tools.sh

demo: postgres build
	scripts/demo.sh

bench: postgres build
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

clean:
	rm -rf $(BIN) .demo
