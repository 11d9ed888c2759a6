#!/usr/bin/env bash
# Benchmark of datasync backfill against the fastest plain copy there is:
# psql's binary COPY out of the source piped into a binary COPY into the
# target. Two throwaway clusters (source and target) run on this machine.
#
#   bench/backfill.sh              # 2,000,000 rows, 2 rounds
#   ROWS=500000 ROUNDS=1 bench/backfill.sh
#   ARGS="--batch-size 50000" bench/backfill.sh   # extra datasync flags
#
# Each round truncates the target (and forgets datasync's checkpoints)
# before each contender. Prints rows/s of each and the ratio to the pipe
# (above 1: faster than the pipe). On a shared machine the figures move a
# lot from run to run: compare contenders within a round, over several.
set -euo pipefail

ROWS=${ROWS:-2000000}
ROUNDS=${ROUNDS:-2}
ARGS=${ARGS:-}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
bin=$("$repo/scripts/ensure-postgres.sh")

work=$(mktemp -d /tmp/bench-backfill-XXXXXX)
as_pg=()
if [[ $(id -u) -eq 0 ]]; then
  as_pg=(runuser -u postgres --)
  chown postgres "$work"
fi

free_port() {
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
  else
    shuf -i 20000-60000 -n 1
  fi
}

start_cluster() { # name port
  local dir=$work/$1
  "${as_pg[@]}" mkdir -p "$dir"
  "${as_pg[@]}" "$bin/initdb" -D "$dir" -U postgres -A trust -E UTF8 --locale=C --no-sync >/dev/null
  cat >>"$dir/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$work'
port = $2
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 256MB
max_wal_size = 4GB
checkpoint_timeout = 30min
CONF
  "${as_pg[@]}" "$bin/pg_ctl" start -w -D "$dir" -l "$work/$1.log" >/dev/null
}

stop_all() {
  for c in source target; do
    [[ -d $work/$c ]] && "${as_pg[@]}" "$bin/pg_ctl" stop -D "$work/$c" -m immediate >/dev/null 2>&1 || true
  done
  rm -rf "$work"
}
trap stop_all EXIT

src_port=$(free_port)
dst_port=$(free_port)
start_cluster source "$src_port"
start_cluster target "$dst_port"
SRC="postgres://postgres@127.0.0.1:$src_port/postgres?sslmode=disable"
DST="postgres://postgres@127.0.0.1:$dst_port/postgres?sslmode=disable"

schema='CREATE TABLE users (id bigserial PRIMARY KEY, email text NOT NULL, username text NOT NULL,
  created_at timestamptz NOT NULL, updated_at timestamptz)'
psql -q -X -v ON_ERROR_STOP=1 "$SRC" -c "$schema" -c "INSERT INTO users (email, username, created_at, updated_at)
  SELECT 'user' || i || '@example.com', 'user_' || i, timestamptz '2015-01-01' + i * interval '37 seconds',
         CASE WHEN i % 3 = 0 THEN NULL ELSE timestamptz '2020-01-01' + i * interval '11 seconds' END
  FROM generate_series(1, $ROWS) i" -c "VACUUM ANALYZE users"
psql -q -X -v ON_ERROR_STOP=1 "$DST" -c "$schema"

go build -o "$work/datasync" "$repo/cmd/datasync"

reset_target() {
  psql -q -X -v ON_ERROR_STOP=1 "$DST" -c "TRUNCATE users" -c "DROP SCHEMA IF EXISTS datasync CASCADE" 2>/dev/null
  psql -q -X -v ON_ERROR_STOP=1 "$DST" -c "CHECKPOINT"
}

now() { date +%s.%N; }

# seconds CMD... runs CMD after resetting the target and prints its seconds.
seconds() {
  reset_target
  local t0 t1
  t0=$(now)
  "$@" >/dev/null 2>"$work/last.err" || { cat "$work/last.err" >&2; exit 1; }
  t1=$(now)
  local n
  n=$(psql -X -At "$DST" -c "SELECT count(*) FROM users")
  [[ $n -eq $ROWS ]] || { echo "target has $n rows, want $ROWS" >&2; exit 1; }
  echo "$t1 - $t0" | bc -l
}

pipe() {
  psql -X -v ON_ERROR_STOP=1 "$SRC" -c "COPY users TO STDOUT (FORMAT binary)" |
    psql -X -v ON_ERROR_STOP=1 "$DST" -c "COPY users FROM STDIN (FORMAT binary)"
}
# shellcheck disable=SC2086 # ARGS is a list of flags
backfill() { "$work/datasync" backfill --source "$SRC" --target "$DST" --table users $ARGS "$@"; }

rate() { printf '%.0f' "$(echo "$ROWS / $1" | bc -l)"; }

echo "rows: $ROWS, rounds: $ROUNDS, cores: $(nproc), load: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-6s %-22s %9s %12s %8s\n' round contender seconds rows/s ratio
for round in $(seq 1 "$ROUNDS"); do
  p=$(seconds pipe)
  d=$(seconds backfill)
  w=$(seconds backfill --workers 2)
  printf '%-6s %-22s %9.2f %12s %8s\n' "$round" "psql COPY pipe" "$p" "$(rate "$p")" "1.00"
  printf '%-6s %-22s %9.2f %12s %8.2f\n' "$round" "backfill (default)" "$d" "$(rate "$d")" "$(echo "$p / $d" | bc -l)"
  printf '%-6s %-22s %9.2f %12s %8.2f\n' "$round" "backfill --workers 2" "$w" "$(rate "$w")" "$(echo "$p / $w" | bc -l)"
done
