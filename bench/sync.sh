#!/bin/sh
# Benchmarks of datasync sync against real PostgreSQL clusters the Go
# benchmarks start themselves (see internal/pgtest):
#   - apply throughput: a backlog of small mixed transactions (5 row changes
#     each), applied by one catching-up run; target >= 10,000 changes/s.
#   - end-to-end lag: p50/p99 from source insert to target insert under a
#     workload of ~2,000 changes/s for 10 s; target p99 <= 1 s.
#   - first copy (mode first-copy): datasync backfill and the first copy of
#     datasync sync --until-caught-up on the same table, on two throwaway
#     clusters, with the same --workers and --batch-size; prints the ratio
#     of the sync's copy to the backfill. Target <= 1.25.
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
#        bench/sync.sh first-copy [ROWS] (default 1000000; env ROUNDS=2,
#                                         WORKERS=2, BATCH=10000)
set -eu
cd "$(dirname "$0")/.."

# --- first copy: sync's copy against backfill --------------------------------
first_copy() {
  rows="${1:-1000000}"
  rounds="${ROUNDS:-2}"
  workers="${WORKERS:-2}"
  batch="${BATCH:-10000}"
  bin=$(scripts/ensure-postgres.sh)
  work=$(mktemp -d /tmp/bench-firstcopy-XXXXXX)
  as_pg=""
  if [ "$(id -u)" -eq 0 ]; then
    as_pg="runuser -u postgres --"
    chown postgres "$work"
  fi
  fc_stop() {
    for c in source target; do
      [ -d "$work/$c" ] && $as_pg "$bin/pg_ctl" stop -D "$work/$c" -m immediate >/dev/null 2>&1 || true
    done
    rm -rf "$work"
  }
  trap fc_stop EXIT
  fc_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
  fc_start() { # name port
    $as_pg mkdir -p "$work/$1"
    $as_pg "$bin/initdb" -D "$work/$1" -U postgres -A trust -E UTF8 --locale=C --no-sync >/dev/null
    cat >>"$work/$1/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$work'
port = $2
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 256MB
max_wal_size = 4GB
checkpoint_timeout = 30min
wal_level = logical
max_replication_slots = 8
max_wal_senders = 8
CONF
    $as_pg "$bin/pg_ctl" start -w -D "$work/$1" -l "$work/$1.log" >/dev/null
  }
  sp=$(fc_port)
  fc_start source "$sp"
  dp=$(fc_port)
  fc_start target "$dp"
  src="postgres://postgres@127.0.0.1:$sp/postgres?sslmode=disable"
  dst="postgres://postgres@127.0.0.1:$dp/postgres?sslmode=disable"
  schema='CREATE TABLE users (id bigserial PRIMARY KEY, email text NOT NULL, username text NOT NULL,
    created_at timestamptz NOT NULL, updated_at timestamptz)'
  psql -q -X -v ON_ERROR_STOP=1 "$src" -c "$schema" -c "INSERT INTO users (email, username, created_at, updated_at)
    SELECT 'user' || i || '@example.com', 'user_' || i, timestamptz '2015-01-01' + i * interval '37 seconds',
           CASE WHEN i % 3 = 0 THEN NULL ELSE timestamptz '2020-01-01' + i * interval '11 seconds' END
    FROM generate_series(1, $rows) i" -c "VACUUM ANALYZE users"
  psql -q -X -v ON_ERROR_STOP=1 "$dst" -c "$schema"
  go build -o "$work/datasync" ./cmd/datasync

  fc_reset() {
    psql -q -X -v ON_ERROR_STOP=1 "$dst" -c "TRUNCATE users" -c "DROP SCHEMA IF EXISTS datasync CASCADE" -c "CHECKPOINT" 2>/dev/null
    PGOPTIONS="-c client_min_messages=warning" psql -q -X "$src" -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 'datasync_bench'" \
      -c "DROP PUBLICATION IF EXISTS datasync_bench" -c "CHECKPOINT" >/dev/null
  }
  fc_now() { date +%s.%N; }
  fc_check() {
    n=$(psql -X -At "$dst" -c "SELECT count(*) FROM users")
    [ "$n" -eq "$rows" ] || { echo "target has $n rows, want $rows" >&2; exit 1; }
  }
  # fc_backfill prints the seconds of the whole datasync backfill command.
  fc_backfill() {
    fc_reset
    t0=$(fc_now)
    "$work/datasync" backfill --source "$src" --target "$dst" --table users \
      --workers "$workers" --batch-size "$batch" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
    t1=$(fc_now)
    fc_check
    echo "$t0 $t1" | awk '{printf "%.2f", $2 - $1}'
  }
  # fc_sync prints the seconds of the sync's first copy (its "copied table"
  # log line) and of the whole datasync sync --until-caught-up command.
  fc_sync() {
    fc_reset
    t0=$(fc_now)
    "$work/datasync" sync --name bench --until-caught-up --source "$src" --target "$dst" --table users \
      --workers "$workers" --batch-size "$batch" >/dev/null 2>"$work/err" || { cat "$work/err" >&2; exit 1; }
    t1=$(fc_now)
    fc_check
    c=$(sed -n 's/.*msg="copied table".* seconds=\([0-9.]*\).*/\1/p' "$work/err")
    [ -n "$c" ] || { echo "no \"copied table\" line in the sync's log" >&2; cat "$work/err" >&2; exit 1; }
    echo "$c $t0 $t1" | awk '{printf "%.2f %.2f", $1, $3 - $2}'
  }
  echo "first copy: rows $rows, rounds $rounds, --workers $workers, --batch-size $batch, cores $(nproc), load $(cut -d' ' -f1-3 /proc/loadavg)"
  printf '%-6s %14s %16s %16s %12s %12s\n' round "backfill s" "sync copy s" "sync command s" "copy ratio" "cmd ratio"
  r=1
  while [ "$r" -le "$rounds" ]; do
    # Alternate which goes first, so neither always gets the warmer cache.
    if [ $((r % 2)) -eq 1 ]; then
      b=$(fc_backfill)
      s=$(fc_sync)
    else
      s=$(fc_sync)
      b=$(fc_backfill)
    fi
    set -- $s
    echo "$r $b $1 $2" | awk '{printf "%-6s %14.2f %16.2f %16.2f %12.2f %12.2f\n", $1, $2, $3, $4, $3 / $2, $4 / $2}'
    r=$((r + 1))
  done
  echo "copy ratio: the sync's first copy over datasync backfill's whole run (target <= 1.25)"
}

if [ "${1:-}" = first-copy ]; then
  shift
  first_copy "$@"
  exit 0
fi
# -----------------------------------------------------------------------------

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
