#!/usr/bin/env bash
# Benchmark of datasync verify against its baselines, on two PostgreSQL
# clusters started here with ROWS rows per side (default 2,000,000):
#
#   (a) floor:  the fastest in-database whole-table hash, both sides at once
#               (count and sum of hash_record_extended(t, 0));
#   (b) stream: both tables read ordered by key and compared row by row in Go
#               (bench/verifybench);
#   (c) verify: datasync verify on identical tables, then on tables with 10
#               scattered differences, which must be found exactly.
#
# Bytes received are counted by a net.Conn wrapper around each connection:
# verifybench's own, and datasync verify's hidden --debug-bytes flag; neither
# counts the connection set-up.
#
# Usage: bench/verify.sh            (ROWS=... RUNS=... to change the size and repeats)
set -euo pipefail

ROWS=${ROWS:-2000000}
RUNS=${RUNS:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PG_BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
DIR=$(mktemp -d /tmp/verify-bench.XXXXXX)
AS=()
if [ "$(id -u)" = 0 ]; then
	chown postgres "$DIR"
	AS=(runuser -u postgres --)
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

PORTS=()
cleanup() {
	for p in "${PORTS[@]}"; do
		"${AS[@]}" "$PG_BIN/pg_ctl" stop -D "$DIR/data$p" -m immediate >/dev/null 2>&1 || true
	done
	rm -rf "$DIR"
}
trap cleanup EXIT

start_cluster() {
	local port
	port=$(free_port)
	"${AS[@]}" "$PG_BIN/initdb" -D "$DIR/data$port" -U postgres -A trust -E UTF8 --locale=C --no-sync >/dev/null
	cat >>"$DIR/data$port/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$DIR'
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 512MB
EOF
	"${AS[@]}" "$PG_BIN/pg_ctl" start -w -D "$DIR/data$port" -l "$DIR/log$port" >/dev/null
	PORTS+=("$port")
}

start_cluster
start_cluster
SRC="postgres://postgres@127.0.0.1:${PORTS[0]}/postgres"
DST="postgres://postgres@127.0.0.1:${PORTS[1]}/postgres"

echo "building datasync and verifybench"
(cd "$ROOT" && go build -o "$DIR/datasync" ./cmd/datasync && go build -o "$DIR/verifybench" ./bench/verifybench)

echo "loading $ROWS rows into each cluster"
LOAD="CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL, username text NOT NULL,
	created_at timestamptz, balance numeric(12,2), note text);
INSERT INTO users SELECT g, 'user' || g || '@example.com', 'name' || g,
	timestamptz '2020-01-01 00:00:00+00' + g * interval '1 second', (g % 100000) / 100.0,
	CASE WHEN g % 3 = 0 THEN NULL ELSE 'note ' || g END
FROM generate_series(1, $ROWS) g;"
psql -q "$SRC" -c "$LOAD" -c "VACUUM ANALYZE users" &
psql -q "$DST" -c "$LOAD" -c "VACUUM ANALYZE users"
wait

# cluster_cpu prints the CPU seconds the two clusters' processes have used:
# the postmasters, their live children, and the children they have reaped
# (backends end with their connection). On a busy machine this is steadier
# than the wall time.
cluster_cpu() {
	local total=0 p pm
	for p in "${PORTS[@]}"; do
		pm=$(head -1 "$DIR/data$p/postmaster.pid")
		total=$(awk -v t="$total" '{print t + $14 + $15 + $16 + $17}' "/proc/$pm/stat")
		for c in $(cat "/proc/$pm/task/$pm/children" 2>/dev/null); do
			total=$(awk -v t="$total" '{print t + $14 + $15}' "/proc/$c/stat" 2>/dev/null || echo "$total")
		done
	done
	echo "$total / $(getconf CLK_TCK)" | bc -l
}

measure() { # measure FILE COMMAND...: appends "wall cpu" and keeps the command's output in FILE.out
	local file=$1 t0 t1 c0 c1
	shift
	c0=$(cluster_cpu)
	t0=$(date +%s.%N)
	"$@" >>"$file.out" 2>&1 || echo "exit=$?" >>"$file.out"
	t1=$(date +%s.%N)
	sleep 0.3 # let the backends end and be reaped
	c1=$(cluster_cpu)
	echo "$(echo "$t1 - $t0" | bc) $(echo "$c1 - $c0" | bc)" >>"$file"
}

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }

# Warm both caches.
"$DIR/verifybench" floor "$SRC" "$DST" users >/dev/null

# VERIFY_PGOPTIONS passes session settings to datasync verify only, e.g.
# "-c max_parallel_workers_per_gather=0" to compare plans.
verify() {
	PGOPTIONS="${VERIFY_PGOPTIONS:-}" "$DIR/datasync" verify --source "$SRC" --target "$DST" --table users --debug-bytes --report "$DIR/report.json"
}

for i in $(seq "$RUNS"); do
	measure "$DIR/floor" "$DIR/verifybench" floor "$SRC" "$DST" users
	measure "$DIR/stream" "$DIR/verifybench" stream "$SRC" "$DST" users id
	measure "$DIR/verify" verify
done
declare -A T C B
for m in floor stream verify; do
	T[$m]=$(awk '{print $1}' "$DIR/$m" | median)
	C[$m]=$(awk '{print $2}' "$DIR/$m" | median)
done
B[floor]=$(grep '^floor' "$DIR/floor.out" | tail -1 | awk '{for(i=1;i<=NF;i++) if ($i ~ /_bytes=/) {split($i,a,"="); s+=a[2]}} END {print s}')
B[stream]=$(grep '^stream' "$DIR/stream.out" | tail -1 | awk '{for(i=1;i<=NF;i++) if ($i ~ /_bytes=/) {split($i,a,"="); s+=a[2]}} END {print s}')
B[verify]=$(sed -n 's/bytes received: source \([0-9]*\), target \([0-9]*\)/\1 \2/p' "$DIR/verify.out" | tail -1 | awk '{print $1 + $2}')
if grep -q '^exit=' "$DIR/verify.out" || ! grep -q '^consistent' "$DIR/verify.out"; then
	echo "FAIL: verify of identical tables did not exit 0:"; cat "$DIR/verify.out"; exit 1
fi

echo "making 10 scattered differences in the target"
psql -q "$DST" -c "
	DELETE FROM users WHERE id IN (17, $((ROWS / 3)), $((ROWS - 5)));
	INSERT INTO users (id, email, username) VALUES ($((ROWS + 1000)), 'x', 'x'), ($((ROWS + 5000000)), 'y', 'y');
	UPDATE users SET email = 'changed' WHERE id = $((ROWS / 2));
	UPDATE users SET note = '' WHERE id = 3;                                   -- NULL in the source
	UPDATE users SET created_at = created_at + interval '1 microsecond' WHERE id = $((ROWS / 7));
	UPDATE users SET balance = balance + 0.01 WHERE id = $((ROWS / 5 * 4));
	UPDATE users SET username = 'other' WHERE id = $((ROWS - 1));"
for i in $(seq "$RUNS"); do
	measure "$DIR/verify10" verify
done
T[verify10]=$(awk '{print $1}' "$DIR/verify10" | median)
C[verify10]=$(awk '{print $2}' "$DIR/verify10" | median)
B[verify10]=$(sed -n 's/bytes received: source \([0-9]*\), target \([0-9]*\)/\1 \2/p' "$DIR/verify10.out" | tail -1 | awk '{print $1 + $2}')
if [ "$(grep -c '^exit=1$' "$DIR/verify10.out")" != "$RUNS" ]; then
	echo "FAIL: verify of differing tables did not exit 1 every time:"; cat "$DIR/verify10.out"; exit 1
fi
python3 - "$DIR/report.json" "$ROWS" <<'EOF'
import json, sys
rep = json.load(open(sys.argv[1]))
rows = int(sys.argv[2])
t = rep["tables"][0]
keys = lambda kind: sorted(k["id"] for k in t["samples"][kind])
got = (keys("missing_in_target"), keys("extra_in_target"),
       sorted((m["key"]["id"], tuple(m["columns"])) for m in t["samples"]["mismatched"]))
want = (sorted([17, rows // 3, rows - 5]), sorted([rows + 1000, rows + 5000000]),
        sorted([(rows // 2, ("email",)), (3, ("note",)), (rows // 7, ("created_at",)),
                (rows // 5 * 4, ("balance",)), (rows - 1, ("username",))]))
if got != want:
    sys.exit("FAIL: the 10 differences were not found exactly:\n got  %s\n want %s" % (got, want))
print("the 10 differences were found exactly")
EOF

echo
printf '%-38s %8s %12s %16s\n' "($ROWS rows per side, median of $RUNS)" "wall s" "server cpu s" "bytes received"
row() { printf '%-38s %8.2f %12.2f %16s\n' "$1" "${T[$2]}" "${C[$2]}" "${B[$2]}"; }
row "(a) floor: hash_record_extended" floor
row "(b) stream and compare in Go" stream
row "(c) datasync verify, identical" verify
row "(c) datasync verify, 10 differences" verify10
echo
ratio() { awk -v x="$2" -v y="$3" -v t="$4" -v l="$1" 'BEGIN {printf "%-34s %6.2fx  (target %s)\n", l, x / y, t}'; }
ratio "verify / floor, wall" "${T[verify]}" "${T[floor]}" "<= 1.5x"
ratio "verify / floor, server cpu" "${C[verify]}" "${C[floor]}" "<= 1.5x"
ratio "stream / verify, wall" "${T[stream]}" "${T[verify]}" ">= 2x"
ratio "10 differences / identical, wall" "${T[verify10]}" "${T[verify]}" "<= 2x"
ratio "10 differences / identical, cpu" "${C[verify10]}" "${C[verify]}" "<= 2x"
awk -v x="${B[verify]}" -v y="${B[stream]}" 'BEGIN {printf "%-34s %6.4f%% (target <= 1%%)\n", "verify bytes / stream bytes", 100 * x / y}'
echo "machine load (1, 5, 15 min): $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "every run (wall s, server cpu s):"
for m in floor stream verify verify10; do
	echo "  $m: $(awk '{printf "%s/%s  ", $1, $2}' "$DIR/$m")"
done
