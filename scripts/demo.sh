#!/usr/bin/env bash
# The Strangler demo, on this machine: a PostgreSQL cluster under .demo/, the
# legacy monolith with sample data, and the two new services, each with its
# own database. It prints what to try, then runs until Ctrl-C (or SIGTERM),
# which stops everything it started. Running it again starts afresh.
#
# `make demo` builds bin/ first and runs this script. Settings (environment):
#   DEMO_PG_PORT        PostgreSQL port          (default 55432)
#   DEMO_MONOLITH_PORT  example-monolith port    (default 8000)
#   DEMO_USERS_PORT     user-service port        (default 8001)
#   DEMO_PRODUCTS_PORT  product-service port     (default 8002)
#   DEMO_SEED_USERS     users in the monolith    (default 1000)
#   DEMO_SEED_PRODUCTS  products in the monolith (default 200)
#   DEMO_BIN            the built programs       (default bin/)
#   DEMO_DIR            the demo's working folder (default .demo/)
#   DEMO_NONINTERACTIVE=1  set up, check, print, stop everything and exit 0
#
# Examples:
#   make demo
#   DEMO_MONOLITH_PORT=18000 scripts/demo.sh
#   DEMO_NONINTERACTIVE=1 scripts/demo.sh    # a smoke test of the set-up
#
# The story grows in steps; later steps (the proxy, datasync) go where the
# "STEP" banners below say.
set -euo pipefail

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
  exit 0
fi
if (($# > 0)); then
  echo "demo: unexpected arguments: $*; settings come from the environment (see --help)" >&2
  exit 2
fi

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${DEMO_BIN:-$ROOT/bin}
DEMO_DIR=${DEMO_DIR:-$ROOT/.demo}
LOG_DIR="$DEMO_DIR/logs"
RUN_DIR="$DEMO_DIR/run"

PG_PORT=${DEMO_PG_PORT:-55432}
MONOLITH_PORT=${DEMO_MONOLITH_PORT:-8000}
USERS_PORT=${DEMO_USERS_PORT:-8001}
PRODUCTS_PORT=${DEMO_PRODUCTS_PORT:-8002}
SEED_USERS=${DEMO_SEED_USERS:-1000}
SEED_PRODUCTS=${DEMO_SEED_PRODUCTS:-200}
NONINTERACTIVE=${DEMO_NONINTERACTIVE:-0}

PG_BIN=""
PG_DATA=""
PG_LOG="$LOG_DIR/postgres.log"
APP_NAMES=()        # apps started, in order
declare -A APP_PIDS # app name -> pid

say() { printf '==> %s\n' "$*"; }
die() {
  printf 'demo: %s\n' "$*" >&2
  exit 1
}

# as_postgres runs a command as the postgres OS user when we are root:
# PostgreSQL refuses to run as root.
as_postgres() {
  # From /, which the postgres user can always enter.
  if [[ $(id -u) -eq 0 ]]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# http_get PORT PATH prints the raw HTTP answer (headers and body); it needs
# nothing but bash, so the demo does not depend on curl.
http_get() {
  # shellcheck disable=SC2016 # $1 and $2 are the inner shell's arguments
  timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" &&
    printf "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n" "$2" >&3 && cat <&3' _ "$1" "$2" 2>/dev/null || true
}
http_status() { http_get "$1" "$2" | head -n 1 | awk '{print $2}'; }
http_header() { http_get "$1" "$2" | tr -d '\r' | awk -v h="$3" 'tolower($1) == tolower(h) ":" {print $2; exit}'; }

# ---------------------------------------------------------------------------
# Stopping: everything started is stopped on any exit, Ctrl-C and errors
# included.
# ---------------------------------------------------------------------------

stop_pid() { # name pid: SIGTERM, then SIGKILL after 15 s
  local name=$1 pid=$2 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 150; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "demo: $name did not stop within 15s: killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

stop_postgres() {
  [[ -n $PG_BIN && -n $PG_DATA && -f $PG_DATA/postmaster.pid ]] || return 0
  as_postgres "$PG_BIN/pg_ctl" stop -D "$PG_DATA" -m fast -w -t 60 >/dev/null 2>&1 ||
    as_postgres "$PG_BIN/pg_ctl" stop -D "$PG_DATA" -m immediate -w -t 30 >/dev/null 2>&1 || true
}

cleanup() {
  local code=$? i name
  trap - EXIT INT TERM
  if ((${#APP_NAMES[@]} > 0)) || [[ -n $PG_DATA ]]; then say "stopping"; fi
  # ---- STEP (proxy, datasync sync): stop their processes here, before the apps.
  for ((i = ${#APP_NAMES[@]} - 1; i >= 0; i--)); do
    name=${APP_NAMES[i]}
    stop_pid "$name" "${APP_PIDS[$name]}"
    rm -f "$RUN_DIR/$name.pid"
  done
  stop_postgres
  # A cluster kept in a temporary folder (see STEP 1) goes with the demo; its
  # server log is kept in .demo/logs.
  if [[ -L $LOG_DIR/postgres.log && -f $PG_LOG ]]; then
    rm -f "$LOG_DIR/postgres.log"
    cp "$PG_LOG" "$LOG_DIR/postgres.log" 2>/dev/null || true
  fi
  if [[ -L $DEMO_DIR/pgdata && -n $PG_DATA ]]; then
    rm -rf "$(dirname "$PG_DATA")" "$DEMO_DIR/pgdata"
  fi
  if ((code == 0)); then say "stopped"; fi
  exit "$code"
}
trap cleanup EXIT
trap 'exit 0' INT TERM # Ctrl-C is the normal way to stop the demo

# stop_leftovers stops what an earlier run left behind when it was killed
# before it could clean up (kill -9, a closed terminal).
stop_leftovers() {
  local f pid
  for f in "$RUN_DIR"/*.pid; do
    [[ -e $f ]] || continue
    pid=$(<"$f")
    if [[ $pid =~ ^[0-9]+$ ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "^$BIN/"; then
      say "stopping $(basename "$f" .pid) left running by an earlier demo (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
  done
  local old
  old=$(readlink -f "$DEMO_DIR/pgdata" 2>/dev/null || true)
  if [[ -n $old && -f $old/postmaster.pid ]]; then
    say "stopping the PostgreSQL cluster left running by an earlier demo"
    as_postgres "$PG_BIN/pg_ctl" stop -D "$old" -m fast -w -t 60 >/dev/null 2>&1 || true
  fi
  if [[ -L $DEMO_DIR/pgdata && -n $old ]]; then rm -rf "$(dirname "$old")"; fi
  rm -rf "$DEMO_DIR/pgdata" "$LOG_DIR"
}

# ---------------------------------------------------------------------------
# STEP 1: checks and a fresh PostgreSQL cluster with a database per app.
# ---------------------------------------------------------------------------

for b in example-monolith user-service product-service; do
  [[ -x $BIN/$b ]] || die "$BIN/$b is missing: run 'make build' first (or 'make demo', which builds)"
done
if [[ $(id -u) -eq 0 ]] && ! id postgres >/dev/null 2>&1; then
  die "running as root needs the postgres OS user: install PostgreSQL (apt-get install -y postgresql)"
fi
PG_BIN=$("$ROOT/scripts/ensure-postgres.sh")

mkdir -p "$DEMO_DIR" "$RUN_DIR"
stop_leftovers
mkdir -p "$LOG_DIR"

for spec in "PostgreSQL:$PG_PORT:DEMO_PG_PORT" "example-monolith:$MONOLITH_PORT:DEMO_MONOLITH_PORT" \
  "user-service:$USERS_PORT:DEMO_USERS_PORT" "product-service:$PRODUCTS_PORT:DEMO_PRODUCTS_PORT"; do
  IFS=: read -r what port var <<<"$spec"
  if port_in_use "$port"; then
    die "port $port for $what is already in use on 127.0.0.1: stop what uses it, or pick another port with $var=PORT"
  fi
done

# The cluster lives in .demo/pgdata. When the postgres OS user cannot reach
# this checkout (a home folder closed to others), it lives in a private
# temporary folder and .demo/pgdata links to it.
PG_DATA="$DEMO_DIR/pgdata"
if [[ $(id -u) -eq 0 ]] && ! runuser -u postgres -- test -x "$DEMO_DIR"; then
  tmp=$(mktemp -d /tmp/strangler-demo.XXXXXX)
  chmod 711 "$tmp"
  mkdir "$tmp/pgdata"
  ln -s "$tmp/pgdata" "$PG_DATA"
  PG_DATA="$tmp/pgdata"
  PG_LOG="$tmp/postgres.log"
  ln -s "$PG_LOG" "$LOG_DIR/postgres.log"
else
  mkdir "$PG_DATA"
fi
touch "$PG_LOG"
if [[ $(id -u) -eq 0 ]]; then chown postgres: "$PG_DATA" "$PG_LOG"; fi
chmod 700 "$PG_DATA"

say "creating a PostgreSQL cluster in ${PG_DATA#"$ROOT/"} (server programs: $PG_BIN)"
as_postgres "$PG_BIN/initdb" -D "$PG_DATA" -U postgres -A trust -E UTF8 --locale=C --no-sync \
  >"$LOG_DIR/initdb.log" 2>&1 || die "initdb failed: see $LOG_DIR/initdb.log"
# wal_level=logical and the slots are what datasync sync needs.
cat >>"$PG_DATA/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = ''
wal_level = logical
max_replication_slots = 10
max_wal_senders = 10
EOF
as_postgres "$PG_BIN/pg_ctl" start -D "$PG_DATA" -l "$PG_LOG" -w -t 60 >/dev/null ||
  die "PostgreSQL did not start: see $LOG_DIR/postgres.log"

PG_URL="postgres://postgres@127.0.0.1:$PG_PORT"
for db in monolith users products; do
  "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres "$db" || die "could not create database $db"
done

# ---------------------------------------------------------------------------
# STEP 2: the monolith (with sample data) and the new services.
# ---------------------------------------------------------------------------

start_app() { # name binary port database [VAR=value ...]
  local name=$1 binary=$2 port=$3 db=$4
  shift 4
  # setsid: a Ctrl-C reaches this script only, which then stops the apps in
  # order. (setsid execs in place here, so $! is the app's own pid.)
  env DATABASE_URL="$PG_URL/$db?sslmode=disable" ADDR="127.0.0.1:$port" "$@" \
    setsid "$BIN/$binary" >>"$LOG_DIR/$name.log" 2>&1 &
  APP_PIDS[$name]=$!
  APP_NAMES+=("$name")
  echo "$!" >"$RUN_DIR/$name.pid"
}

wait_healthy() { # name port
  local name=$1 port=$2 i
  for ((i = 0; i < 300; i++)); do
    if ! kill -0 "${APP_PIDS[$name]}" 2>/dev/null; then
      tail -n 20 "$LOG_DIR/$name.log" >&2
      die "$name exited during start-up: see $LOG_DIR/$name.log"
    fi
    [[ $(http_status "$port" /health) == 200 ]] && return 0
    sleep 0.2
  done
  die "$name did not become healthy within 60s: see $LOG_DIR/$name.log"
}

say "starting example-monolith ($SEED_USERS users, $SEED_PRODUCTS products), user-service, product-service"
start_app monolith example-monolith "$MONOLITH_PORT" monolith SEED_USERS="$SEED_USERS" SEED_PRODUCTS="$SEED_PRODUCTS"
start_app user-service user-service "$USERS_PORT" users
start_app product-service product-service "$PRODUCTS_PORT" products
wait_healthy monolith "$MONOLITH_PORT"
wait_healthy user-service "$USERS_PORT"
wait_healthy product-service "$PRODUCTS_PORT"

# Each app says who served it; the proxy's routing is seen through this header.
for spec in "$MONOLITH_PORT:monolith" "$USERS_PORT:user-service" "$PRODUCTS_PORT:product-service"; do
  IFS=: read -r port want <<<"$spec"
  got=$(http_header "$port" /health X-Served-By)
  [[ $got == "$want" ]] || die "127.0.0.1:$port answered X-Served-By '$got', want '$want'"
done

# ---------------------------------------------------------------------------
# STEP 3 (proxy): start strangler-proxy in front of the monolith here, with a
# config routing /api/users and /api/products to the services.
# ---------------------------------------------------------------------------

# ---------------------------------------------------------------------------
# STEP 4 (datasync): backfill users and products (products -> catalog_items,
# name -> title) into the services' databases, start `datasync sync`, and
# `datasync verify` here.
# ---------------------------------------------------------------------------

# Backfill: users as they are, products renamed on the way. Progress goes to
# the log; the summary (rows, seconds, rows/s) is shown. Skipped when bin/
# has no datasync (a build of the apps alone).
if [[ -x $BIN/datasync ]]; then
  say "backfilling users into the user-service's database and products into the product-service's (datasync backfill)"
  cat >"$RUN_DIR/backfill-products.yaml" <<CONFIG
source: $PG_URL/monolith?sslmode=disable
target: $PG_URL/products?sslmode=disable
tables:
  - source: public.products
    target: public.catalog_items
    columns: {id: id, title: name, price_cents: price_cents, stock: stock, updated_at: updated_at}
CONFIG
  "$BIN/datasync" backfill --source "$PG_URL/monolith?sslmode=disable" --target "$PG_URL/users?sslmode=disable" \
    --table users 2>>"$LOG_DIR/datasync-backfill.log" || die "datasync backfill of users failed: see $LOG_DIR/datasync-backfill.log"
  "$BIN/datasync" backfill --config "$RUN_DIR/backfill-products.yaml" \
    2>>"$LOG_DIR/datasync-backfill.log" || die "datasync backfill of products failed: see $LOG_DIR/datasync-backfill.log"

  # Sync: users follow the monolith's writes from now on. It runs like the
  # apps (stopped with them, SIGTERM first); a user created through the
  # monolith must show up in the user-service.
  say "starting datasync sync of users (slot datasync_users); log in ${LOG_DIR#"$ROOT/"}/datasync-sync.log"
  setsid "$BIN/datasync" sync --name users --source "$PG_URL/monolith?sslmode=disable" \
    --target "$PG_URL/users?sslmode=disable" --table users >>"$LOG_DIR/datasync-sync.log" 2>&1 &
  APP_PIDS[datasync-sync]=$!
  APP_NAMES+=(datasync-sync)
  echo "$!" >"$RUN_DIR/datasync-sync.pid"
  # The copy done, changes come from the stream.
  for ((i = 0; i < 150; i++)); do
    grep -q 'msg=streaming' "$LOG_DIR/datasync-sync.log" 2>/dev/null && break
    kill -0 "${APP_PIDS[datasync-sync]}" 2>/dev/null || die "datasync sync stopped: see $LOG_DIR/datasync-sync.log"
    sleep 0.2
  done
  email="sync-demo-$$@example.com"
  body="{\"email\":\"$email\",\"username\":\"syncdemo$$\"}"
  # shellcheck disable=SC2016 # $1..$3 are the inner shell's arguments
  created=$(timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" &&
    printf "POST /api/users HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" "$2" "$3" >&3 &&
    cat <&3' _ "$MONOLITH_PORT" "${#body}" "$body" 2>/dev/null || true)
  new_id=$(grep -o '"id":[0-9]*' <<<"$created" | head -n 1 | cut -d: -f2)
  [[ -n $new_id ]] || die "could not create a user through the monolith: $created"
  for ((i = 0; i < 150; i++)); do
    kill -0 "${APP_PIDS[datasync-sync]}" 2>/dev/null || die "datasync sync stopped: see $LOG_DIR/datasync-sync.log"
    [[ $(http_status "$USERS_PORT" "/api/users/$new_id") == 200 ]] && break
    sleep 0.2
  done
  [[ $(http_status "$USERS_PORT" "/api/users/$new_id") == 200 ]] ||
    die "user $new_id created through the monolith did not reach the user-service within 30s: see $LOG_DIR/datasync-sync.log"
  say "user $new_id ($email), created through the monolith, reached the user-service's database through the change stream (datasync sync)"

  # Verify: both copies match (a difference still there after 2s is not a
  # change in flight); then a row of the users' copy is changed behind the
  # sync's back, verify finds it (exit 1) and --repair fixes it.
  USERS_VERIFY=(--recheck-delay 2s --source "$PG_URL/monolith?sslmode=disable" --target "$PG_URL/users?sslmode=disable" --table users)
  say "verifying the copies (datasync verify)"
  "$BIN/datasync" verify "${USERS_VERIFY[@]}" 2>>"$LOG_DIR/datasync-verify.log" || die "datasync verify of users failed: see $LOG_DIR/datasync-verify.log"
  "$BIN/datasync" verify --config "$RUN_DIR/backfill-products.yaml" 2>>"$LOG_DIR/datasync-verify.log" ||
    die "datasync verify of products failed: see $LOG_DIR/datasync-verify.log"
  say "changing user 1's username in the user-service's database behind datasync's back"
  "$PG_BIN/psql" -q "$PG_URL/users?sslmode=disable" -c "UPDATE users SET username = 'changed-behind-datasync' WHERE id = 1"
  rc=0
  "$BIN/datasync" verify "${USERS_VERIFY[@]}" 2>>"$LOG_DIR/datasync-verify.log" || rc=$?
  [[ $rc == 1 ]] || die "datasync verify should have found the changed row (exit 1), got exit $rc"
  say "repairing it (datasync verify --repair)"
  "$BIN/datasync" verify --repair "${USERS_VERIFY[@]}" 2>>"$LOG_DIR/datasync-verify.log" ||
    die "datasync verify --repair failed: see $LOG_DIR/datasync-verify.log"
fi

M="http://127.0.0.1:$MONOLITH_PORT"
U="http://127.0.0.1:$USERS_PORT"
P="http://127.0.0.1:$PRODUCTS_PORT"
cat <<EOF

The Strangler demo is running:
  example-monolith  $M   users, products, orders (seeded: $SEED_USERS users, $SEED_PRODUCTS products)
  user-service      $U   /api/users, own database 'users' (empty until datasync copies the users)
  product-service   $P   /api/products, own database 'products' (table catalog_items)
  PostgreSQL        $PG_URL/{monolith,users,products}
  logs              ${LOG_DIR#"$ROOT/"}/

Try:
  curl -i '$M/api/users?limit=3'
  curl -s '$M/api/users?limit=3&after=3'
  curl -s '$M/api/products/1'
  curl -s -X POST $M/api/orders -H 'Content-Type: application/json' -d '{"user_id":1,"product_id":1,"quantity":2}'
  curl -i -X POST $U/api/users -H 'Content-Type: application/json' -d '{"email":"ann@example.com","username":"ann"}'
  curl -i -X POST $P/api/products -H 'Content-Type: application/json' -d '{"name":"Lamp","price_cents":-1,"stock":3}'
  psql '$PG_URL/monolith' -c 'SELECT count(*) FROM users'

EOF

if [[ $NONINTERACTIVE == 1 ]]; then
  say "DEMO_NONINTERACTIVE=1: stopping"
  exit 0
fi

echo "Press Ctrl-C to stop everything."
exec {PAUSE_FD}<> <(:)
# Wait until a signal (the traps stop everything) or until an app dies.
while true; do
  for name in "${APP_NAMES[@]}"; do
    if ! kill -0 "${APP_PIDS[$name]}" 2>/dev/null; then
      tail -n 20 "$LOG_DIR/$name.log" >&2
      die "$name stopped unexpectedly: see $LOG_DIR/$name.log"
    fi
  done
  # A one-second pause that a signal interrupts at once and that leaves no
  # sleep process behind: read from a pipe nobody writes to.
  read -r -t 1 -u "$PAUSE_FD" || true
done
