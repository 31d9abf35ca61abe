#!/usr/bin/env bash
# Proxy throughput with least-request vs round robin, in one run, over four nginx origins.
#   equal:     four identical origins (what the balancer itself costs)
#   one-slow:  the same, but origin 4 is throttled to SLOW_RPS req/s by nginx limit_req
#              (excess requests are queued, i.e. answered late): round robin keeps sending it
#              a quarter of the traffic; least-request steers around it.
# gatehouse is pinned to CPU 1 with one worker thread; wrk and the origins share CPU 0.
#
# Usage: benches/balancing-load.sh [duration=10s] [connections=50] [slow_rps=1000]
# Needs: apt-get install -y nginx wrk; builds gatehouse in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10s}
CONNS=${2:-50}
SLOW_RPS=${3:-1000}
command -v wrk >/dev/null && command -v nginx >/dev/null || { echo "needs: apt-get install -y nginx wrk" >&2; exit 1; }
cargo build --release -p gatehouse --quiet
BIN=${CARGO_TARGET_DIR:-target}/release/gatehouse
WORK=$(mktemp -d)
source benches/load-lib.sh
trap 'set +e; kill $(jobs -p) 2>/dev/null; nginx_stop origin; rm -rf "$WORK"' EXIT
GATEHOUSE=127.0.0.1:18180; ADMIN=127.0.0.1:18190
O1=127.0.0.1:18181; O2=127.0.0.1:18182; O3=127.0.0.1:18183; O4=127.0.0.1:18184; O5=127.0.0.1:18185
BODY=$(printf 'x%.0s' $(seq 1 64))

# O1–O4 equal; O5 is O4's throttled twin for the one-slow case. They serve a file rather than
# `return 200`: `return` ends the request in the rewrite phase, before limit_req would run.
mkdir -p "$WORK/www" && printf '%s' "$BODY" > "$WORK/www/body"
# nginx's workers run as `nobody`; mktemp's directory is private to its owner.
chmod a+rx "$WORK" "$WORK/www"
nginx_conf origin 01 "limit_req_zone \$server_port zone=slow:1m rate=${SLOW_RPS}r/s;
  default_type text/plain;
  root $WORK/www;
  server { listen $O1; location / { try_files /body =404; } }
  server { listen $O2; location / { try_files /body =404; } }
  server { listen $O3; location / { try_files /body =404; } }
  server { listen $O4; location / { try_files /body =404; } }
  server { listen $O5; location / { limit_req zone=slow burst=100000; try_files /body =404; } }"
service() { # $1 name, $2 balance, $3 endpoints
  printf '[[services]]\nname = "%s"\nbalance = "%s"\nendpoints = [%s]\n' "$1" "$2" "$3"
  printf '[[routes]]\nname = "%s"\nservice = "%s"\nmatch = { prefix = "/%s" }\n' "$1" "$1" "$1"
}
EQUAL="\"$O1\", \"$O2\", \"$O3\", \"$O4\""
SLOW="\"$O1\", \"$O2\", \"$O3\", \"$O5\""
{
  gatehouse_base "$GATEHOUSE" "$ADMIN"
  service rr-equal round-robin "$EQUAL"
  service lr-equal least-request "$EQUAL"
  service rr-slow round-robin "$SLOW"
  service lr-slow least-request "$SLOW"
} > "$WORK/gatehouse.toml"

nginx -c "$WORK/origin.conf" -p "$WORK"
taskset -c 1 "$BIN" run --config "$WORK/gatehouse.toml" &
wait_ready "$ADMIN"

run() { measure "$1" "http://$GATEHOUSE/$1"; }
{ run rr-equal; run lr-equal; run rr-slow; run lr-slow; } > "$WORK/results"
awk '
  { name[NR]=$1; rps[$1]=$2; p50[$1]=$3; p99[$1]=$4 }
  END {
    printf "%-10s %12s %10s %10s\n", "case", "req/s", "p50 µs", "p99 µs"
    for (i = 1; i <= NR; i++) printf "%-10s %12d %10d %10d\n", name[i], rps[name[i]], p50[name[i]], p99[name[i]]
    printf "\nleast-request/round-robin throughput, equal origins: %.2f\n", rps["lr-equal"]/rps["rr-equal"]
    printf "least-request/round-robin throughput, one slow:      %.2f\n", rps["lr-slow"]/rps["rr-slow"]
  }' "$WORK/results"
