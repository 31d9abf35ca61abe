#!/usr/bin/env bash
# Proxy throughput and latency on loopback, all contestants in one run:
#   direct    wrk → origin
#   gatehouse wrk → gatehouse → origin
#   nginx     wrk → nginx (proxy_pass, keepalive upstream) → origin
# The origin is nginx answering a fixed 64-byte body. Each proxy is pinned to CPU 1 with one
# worker (nginx worker_processes 1, gatehouse `listen.workers = 1`); wrk and the origin share
# CPU 0. The contestants run in turn, ROUNDS times; rounds in which the hypervisor took CPU
# (steal) are left out, and each contestant is compared with nginx of its own round
# (load-lib.sh, summarize_rounds). Prints requests/s, p50 and p99 per contestant, and the
# ratios to nginx.
#
# Usage: benches/proxy-load.sh [duration per round=3s] [connections=50] [rounds=7]
#        BEFORE=other-gatehouse-binary adds it as a contestant ("before"), on other ports and
#        the same CPU, so two builds compare in one run; BIN=binary skips the build.
#        LIMITED=1 adds a contestant "limited": the same gateway on a route with a rate limit
#        keyed by client address and a max_in_flight, both too high to refuse anything, so
#        gatehouse/limited is the cost of the limiter checks in one run; and a contestant
#        "traffic": a 95/5 weighted split over two services (both the same origin) plus that
#        rate limit, the issue-15 features a route would typically combine.
# Needs: apt-get install -y nginx wrk; builds gatehouse in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-3s}
CONNS=${2:-50}
ROUNDS=${3:-7}
command -v wrk >/dev/null && command -v nginx >/dev/null || { echo "needs: apt-get install -y nginx wrk" >&2; exit 1; }
if [ -z "${BIN:-}" ]; then
  cargo build --release -p gatehouse --quiet
  BIN=${CARGO_TARGET_DIR:-target}/release/gatehouse
fi
WORK=$(mktemp -d)
source benches/load-lib.sh
trap 'set +e; kill $(jobs -p) 2>/dev/null; nginx_stop origin; nginx_stop proxy; rm -rf "$WORK"' EXIT
ORIGIN=127.0.0.1:18081; GATEHOUSE=127.0.0.1:18080; NGINX=127.0.0.1:18082; ADMIN=127.0.0.1:18901
BODY=$(printf 'x%.0s' $(seq 1 64))

nginx_conf origin 01 "server { listen $ORIGIN; location / { return 200 '$BODY'; } }"
nginx_conf proxy 10 "upstream origin { server $ORIGIN; keepalive 64; }
  server { listen $NGINX; location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
{ gatehouse_base "$GATEHOUSE" "$ADMIN"; cat <<CONF; } > "$WORK/gatehouse.toml"
[[services]]
name = "origin"
endpoints = ["$ORIGIN"]
[[routes]]
name = "all"
service = "origin"
CONF
traffic_routes "$ORIGIN" >> "$WORK/gatehouse.toml"

nginx -c "$WORK/origin.conf" -p "$WORK"
nginx -c "$WORK/proxy.conf" -p "$WORK"
taskset -c 1 "$BIN" run --config "$WORK/gatehouse.toml" &
wait_ready "$ADMIN"
CONTESTANTS="direct gatehouse nginx"
if [ -n "${BEFORE:-}" ]; then
  OLD=127.0.0.1:18083; OLD_ADMIN=127.0.0.1:18902
  sed -e "s/$GATEHOUSE/$OLD/" -e "s/$ADMIN/$OLD_ADMIN/" "$WORK/gatehouse.toml" > "$WORK/before.toml"
  taskset -c 1 "$BEFORE" run --config "$WORK/before.toml" &
  wait_ready "$OLD_ADMIN"
  CONTESTANTS="direct gatehouse before nginx"
fi
[ -n "${LIMITED:-}" ] && CONTESTANTS="$CONTESTANTS limited traffic"

for round in $(seq "$ROUNDS"); do
  { measure direct "http://$ORIGIN/"; measure gatehouse "http://$GATEHOUSE/"
    [ -n "${BEFORE:-}" ] && measure before "http://$OLD/"
    measure nginx "http://$NGINX/"
    if [ -n "${LIMITED:-}" ]; then
      measure limited "http://$GATEHOUSE/limited/"; measure traffic "http://$GATEHOUSE/traffic/"
    fi; } |
    sed "s/^/$round /"
done > "$WORK/rounds"
echo "req/s (steal %) per round:"
for who in $CONTESTANTS; do
  printf '  %-10s' "$who"
  awk -v w="$who" '$2 == w { printf " %6d (%3.1f)", $3, $6 } END { print "" }' "$WORK/rounds"
done
echo
summarize_rounds nginx "$WORK/rounds"
if [ -n "${LIMITED:-}" ]; then
  echo
  summarize_rounds gatehouse "$WORK/rounds"   # "limited", "traffic" against the plain route
fi
