#!/bin/sh
# Benchmarks of datasync sync against real PostgreSQL clusters the Go
# benchmarks start themselves (see internal/pgtest):
#   - apply throughput: a backlog of small mixed transactions (5 row changes
#     each), applied by one catching-up run; target >= 10,000 changes/s.
#   - end-to-end lag: p50/p99 from source insert to target insert under a
#     workload of ~2,000 changes/s for 10 s; target p99 <= 1 s.
# With "two-way" first (sync --two-way, both databases in one cluster with
# track_commit_timestamp = on):
#   - apply throughput per direction: the same backlog committed on each
#     side (keys of its own), then one two-way run catches up with both at
#     once; printed beside the one-way figure of the same run, as a ratio;
#     target >= 10,000 changes/s per direction.
#   - lag per direction: p50/p99 from the insert on one side to the insert
#     on the other, with both sides writing ~1,000 changes/s each for 10 s;
#     target p99 <= 1 s each way.
# Usage: bench/sync.sh [two-way] [TRANSACTIONS]   (default 20000 backlog transactions)
set -eu
cd "$(dirname "$0")/.."
mode=one-way
if [ "${1:-}" = "two-way" ]; then
	mode=two-way
	shift
fi
n="${1:-20000}"
if [ "$mode" = one-way ]; then
	go test -run '^$' -bench 'BenchmarkApplyBacklog$' -benchtime "${n}x" -count 1 ./internal/cdc/apply
	go test -run '^$' -bench 'BenchmarkEndToEndLag$' -benchtime 1x -count 1 ./internal/cdc/apply
	exit 0
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
go test -run '^$' -bench 'Benchmark(TwoWay)?ApplyBacklog$' -benchtime "${n}x" -count 1 ./internal/cdc/apply | tee "$out"
go test -run '^$' -bench 'BenchmarkTwoWayLag$' -benchtime 1x -count 1 ./internal/cdc/apply
awk '/^BenchmarkApplyBacklog/ { for (i = 1; i < NF; i++) if ($(i+1) == "changes/s") one = $i }
	/^BenchmarkTwoWayApplyBacklog/ { for (i = 1; i < NF; i++) if ($(i+1) == "changes/s/direction") two = $i }
	END { if (one > 0 && two > 0) printf "two-way apply per direction / one-way apply: %.0f / %.0f changes/s = %.2f\n", two, one, two / one }' "$out"
