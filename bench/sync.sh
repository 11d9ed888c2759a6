#!/bin/sh
# Benchmarks of datasync sync against real PostgreSQL clusters the Go
# benchmarks start themselves (see internal/pgtest):
#   - apply throughput: a backlog of small mixed transactions (5 row changes
#     each), applied by one catching-up run; target >= 10,000 changes/s.
#   - end-to-end lag: p50/p99 from source insert to target insert under a
#     workload of ~2,000 changes/s for 10 s; target p99 <= 1 s.
# Usage: bench/sync.sh [TRANSACTIONS]   (default 20000 backlog transactions)
set -eu
cd "$(dirname "$0")/.."
n="${1:-20000}"
go test -run '^$' -bench 'BenchmarkApplyBacklog$' -benchtime "${n}x" -count 1 ./internal/cdc/apply
go test -run '^$' -bench 'BenchmarkEndToEndLag$' -benchtime 1x -count 1 ./internal/cdc/apply
