#!/usr/bin/env bash
# The Strangler demo, on this machine: a PostgreSQL cluster under .demo/, the
# legacy monolith with sample data, the two new services, each with its own
# database, and strangler-proxy in front of them all. datasync copies users and
# products to the services' databases and keeps the users in sync both ways;
# the proxy's rollout of /api/users is ramped 0 -> 10 -> 50 % with its CLI and
# users create accounts through it, on both sides; /api/products is shadowed
# (the product-service's answers compared with the monolith's) and a guard
# sets /api/users back to 0 % when the user-service goes down, after which
# every account it created is still served, by the monolith. It
# prints what to try, then runs until Ctrl-C (or SIGTERM), which stops
# everything it started. Running it again starts afresh.
#
# `make demo` builds bin/ first and runs this script. Settings (environment):
#   DEMO_PG_PORT        PostgreSQL port          (default 55432)
#   DEMO_MONOLITH_PORT  example-monolith port    (default 8000)
#   DEMO_USERS_PORT     user-service port        (default 8001)
#   DEMO_PRODUCTS_PORT  product-service port     (default 8002)
#   DEMO_PROXY_PORT     strangler-proxy port     (default 8080)
#   DEMO_ADMIN_PORT     strangler-proxy's admin port: /metrics, /admin (default 9901)
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
# The story goes in steps, each under its "STEP" banner below. The proxy and
# datasync steps are skipped when bin/ lacks their programs.
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
PROXY_PORT=${DEMO_PROXY_PORT:-8080}
ADMIN_PORT=${DEMO_ADMIN_PORT:-9901}
SEED_USERS=${DEMO_SEED_USERS:-1000}
SEED_PRODUCTS=${DEMO_SEED_PRODUCTS:-200}
NONINTERACTIVE=${DEMO_NONINTERACTIVE:-0}

PG_BIN=""
PG_DATA=""
PG_LOG="$LOG_DIR/postgres.log"
APP_NAMES=()        # apps started, in order
declare -A APP_PIDS # app name -> pid

say() { printf '==> %s\n' "$*" 2>/dev/null || true; }
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
# http_send METHOD PORT PATH BODY sends a JSON body and prints the raw answer.
http_send() {
  # shellcheck disable=SC2016 # $1..$5 are the inner shell's arguments
  timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$2" &&
    printf "%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" "$1" "$3" "$4" "$5" >&3 &&
    cat <&3' _ "$1" "$2" "$3" "${#4}" "$4" 2>/dev/null || true
}
# proxy_send METHOD PATH USER BODY sends a JSON body through the proxy as USER
# (X-User-ID) and prints the raw answer.
proxy_send() {
  printf '%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\nX-User-ID: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s' \
    "$1" "$2" "$3" "${#4}" "$4" | http_raw "$PROXY_PORT"
}
# proxy_get PATH [USER] GETs PATH through the proxy, as USER (X-User-ID) when
# given, and prints the raw answer.
proxy_get() {
  { printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n' "$1"
    if [[ -n ${2:-} ]]; then printf 'X-User-ID: %s\r\n' "$2"; fi
    printf '\r\n'; } | http_raw "$PROXY_PORT"
}
# http_raw PORT sends the raw HTTP request(s) read from stdin and prints the
# raw answers until the server closes the connection.
http_raw() {
  # shellcheck disable=SC2016 # $1 is the inner shell's argument
  timeout 30 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && cat >&3 && cat <&3' _ "$1" 2>/dev/null || true
}
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
  trap - EXIT
  # A second Ctrl-C (or the signal sent to the whole process group) must not
  # cut the stopping short and leave PostgreSQL or an app running; nor may a
  # reader of our output that went away first (make or a pipe stopped by the
  # same Ctrl-C): writes then fail, and a failed write must not end the
  # script before everything is stopped.
  trap '' INT TERM PIPE
  set +e
  if ((${#APP_NAMES[@]} > 0)) || [[ -n $PG_DATA ]]; then say "stopping"; fi
  # The proxy and datasync sync were started last: they stop first.
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
trap 'exit 141' PIPE    # our reader went away: stop everything, then exit

# stop_leftovers stops what an earlier run left behind when it was killed
# before it could clean up (kill -9, a closed terminal).
stop_leftovers() {
  local f pid
  for f in "$RUN_DIR"/*.pid; do
    [[ -e $f ]] || continue
    pid=$(<"$f")
    if [[ $pid =~ ^[0-9]+$ ]] && tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q "^$BIN/"; then
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
  "user-service:$USERS_PORT:DEMO_USERS_PORT" "product-service:$PRODUCTS_PORT:DEMO_PRODUCTS_PORT" \
  "strangler-proxy:$PROXY_PORT:DEMO_PROXY_PORT" "strangler-proxy's admin API:$ADMIN_PORT:DEMO_ADMIN_PORT"; do
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
# wal_level=logical and the slots are what datasync sync needs; two-way sync
# tells who last wrote a row by its commit timestamp and origin.
cat >>"$PG_DATA/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = ''
wal_level = logical
track_commit_timestamp = on
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
  # A restarted app keeps its place in the stopping order.
  [[ -n ${APP_PIDS[$name]:-} ]] || APP_NAMES+=("$name")
  APP_PIDS[$name]=$!
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

# strangler-proxy in front of everything: /api/users goes to the user-service
# for the users the flag users-migration picks (by X-User-ID; 0 % for now, the
# ramp comes once the users are copied), /api/products to the product-service,
# the rest to the monolith. Its config and flags file are generated in
# .demo/run with this run's ports; the admin token is new on every run.
# Skipped when bin/ has no strangler-proxy (a build of the apps alone).
PROXY=""
if [[ -x $BIN/strangler-proxy ]]; then
  PROXY="$BIN/strangler-proxy"
  PROXY_CONFIG="$RUN_DIR/strangler.yaml"
  STRANGLER_ADMIN_TOKEN=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  STRANGLER_ADMIN_URL="http://127.0.0.1:$ADMIN_PORT"
  export STRANGLER_ADMIN_TOKEN STRANGLER_ADMIN_URL
  (umask 077 && printf '%s\n' "$STRANGLER_ADMIN_TOKEN" >"$RUN_DIR/admin-token")
  cat >"$PROXY_CONFIG" <<CONFIG
# Generated by scripts/demo.sh for this run; see examples/strangler.yaml.
listen: 127.0.0.1:$PROXY_PORT
shutdown_timeout: 10s
access_log: true
admin:
  listen: 127.0.0.1:$ADMIN_PORT
  token_env: STRANGLER_ADMIN_TOKEN
monolith:
  url: http://127.0.0.1:$MONOLITH_PORT
  timeout: 30s
services:
  users:
    url: http://127.0.0.1:$USERS_PORT
    timeout: 2s
    health: {path: /health, interval: 5s}
    # Short for the demo: the service is back in use 5s after it recovers.
    breaker: {consecutive_failures: 5, open_for: 5s}
  products:
    url: http://127.0.0.1:$PRODUCTS_PORT
    timeout: 2s
    health: {path: /health, interval: 5s}
    breaker: {consecutive_failures: 5, open_for: 30s}
identity:
  - header: X-User-ID
anonymous: monolith
flags_file: flags.yaml
routes:
  - prefix: /api/users
    service: users
    flag: users-migration
  # Users with an id go to the product-service; the rest (no X-User-ID) get
  # the monolith, and each of their GETs is copied to the product-service in
  # the background and the two answers compared.
  - prefix: /api/products
    service: products
    flag: products-migration
    # Nothing to ignore in the bodies: a product copied by the backfill is
    # answered alike by both, updated_at to the microsecond.
    shadow:
      percentage: 100
      ignore_headers: [Date]
CONFIG
  # The guard sets users-migration back to 0 % when, over 5 s with at least
  # 20 requests sent to the user-service, more than 5 % of them fail.
  cat >"$RUN_DIR/flags.yaml" <<FLAGS
flags:
  users-migration:
    percentage: 0
    guard: {window: 5s, min_requests: 20, max_error_rate: 0.05}
  products-migration:
    percentage: 100
FLAGS
  "$PROXY" validate --config "$PROXY_CONFIG" >"$LOG_DIR/proxy-validate.log" 2>&1 ||
    die "the generated proxy config is invalid: see $LOG_DIR/proxy-validate.log and $PROXY_CONFIG"

  say "starting strangler-proxy on 127.0.0.1:$PROXY_PORT (admin API 127.0.0.1:$ADMIN_PORT); config ${PROXY_CONFIG#"$ROOT/"}"
  # The access log (one JSON line per request) is its standard output.
  setsid "$PROXY" serve --config "$PROXY_CONFIG" >>"$LOG_DIR/proxy-access.log" 2>>"$LOG_DIR/proxy.log" &
  APP_PIDS[proxy]=$!
  APP_NAMES+=(proxy)
  echo "$!" >"$RUN_DIR/proxy.pid"
  for ((i = 0; i < 150; i++)); do
    if ! kill -0 "${APP_PIDS[proxy]}" 2>/dev/null; then
      tail -n 20 "$LOG_DIR/proxy.log" >&2
      die "strangler-proxy exited during start-up: see $LOG_DIR/proxy.log"
    fi
    [[ $(http_status "$ADMIN_PORT" /readyz) == 200 ]] && break
    sleep 0.2
  done
  [[ $(http_status "$ADMIN_PORT" /readyz) == 200 ]] ||
    die "strangler-proxy was not ready within 30s: see $LOG_DIR/proxy.log (and http://127.0.0.1:$ADMIN_PORT/readyz)"
  for spec in "/api/users/1:1:monolith" "/api/products/1:1:product-service" "/api/orders:1:monolith"; do
    IFS=: read -r path user want <<<"$spec"
    got=$(proxy_get "$path" "$user" | tr -d '\r' | awk 'tolower($1) == "x-served-by:" {print $2; exit}')
    [[ $got == "$want" ]] ||
      die "GET $path through the proxy (X-User-ID '$user') was served by '$got', want '$want': see $LOG_DIR/proxy.log"
  done
  say "the proxy routes (as user 1): /api/users -> monolith (users-migration at 0 %), /api/products -> product-service, the rest -> monolith"
fi

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

  # Sync, both ways: once the rollout sends users to the user-service, both
  # databases take writes, and each side's must reach the other. The key
  # spaces are made disjoint first, so the two sides never hand out one id
  # twice. It runs like the apps (stopped with them, SIGTERM first); a user
  # created through the monolith must show up in the user-service.
  say "starting datasync sync --two-way of users (slots datasync_users on monolith, datasync_users_to_source on users); log in ${LOG_DIR#"$ROOT/"}/datasync-sync.log"
  setsid "$BIN/datasync" sync --two-way --name users --source "$PG_URL/monolith?sslmode=disable" \
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
  created=$(http_send POST "$MONOLITH_PORT" /api/users "$body")
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
  # change in flight). Users are synced both ways: their verify tells rows
  # the service wrote from rows the monolith deleted. Products were copied
  # once: a row of their copy is changed behind datasync's back, verify finds
  # it (exit 1) and --repair fixes it.
  USERS_VERIFY=(--two-way --name users --recheck-delay 2s --source "$PG_URL/monolith?sslmode=disable" --target "$PG_URL/users?sslmode=disable" --table users)
  say "verifying the copies (datasync verify --two-way for users, datasync verify for products)"
  "$BIN/datasync" verify "${USERS_VERIFY[@]}" 2>>"$LOG_DIR/datasync-verify.log" || die "datasync verify of users failed: see $LOG_DIR/datasync-verify.log"
  "$BIN/datasync" verify --config "$RUN_DIR/backfill-products.yaml" 2>>"$LOG_DIR/datasync-verify.log" ||
    die "datasync verify of products failed: see $LOG_DIR/datasync-verify.log"
  say "changing product 1's title in the product-service's database behind datasync's back"
  "$PG_BIN/psql" -q "$PG_URL/products?sslmode=disable" -c "UPDATE catalog_items SET title = 'changed-behind-datasync' WHERE id = 1"
  rc=0
  "$BIN/datasync" verify --config "$RUN_DIR/backfill-products.yaml" 2>>"$LOG_DIR/datasync-verify.log" || rc=$?
  [[ $rc == 1 ]] || die "datasync verify should have found the changed row (exit 1), got exit $rc"
  say "repairing it (datasync verify --repair)"
  "$BIN/datasync" verify --repair --config "$RUN_DIR/backfill-products.yaml" 2>>"$LOG_DIR/datasync-verify.log" ||
    die "datasync verify --repair failed: see $LOG_DIR/datasync-verify.log"
fi

# ---------------------------------------------------------------------------
# STEP 5 (rollout): ramp /api/users 0 -> 10 -> 50 % with the CLI, and count
# where distinct users land.
# ---------------------------------------------------------------------------

RAMP_USERS=200
# ramp_count sends GET /api/users/ID as user ID (X-User-ID) for ID 1..N through
# the proxy, pipelined on one connection, and prints the ids the user-service
# served, one a line. The answers come back in the order of the requests.
ramp_count() {
  local n=$1 id
  for ((id = 1; id <= n; id++)); do
    printf 'GET /api/users/%d HTTP/1.1\r\nHost: 127.0.0.1\r\nX-User-ID: %d\r\n' "$id" "$id"
    if ((id == n)); then printf 'Connection: close\r\n'; fi
    printf '\r\n'
  done | http_raw "$PROXY_PORT" | tr -d '\r' | awk -v want="$n" '
    /^HTTP\/1\.1 [0-9][0-9][0-9]/ { k++; next }
    tolower($1) == "x-served-by:" && $2 == "user-service" { print k }
    END { if (k != want) { print "answers: " k " of " want > "/dev/stderr"; exit 1 } }'
}
# show_metrics prints the proxy's metric lines about the users route.
show_metrics() {
  http_get "$ADMIN_PORT" /metrics | tr -d '\r' |
    grep -E '^strangler_(rollout_decisions_total\{.*flag="users-migration"|requests_total\{.*route="/api/users")' |
    sed 's/^/    /' || true
}

if [[ -n $PROXY && -x $BIN/datasync ]]; then
  say "ramping /api/users with the CLI: $RAMP_USERS distinct users (X-User-ID 1..$RAMP_USERS) each GET their own /api/users/ID through the proxy"
  prev=""
  for pct in 0 10 50; do
    out=$("$PROXY" rollout set users-migration "$pct" 2>&1) ||
      die "strangler-proxy rollout set users-migration $pct failed: $out (see $LOG_DIR/proxy.log)"
    printf '    $ strangler-proxy rollout set users-migration %s\n    %s\n' "$pct" "$out"
    served=$(ramp_count "$RAMP_USERS" 2>&1) ||
      die "requests through the proxy went unanswered ($served): see $LOG_DIR/proxy.log and $LOG_DIR/proxy-access.log"
    count=$(grep -c '^[0-9]' <<<"$served" || true)
    say "$pct%: $count of $RAMP_USERS users served by user-service, $((RAMP_USERS - count)) by the monolith"
    # Sticky: raising the percentage only adds users.
    if [[ -n $prev ]]; then
      lost=$(comm -23 <(sort <<<"$prev") <(sort <<<"$served") | grep -c . || true)
      ((lost == 0)) || die "$lost users served by user-service before moving to $pct % went back to the monolith"
      say "every user the service had before is still on it (the rollout is sticky per user)"
    fi
    prev=$served
    case $pct in
      0) ((count == 0)) || die "at 0 % the user-service served $count users, want 0" ;;
      *) ((count > 0 && count < RAMP_USERS)) || die "at $pct % the user-service served $count of $RAMP_USERS users" ;;
    esac
  done
  # Writes at 50 %: each user creates an account through the proxy. The
  # flag sends some to the user-service and the rest to the monolith; both
  # take the writes, and two-way sync carries each to the other side.
  WRITERS=24
  say "writes at 50 %: users 1..$WRITERS each create an account through the proxy (POST /api/users)"
  created_service=()
  created_monolith=()
  declare -gA CREATOR=()
  for ((u = 1; u <= WRITERS; u++)); do
    answer=$(proxy_send POST /api/users "$u" "{\"email\":\"demo-$u-$$@example.com\",\"username\":\"demo$u\"}")
    code=$(head -n 1 <<<"$answer" | awk '{print $2}')
    [[ $code == 201 ]] || die "POST /api/users as user $u through the proxy: got '$(head -n 1 <<<"$answer")', want 201: see $LOG_DIR/proxy.log"
    id=$(grep -o '"id":[0-9]*' <<<"$answer" | head -n 1 | cut -d: -f2)
    by=$(tr -d '\r' <<<"$answer" | awk 'tolower($1) == "x-served-by:" {print $2; exit}')
    CREATOR[$id]=$u
    if [[ $by == user-service ]]; then created_service+=("$id"); else created_monolith+=("$id"); fi
  done
  ((${#created_service[@]} > 0 && ${#created_monolith[@]} > 0)) ||
    die "at 50 % both backends should have taken creates: user-service ${#created_service[@]}, monolith ${#created_monolith[@]}"
  say "${#created_service[@]} accounts created by the user-service (ids ${created_service[*]}),"
  say "${#created_monolith[@]} by the monolith (ids ${created_monolith[*]}): the two sides hand out ids from disjoint ranges"
  for id in "${created_service[@]}" "${created_monolith[@]}"; do
    for ((i = 0; i < 150; i++)); do
      [[ $(http_status "$MONOLITH_PORT" "/api/users/$id") == 200 && $(http_status "$USERS_PORT" "/api/users/$id") == 200 ]] && break
      kill -0 "${APP_PIDS[datasync-sync]}" 2>/dev/null || die "datasync sync stopped: see $LOG_DIR/datasync-sync.log"
      sleep 0.2
    done
    [[ $(http_status "$MONOLITH_PORT" "/api/users/$id") == 200 && $(http_status "$USERS_PORT" "/api/users/$id") == 200 ]] ||
      die "account $id is not in both databases after 30s: see $LOG_DIR/datasync-sync.log"
  done
  say "every one of the $WRITERS accounts is in both databases (datasync sync --two-way)"
  say "what the proxy counted (http://127.0.0.1:$ADMIN_PORT/metrics):"
  show_metrics
  say "strangler-proxy rollout get users-migration"
  "$PROXY" rollout get users-migration | sed 's/^/    /' || die "strangler-proxy rollout get failed: see $LOG_DIR/proxy.log"
  first=$(head -n 1 <<<"$prev")
  say "strangler-proxy explain --user $first GET /api/users/$first"
  "$PROXY" explain --config "$PROXY_CONFIG" --user "$first" GET "/api/users/$first" | sed 's/^/    /'
fi

# ---------------------------------------------------------------------------
# STEP 6 (shadow and guard): compare the product-service's answers with the
# monolith's before users move, and let a guard undo a ramp that goes wrong.
# ---------------------------------------------------------------------------

# metric NAME LABEL-MATCH prints the sum of a metric's series whose labels
# contain LABEL-MATCH (0 when there are none).
metric() {
  http_get "$ADMIN_PORT" /metrics | tr -d '\r' |
    awk -v name="$1" -v m="$2" 'index($0, name "{") == 1 && index($0, m) { sum += $NF } END { printf "%d\n", sum }'
}
# wait_metric NAME LABEL-MATCH MIN waits up to 15s for the metric to reach MIN.
wait_metric() {
  local i
  for ((i = 0; i < 75; i++)); do
    (($(metric "$1" "$2") >= $3)) && return 0
    sleep 0.2
  done
  return 1
}
# anonymous_gets PATH... GETs each PATH through the proxy without a user id,
# pipelined on one connection, and prints the X-Served-By of each answer.
anonymous_gets() {
  local path last=${*: -1}
  for path; do
    printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n' "$path"
    if [[ $path == "$last" ]]; then printf 'Connection: close\r\n'; fi
    printf '\r\n'
  done | http_raw "$PROXY_PORT" | tr -d '\r' | awk 'tolower($1) == "x-served-by:" {print $2}'
}

if [[ -n $PROXY && -x $BIN/datasync ]]; then
  SHADOW_ROUTE=/api/products
  say "shadow traffic: 21 GETs of products without X-User-ID through the proxy; the monolith answers them and each is copied to the product-service, its answer compared"
  # In two rounds: the proxy compares at most 16 at once and drops (and
  # counts) a copy beyond that.
  served=""
  sent=0
  for round in 1 2; do
    paths=()
    if ((round == 1)); then paths+=("/api/products?limit=20"); fi
    for ((id = round * 10 - 9; id <= round * 10; id++)); do paths+=("/api/products/$id"); done
    served+=$(anonymous_gets "${paths[@]}")$'\n'
    sent=$((sent + ${#paths[@]}))
    wait_metric strangler_shadow_comparisons_total "route=\"$SHADOW_ROUTE\"" "$sent" ||
      die "the proxy did not compare the shadowed requests within 15s: see $LOG_DIR/proxy.log"
  done
  say "answered: $(grep . <<<"$served" | sort | uniq -c | awk '{printf "%s%s by %s", sep, $1, $2; sep = ", "}')"
  http_get "$ADMIN_PORT" /metrics | tr -d '\r' | grep '^strangler_shadow_comparisons_total{' | sed 's/^/    /'
  mismatches_before=$(metric strangler_shadow_comparisons_total 'result="mismatch"')
  ((mismatches_before == 0)) ||
    say "(the copies already differ in $mismatches_before answers: see http://127.0.0.1:$ADMIN_PORT/admin/shadow/mismatches?route=$SHADOW_ROUTE)"

  # Products were copied once (backfill), not synced: a change made through
  # the monolith leaves the product-service's copy behind.
  say "changing product 7's price through the monolith: datasync copied the products once and does not sync them, so the product-service's copy falls behind"
  product=$(http_get "$MONOLITH_PORT" /api/products/7 | tr -d '\r' | sed '1,/^$/d')
  [[ $product =~ \"price_cents\":[0-9]+ ]] || die "GET /api/products/7 on the monolith: no price_cents in '$product'"
  answer=$(http_send PUT "$MONOLITH_PORT" /api/products/7 "${product/"${BASH_REMATCH[0]}"/\"price_cents\":4242}")
  [[ $answer == *' 200 '* ]] || die "PUT /api/products/7 on the monolith failed: $answer (see $LOG_DIR/monolith.log)"
  anonymous_gets /api/products/7 >/dev/null
  wait_metric strangler_shadow_comparisons_total 'result="mismatch"' $((mismatches_before + 1)) ||
    die "the shadow comparison did not report product 7's new price within 15s: see $LOG_DIR/proxy.log"
  say "the shadow comparison found it: GET http://127.0.0.1:$ADMIN_PORT/admin/shadow/mismatches?route=$SHADOW_ROUTE"
  http_get "$ADMIN_PORT" "/admin/shadow/mismatches?route=$SHADOW_ROUTE" | tr -d '\r' | sed '1,/^$/d' | head -c 2000 | sed 's/^/    /'
  echo

  # The guard: the user-service goes down while users-migration sends half
  # the users to it.
  say "guard: stopping the user-service while users-migration sends 50 % of the users to it"
  stop_pid user-service "${APP_PIDS[user-service]}"
  served=$(ramp_count "$RAMP_USERS" 2>&1) ||
    die "requests through the proxy went unanswered with the user-service down ($served): see $LOG_DIR/proxy.log"
  [[ -z $served ]] || die "with the user-service stopped, users were still served by it: see $LOG_DIR/proxy-access.log"
  say "$RAMP_USERS users sent: every one answered by the monolith (the proxy fell back for those the flag sent to the user-service)"
  wait_metric strangler_guard_trips_total 'flag="users-migration"' 1 ||
    die "the guard of users-migration did not trip within 15s: see $LOG_DIR/proxy.log"
  say "the guard tripped: users-migration is back to 0 % (strangler-proxy rollout get users-migration)"
  "$PROXY" rollout get users-migration | sed 's/^/    /' || die "strangler-proxy rollout get failed: see $LOG_DIR/proxy.log"
  http_get "$ADMIN_PORT" /metrics | tr -d '\r' |
    grep -E '^strangler_(guard_trips_total|rollout_percentage|fallbacks_total)\{.*(users-migration|/api/users)' | sed 's/^/    /' || true
  grep '"guard' "$LOG_DIR/proxy.log" | tail -n 1 | sed 's/^/    /' || true

  # Rolled back: the accounts the user-service created are still there for
  # their users, now served by the monolith.
  for id in "${created_service[@]}"; do
    answer=$(proxy_get "/api/users/$id" "${CREATOR[$id]}" | tr -d '\r')
    [[ $(head -n 1 <<<"$answer" | awk '{print $2}') == 200 ]] && grep -qi '^x-served-by: monolith' <<<"$answer" ||
      die "after the rollback, account $id (created through the user-service) is not served by the monolith: $(head -n 1 <<<"$answer")"
  done
  say "after the rollback all ${#created_service[@]} accounts created through the user-service are served, by the monolith"

  say "restarting the user-service; then strangler-proxy rollout resume users-migration and rollout set users-migration 50"
  start_app user-service user-service "$USERS_PORT" users
  wait_healthy user-service "$USERS_PORT"
  out=$("$PROXY" rollout resume users-migration 2>&1) || die "strangler-proxy rollout resume failed: $out (see $LOG_DIR/proxy.log)"
  printf '    %s\n' "$out"
  out=$("$PROXY" rollout set users-migration 50 2>&1) || die "strangler-proxy rollout set failed: $out (see $LOG_DIR/proxy.log)"
  printf '    %s\n' "$out"
  say "the nightly check, now: datasync verify --two-way of users"
  "$BIN/datasync" verify "${USERS_VERIFY[@]}" 2>>"$LOG_DIR/datasync-verify.log" ||
    die "datasync verify --two-way of users found differences after the rollout: see $LOG_DIR/datasync-verify.log"
  say "datasync verify --two-way: users are consistent on both sides, every account the user-service created included"
fi

M="http://127.0.0.1:$MONOLITH_PORT"
U="http://127.0.0.1:$USERS_PORT"
P="http://127.0.0.1:$PRODUCTS_PORT"
X="http://127.0.0.1:$PROXY_PORT"
A="http://127.0.0.1:$ADMIN_PORT"
PX=${PROXY#"$ROOT/"}
DS=$BIN/datasync
cat <<EOF

The Strangler demo is running:
  example-monolith  $M   users, products, orders (seeded: $SEED_USERS users, $SEED_PRODUCTS products)
  user-service      $U   /api/users, own database 'users' (filled and kept in sync both ways by datasync)
  product-service   $P   /api/products, own database 'products' (table catalog_items)
EOF
if [[ -n $PROXY ]]; then
  cat <<EOF
  strangler-proxy   $X   in front of them all; admin API and metrics on $A
                    config ${PROXY_CONFIG#"$ROOT/"}, flags ${RUN_DIR#"$ROOT/"}/flags.yaml
EOF
fi
cat <<EOF
  PostgreSQL        $PG_URL/{monolith,users,products}
  logs              ${LOG_DIR#"$ROOT/"}/

Try:
EOF
if [[ -n $PROXY ]]; then
  cat <<EOF
  # Through the proxy: X-Served-By says who answered. The flags decide per
  # user (X-User-ID); a request without a user id goes to the monolith (and
  # one for /api/products is shadowed to the product-service and compared).
  curl -si $X/api/users/1 -H 'X-User-ID: 1' | grep -i x-served-by
  curl -si $X/api/users/1 | grep -i x-served-by
  curl -si $X/api/products/1 -H 'X-User-ID: 1' | grep -i x-served-by
  curl -si $X/api/products/1 | grep -i x-served-by
  curl -si $X/api/orders | grep -i x-served-by
  # Move the rollout (writes need the admin token of this run):
  export STRANGLER_ADMIN_URL=$A STRANGLER_ADMIN_TOKEN=\$(cat ${RUN_DIR#"$ROOT/"}/admin-token)
  $PX rollout get users-migration
  $PX rollout set users-migration 100
  $PX rollout disable users-migration     # the kill switch: everyone to the monolith
  $PX rollout resume users-migration      # after a guard trip: rearm the guard
  $PX explain --config ${PROXY_CONFIG#"$ROOT/"} --user 7 GET /api/users/7
  # Watch it: the status page (routes, flags, guard, shadow) in a browser, or
  curl -s $A/ | head -n 40
  curl -s $A/metrics | grep -E '^strangler_(requests_total|rollout_decisions_total|rollout_percentage|fallbacks_total)'
  curl -s $A/metrics | grep -E '^strangler_(guard_trips_total|shadow_comparisons_total)'
  curl -s '$A/admin/shadow/mismatches?route=/api/products'
  tail -f ${LOG_DIR#"$ROOT/"}/proxy-access.log
  # The two-way sync of users: slots, origins, key headroom, conflicts, parked changes:
  ${DS#"$ROOT/"} status --name users --source '$PG_URL/monolith' --target '$PG_URL/users'
  ${DS#"$ROOT/"} parked list --name users --source '$PG_URL/monolith' --target '$PG_URL/users'
  ${DS#"$ROOT/"} verify --two-way --name users --source '$PG_URL/monolith' --target '$PG_URL/users' --table users
  # The apps themselves:
EOF
fi
cat <<EOF
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
# Wait until a signal or until an app dies. Here the traps only end the loop,
# and the clean-up runs from the script's own flow: exiting from a trap that
# interrupted `read -t` made bash 5.2.15 crash (SIGSEGV) in the clean-up's
# command substitutions, so a Ctrl-C ended the demo half cleaned up, its
# cluster's folder left behind, without the "stopped" line.
stop_requested=0
trap 'stop_requested=1' INT TERM
while ((stop_requested == 0)); do
  for name in "${APP_NAMES[@]}"; do
    if ! kill -0 "${APP_PIDS[$name]}" 2>/dev/null; then
      tail -n 20 "$LOG_DIR/$name.log" >&2
      die "$name stopped unexpectedly: see $LOG_DIR/$name.log"
    fi
  done
  # A one-second pause that a signal interrupts at once and that leaves no
  # sleep process behind: read from a pipe nobody writes to.
  ((stop_requested == 0)) || break
  read -r -t 1 -u "$PAUSE_FD" || true
done
exit 0
