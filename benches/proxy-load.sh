#!/usr/bin/env bash
# Proxy throughput and latency on loopback, all contestants in one run:
#   direct    wrk → origin
#   gatehouse wrk → gatehouse → origin
#   nginx     wrk → nginx (proxy_pass, keepalive upstream) → origin
# The origin is nginx answering a fixed 64-byte body. Each proxy is pinned to CPU 1 with one
# worker (nginx worker_processes 1, gatehouse `listen.workers = 1`); wrk and the origin share
# CPU 0. Prints requests/s, p50 and p99 per contestant, and the ratios.
#
# Usage: benches/proxy-load.sh [duration=10s] [connections=50]
# Needs: apt-get install -y nginx wrk; builds gatehouse in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10s}
CONNS=${2:-50}
command -v wrk >/dev/null && command -v nginx >/dev/null || { echo "needs: apt-get install -y nginx wrk" >&2; exit 1; }
cargo build --release -p gatehouse --quiet
BIN=${CARGO_TARGET_DIR:-target}/release/gatehouse
WORK=$(mktemp -d)
trap 'set +e; kill $(jobs -p) 2>/dev/null; nginx -s stop -c "$WORK/origin.conf" -p "$WORK" 2>/dev/null; nginx -s stop -c "$WORK/proxy.conf" -p "$WORK" 2>/dev/null; rm -rf "$WORK"' EXIT
ORIGIN=127.0.0.1:18081; GATEHOUSE=127.0.0.1:18080; NGINX=127.0.0.1:18082; ADMIN=127.0.0.1:18901
BODY=$(printf 'x%.0s' $(seq 1 64))

nginx_conf() { # $1 = name, $2 = cpu affinity mask, $3 = server block
  cat > "$WORK/$1.conf" <<CONF
worker_processes 1;
worker_cpu_affinity $2;
pid $WORK/$1.pid;
error_log $WORK/$1.error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  $3
}
CONF
}
nginx_conf origin 01 "server { listen $ORIGIN; location / { return 200 '$BODY'; } }"
nginx_conf proxy 10 "upstream origin { server $ORIGIN; keepalive 64; }
  server { listen $NGINX; location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
cat > "$WORK/gatehouse.toml" <<CONF
[listen]
public = "$GATEHOUSE"
admin = "$ADMIN"
workers = 1
[log]
level = "warn"
[[services]]
name = "origin"
endpoints = ["$ORIGIN"]
[[routes]]
name = "all"
service = "origin"
CONF

nginx -c "$WORK/origin.conf" -p "$WORK"
nginx -c "$WORK/proxy.conf" -p "$WORK"
taskset -c 1 "$BIN" run --config "$WORK/gatehouse.toml" &
for _ in $(seq 100); do curl -sf "http://$ADMIN/readyz" >/dev/null && break; sleep 0.1; done

run() { # $1 = name, $2 = address → "name rps p50_us p99_us"
  taskset -c 0 wrk -t1 -c"$CONNS" -d2s "http://$2/" >/dev/null  # warm-up
  taskset -c 0 wrk -t1 -c"$CONNS" -d"$DURATION" --latency "http://$2/" > "$WORK/$1.wrk"
  awk -v n="$1" '
    function us(v) { if (v ~ /us$/) return v+0; if (v ~ /ms$/) return (v+0)*1000; return (v+0)*1000000 }
    /Requests\/sec/ { rps=$2 } / 50%/ { p50=us($2) } / 99%/ { p99=us($2) }
    END { printf "%s %.0f %.0f %.0f\n", n, rps, p50, p99 }' "$WORK/$1.wrk"
}
{
  run direct "$ORIGIN"
  run gatehouse "$GATEHOUSE"
  run nginx "$NGINX"
} > "$WORK/results"
awk '
  { name[NR]=$1; rps[$1]=$2; p50[$1]=$3; p99[$1]=$4 }
  END {
    printf "%-10s %12s %10s %10s\n", "contestant", "req/s", "p50 µs", "p99 µs"
    for (i = 1; i <= NR; i++) printf "%-10s %12d %10d %10d\n", name[i], rps[name[i]], p50[name[i]], p99[name[i]]
    printf "\ngatehouse/direct throughput: %.2f\n", rps["gatehouse"]/rps["direct"]
    printf "gatehouse/nginx  throughput: %.2f   p99: %.2f (lower is better)\n", rps["gatehouse"]/rps["nginx"], p99["gatehouse"]/p99["nginx"]
  }' "$WORK/results"
