#!/usr/bin/env bash
# Compares strangler-proxy with nginx, HAProxy and Caddy in front of the same
# small Go backend (200 bytes of JSON), all on 127.0.0.1, with wrk.
#
#   bench/proxy.sh                       # 3 rounds of 5 s at 16 and 64 connections
#   ROUNDS=5 DURATION=3 CONNS="16 64 256" WORKERS=2 bench/proxy.sh
#   TARGETS="strangler-flag strangler nginx" bench/proxy.sh   # some targets, in this order
#   TARGETS="strangler strangler-std nginx" bench/proxy.sh    # with and without the HTTP/1.1 fast path
#   BASE_REF=main TARGETS="nginx strangler-base strangler" ROUNDS=3 DURATION=4 CONNS="16 64" bench/proxy.sh
#   TARGETS="nginx relay strangler" bench/proxy.sh            # against a bare Go TCP relay
#
# BASE_REF names a git revision to build a second strangler-proxy from, run
# with the "strangler" config as target "strangler-base": a before/after
# comparison in one run, under the same load from everything else on the
# machine, shown as each one's ratio to nginx (round by round) and as
# strangler/strangler-base.
#
# Every proxy gets the same parallelism: WORKERS nginx worker processes,
# WORKERS HAProxy threads, GOMAXPROCS=WORKERS for Caddy, strangler-proxy and
# the backend. Targets run interleaved (round by round), and the table shows
# the median over rounds. strangler-proxy runs with routing, breaker, health
# checks and metrics on and the access log off; "strangler-flag" is the same
# config with the route behind a rollout flag at 50 % (guarded) and header
# identity, so its ratio to "strangler" is the cost of the rollout decision.
# "strangler-std" is the "strangler" config with server.http1_fast_path off
# (net/http's server for every request): its ratio to "strangler" is what the
# proxy's own HTTP/1.1 server loop saves.
# "relay" is a bare TCP relay written in Go (bench/relay: bytes copied both
# ways, no HTTP): about the most a Go proxy can reach on the machine, so the gap
# between it and strangler is what HTTP, ReverseProxy, routing and metrics
# cost, and the gap between it and nginx is the Go runtime's.
# Every target gets the same X-User-ID header.
#
# Under the table, "round by round" is the median of strangler/nginx
# throughput ratios (and p99 differences) taken within each round, from runs
# seconds apart: steadier than the ratio of medians when outside load swings.
#
# "cpu us/req" is the CPU time (user + system, all of the target's processes)
# per request answered: less sensitive than req/s to other load on the
# machine, which takes cores away but does not add to a process's own CPU
# time. For "direct" it is the backend's, which also serves every proxy.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
CONNS=${CONNS:-"16 64"}
WORKERS=${WORKERS:-2}
THREADS=${THREADS:-2}
PORT_BASE=${PORT_BASE:-18080}

root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$tmp"
}
trap cleanup EXIT

read -r -a targets <<<"${TARGETS:-direct strangler strangler-flag nginx haproxy caddy}"

# Only the tools the targets need are installed.
missing=()
for tool in wrk nginx haproxy caddy; do
	[[ $tool == wrk || " ${targets[*]} " == *" $tool "* ]] || continue
	command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
	echo "installing ${missing[*]}" >&2
	apt-get install -y "${missing[@]}" >/dev/null
fi

backend_port=$PORT_BASE
strangler_port=$((PORT_BASE + 1))
nginx_port=$((PORT_BASE + 2))
haproxy_port=$((PORT_BASE + 3))
caddy_port=$((PORT_BASE + 4))
flag_port=$((PORT_BASE + 5))
base_port=$((PORT_BASE + 6))
std_port=$((PORT_BASE + 7))
relay_port=$((PORT_BASE + 8))
admin_port=$((PORT_BASE + 11))
flag_admin_port=$((PORT_BASE + 12))
base_admin_port=$((PORT_BASE + 13))
std_admin_port=$((PORT_BASE + 14))

echo "building" >&2
(cd "$root" && go build -o "$tmp/backend" ./bench/backend && go build -o "$tmp/relay" ./bench/relay &&
	go build -o "$tmp/strangler-proxy" ./cmd/strangler-proxy)
if [[ -n ${BASE_REF:-} ]]; then
	mkdir "$tmp/base-src"
	git -C "$root" archive "$BASE_REF" | tar -x -C "$tmp/base-src"
	(cd "$tmp/base-src" && go build -o "$tmp/strangler-proxy-base" ./cmd/strangler-proxy)
fi

declare -A tpid=()
GOMAXPROCS=$WORKERS "$tmp/backend" -addr "127.0.0.1:$backend_port" &
pids+=($!)
tpid[direct]=$!

GOMAXPROCS=$WORKERS "$tmp/relay" -addr "127.0.0.1:$relay_port" -upstream "127.0.0.1:$backend_port" &
pids+=($!)
tpid[relay]=$!

cat >"$tmp/strangler.yaml" <<YAML
listen: 127.0.0.1:$strangler_port
access_log: false
admin: {listen: 127.0.0.1:$admin_port}
monolith: {url: "http://127.0.0.1:$backend_port"}
services:
  users:
    url: http://127.0.0.1:$backend_port
    timeout: 2s
    health: {path: /health, interval: 5s}
    breaker: {consecutive_failures: 5, open_for: 30s}
routes:
  - {prefix: /api/users, service: users}
  - {prefix: /api/products, service: users}
YAML
GOMAXPROCS=$WORKERS "$tmp/strangler-proxy" serve --config "$tmp/strangler.yaml" >/dev/null 2>"$tmp/strangler.log" &
pids+=($!)
tpid[strangler]=$!

if [[ -n ${BASE_REF:-} ]]; then
	mkdir -p "$tmp/base"
	sed -e "s/127.0.0.1:$strangler_port/127.0.0.1:$base_port/" -e "s/127.0.0.1:$admin_port/127.0.0.1:$base_admin_port/" \
		"$tmp/strangler.yaml" >"$tmp/base/strangler.yaml"
	GOMAXPROCS=$WORKERS "$tmp/strangler-proxy-base" serve --config "$tmp/base/strangler.yaml" >/dev/null 2>"$tmp/strangler-base.log" &
	pids+=($!)
	tpid[strangler-base]=$!
fi

# The same proxy with net/http's server for every request.
mkdir -p "$tmp/std"
sed -e "s/127.0.0.1:$strangler_port/127.0.0.1:$std_port/" -e "s/127.0.0.1:$admin_port/127.0.0.1:$std_admin_port/" \
	"$tmp/strangler.yaml" >"$tmp/std/strangler.yaml"
echo "server: {http1_fast_path: false}" >>"$tmp/std/strangler.yaml"
GOMAXPROCS=$WORKERS "$tmp/strangler-proxy" serve --config "$tmp/std/strangler.yaml" >/dev/null 2>"$tmp/strangler-std.log" &
pids+=($!)
tpid[strangler-std]=$!

# The same proxy with /api/users behind a flag at 50 %.
mkdir -p "$tmp/flag"
sed -e "s/127.0.0.1:$strangler_port/127.0.0.1:$flag_port/" -e "s/127.0.0.1:$admin_port/127.0.0.1:$flag_admin_port/" \
	-e "s|{prefix: /api/users, service: users}|{prefix: /api/users, service: users, flag: users-migration}|" \
	"$tmp/strangler.yaml" >"$tmp/flag/strangler.yaml"
cat >>"$tmp/flag/strangler.yaml" <<YAML
identity: [{header: X-User-ID}]
flags_file: flags.yaml
YAML
cat >"$tmp/flag/flags.yaml" <<YAML
flags:
  users-migration:
    percentage: 50
    guard: {window: 60s, min_requests: 50, max_error_rate: 0.5}
YAML
GOMAXPROCS=$WORKERS "$tmp/strangler-proxy" serve --config "$tmp/flag/strangler.yaml" >/dev/null 2>"$tmp/strangler-flag.log" &
pids+=($!)
tpid[strangler-flag]=$!

cat >"$tmp/nginx.conf" <<NGINX
worker_processes $WORKERS;
pid $tmp/nginx.pid;
error_log $tmp/nginx-error.log warn;
daemon off;
events { worker_connections 4096; }
http {
	access_log off;
	client_body_temp_path $tmp/nginx-body;
	proxy_temp_path $tmp/nginx-proxy;
	upstream backend { server 127.0.0.1:$backend_port; keepalive 256; }
	server {
		listen 127.0.0.1:$nginx_port;
		location / {
			proxy_pass http://backend;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
		}
	}
}
NGINX
if command -v nginx >/dev/null 2>&1; then
	nginx -c "$tmp/nginx.conf" -p "$tmp" &
	pids+=($!)
	tpid[nginx]=$!
fi

cat >"$tmp/haproxy.cfg" <<HAPROXY
global
	nbthread $WORKERS
	maxconn 4000
defaults
	mode http
	timeout connect 5s
	timeout client 30s
	timeout server 30s
	http-reuse always
frontend bench
	bind 127.0.0.1:$haproxy_port
	default_backend app
backend app
	server app1 127.0.0.1:$backend_port
HAPROXY
if command -v haproxy >/dev/null 2>&1; then
	haproxy -f "$tmp/haproxy.cfg" -db >/dev/null 2>"$tmp/haproxy.log" &
	pids+=($!)
	tpid[haproxy]=$!
fi

cat >"$tmp/Caddyfile" <<CADDY
{
	admin off
	auto_https off
}
http://127.0.0.1:$caddy_port {
	reverse_proxy 127.0.0.1:$backend_port
}
CADDY
if command -v caddy >/dev/null 2>&1; then
	HOME=$tmp XDG_DATA_HOME=$tmp XDG_CONFIG_HOME=$tmp GOMAXPROCS=$WORKERS caddy run --config "$tmp/Caddyfile" --adapter caddyfile >/dev/null 2>"$tmp/caddy.log" &
	pids+=($!)
	tpid[caddy]=$!
fi

declare -A port=([direct]=$backend_port [strangler]=$strangler_port [strangler-flag]=$flag_port [nginx]=$nginx_port [haproxy]=$haproxy_port [caddy]=$caddy_port [strangler-base]=$base_port [strangler-std]=$std_port [relay]=$relay_port)
user_header="X-User-ID: u-12345"
path=/api/users/12345

for t in "${targets[@]}"; do
	for _ in $(seq 100); do
		curl -fsS -o /dev/null -H "$user_header" "http://127.0.0.1:${port[$t]}$path" 2>/dev/null && break
		sleep 0.1
	done
	curl -fsS -o /dev/null -H "$user_header" "http://127.0.0.1:${port[$t]}$path" || { echo "$t is not answering" >&2; exit 1; }
done

# to_ms converts wrk's latency ("512.00us", "1.20ms", "1.01s") to milliseconds.
to_ms() {
	awk -v v="$1" 'BEGIN {
		n = v + 0
		if (v ~ /us$/) n /= 1000; else if (v ~ /ms$/) n = n; else if (v ~ /s$/) n *= 1000
		printf "%.3f", n }'
}

# cpu_ticks prints the CPU time (user + system, in clock ticks) used so far by
# process $1 and its children (nginx's workers).
cpu_ticks() {
	local total=0 p
	for p in "$1" $(pgrep -P "$1" || true); do
		# Fields after the command name, which may contain spaces:
		# utime and stime are the 12th and 13th.
		total=$((total + $(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}' || echo 0)))
	done
	echo "$total"
}
clk_tck=$(getconf CLK_TCK)

results=$tmp/results
: >"$results"
echo "rounds=$ROUNDS duration=${DURATION}s conns=[$CONNS] workers=$WORKERS wrk_threads=$THREADS cores=$(nproc)" >&2
for round in $(seq "$ROUNDS"); do
	for c in $CONNS; do
		for t in "${targets[@]}"; do
			before=$(cpu_ticks "${tpid[$t]}")
			out=$(wrk -t"$THREADS" -c"$c" -d"${DURATION}s" --latency -H "$user_header" "http://127.0.0.1:${port[$t]}$path")
			after=$(cpu_ticks "${tpid[$t]}")
			n=$(awk '/requests in/ {print $1}' <<<"$out")
			cpu=$(awk -v d=$((after - before)) -v n="$n" -v hz="$clk_tck" 'BEGIN {printf "%.1f", (n > 0) ? d * 1e6 / hz / n : 0}')
			rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
			p50=$(to_ms "$(awk '$1 == "50%" {print $2}' <<<"$out")")
			p99=$(to_ms "$(awk '$1 == "99%" {print $2}' <<<"$out")")
			errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
			echo "$t $c $rps $p50 $p99 $cpu $round" >>"$results"
			printf 'round %d  c=%-4s %-14s %10.0f req/s  p50 %7.3f ms  p99 %7.3f ms  cpu %6.1f us/req %s\n' "$round" "$c" "$t" "$rps" "$p50" "$p99" "$cpu" "$errs" >&2
		done
	done
done

echo
printf '%-5s %-14s %12s %9s %9s %10s %10s %11s\n' conns target "req/s" "p50 ms" "p99 ms" "rps/nginx" "p99-nginx" "cpu us/req"
for c in $CONNS; do
	# medians per target
	declare -A mr=() m50=() m99=() mcpu=()
	for t in "${targets[@]}"; do
		read -r r a b < <(awk -v t="$t" -v c="$c" '$1 == t && $2 == c {print $3, $4, $5}' "$results" |
			sort -n -k1,1 | awk '{r[NR]=$1} END {print r[int((NR+1)/2)]}' |
			{ read -r rr; awk -v t="$t" -v c="$c" '$1 == t && $2 == c {print $4}' "$results" | sort -n |
				awk -v rr="$rr" '{p[NR]=$1} END {printf "%s %s ", rr, p[int((NR+1)/2)]}'
			  awk -v t="$t" -v c="$c" '$1 == t && $2 == c {print $5}' "$results" | sort -n |
				awk '{p[NR]=$1} END {print p[int((NR+1)/2)]}'; })
		mr[$t]=$r m50[$t]=$a m99[$t]=$b
		mcpu[$t]=$(awk -v t="$t" -v c="$c" '$1 == t && $2 == c {print $6}' "$results" | sort -n | awk '{p[NR]=$1} END {print p[int((NR+1)/2)]}')
	done
	for t in "${targets[@]}"; do
		awk -v c="$c" -v t="$t" -v r="${mr[$t]}" -v a="${m50[$t]}" -v b="${m99[$t]}" -v nr="${mr[nginx]:-0}" -v nb="${m99[nginx]:-0}" -v u="${mcpu[$t]}" \
			'BEGIN {if (nr == 0) {printf "%-5s %-14s %12.0f %9.3f %9.3f %10s %10s %11.1f\n", c, t, r, a, b, "-", "-", u; exit} printf "%-5s %-14s %12.0f %9.3f %9.3f %9.2fx %+9.3f %11.1f\n", c, t, r, a, b, r/nr, b-nb, u}'
	done
	# The same ratios round by round, each from two measurements taken
	# seconds apart: steadier than the ratio of medians when the load from
	# outside changes between rounds. With BASE_REF, strangler-base's is the
	# "before" to strangler's "after", from the same rounds.
	for t in strangler strangler-base; do
		[[ -n ${mr[$t]:-} && -n ${mr[nginx]:-} ]] || continue
		per_round=$(awk -v c="$c" -v t="$t" '$2 == c && ($1 == t || $1 == "nginx") {rps[$1, $7] = $3; p99[$1, $7] = $5; r[$7] = 1}
			END {for (k in r) if (((t, k) in rps) && (("nginx", k) in rps))
				printf "%.4f %.3f\n", rps[t, k] / rps["nginx", k], p99[t, k] - p99["nginx", k]}' "$results")
		n=$(wc -l <<<"$per_round")
		q=$(cut -d' ' -f1 <<<"$per_round" | sort -g | sed -n "$(((n + 1) / 2))p")
		d=$(cut -d' ' -f2 <<<"$per_round" | sort -g | sed -n "$(((n + 1) / 2))p")
		awk -v c="$c" -v t="$t" -v q="$q" -v d="$d" -v n="$n" 'BEGIN {printf "%-5s %s/nginx round by round: median %.2fx, p99 median %+.3f ms (%d rounds)\n", c, t, q, d, n}'
	done
	if [[ -n ${mr[strangler]:-} && -n ${mr[caddy]:-} ]]; then
		awk -v c="$c" -v s="${mr[strangler]}" -v k="${mr[caddy]}" 'BEGIN {printf "%-5s strangler/caddy throughput: %.2fx\n", c, s/k}'
	fi
	if [[ -n ${mr[strangler]:-} && -n ${mr[strangler-base]:-} ]]; then
		awk -v c="$c" -v s="${mr[strangler]}" -v b="${mr[strangler-base]}" 'BEGIN {printf "%-5s strangler/strangler-base throughput: %.3fx\n", c, s/b}'
	fi
	if [[ -n ${mr[strangler]:-} && -n ${mr[strangler-std]:-} ]]; then
		awk -v c="$c" -v s="${mr[strangler]}" -v b="${mr[strangler-std]}" 'BEGIN {printf "%-5s strangler/strangler-std throughput: %.3fx\n", c, s/b}'
	fi
	if [[ -n ${mr[strangler]:-} && -n ${mr[strangler-flag]:-} ]]; then
		awk -v c="$c" -v s="${mr[strangler]}" -v f="${mr[strangler-flag]}" 'BEGIN {printf "%-5s strangler-flag/strangler throughput: %.3fx\n", c, f/s}'
	fi
done
