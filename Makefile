# Strangler: see README.md.
GO        ?= go
BIN       := bin
PKGS      := ./...
TEST_FLAGS ?= -race -timeout 30m

.PHONY: all build test lint fmt-check vet demo bench postgres ops-tools clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/... ./example-monolith ./example-services/...

# Every test, against real PostgreSQL clusters the tests start themselves.
test: postgres ops-tools fmt-check vet
	$(GO) test $(TEST_FLAGS) $(PKGS)

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
