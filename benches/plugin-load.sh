#!/usr/bin/env bash
# Plugin overhead through the real gateway under wrk: four routes to the same origin,
#   none          no plugin
#   noop          the no-op plugin, a fresh instance per request (the default)
#   noop-reuse    the no-op plugin with reuse_instances = true
#   rewrite       the header-rewrite plugin (fresh), which edits request and response headers
# Same layout as proxy-load.sh: gatehouse has one worker pinned to CPU 1 (`listen.workers = 1`),
# wrk and the origin (nginx, a fixed 64-byte body) share CPU 0. The gateway's CPU is the
# bottleneck, so the throughput ratio is the plugin's cost, and 1/rps - 1/rps(none) is the
# CPU it adds per request.
#
# This VM's speed drifts by a third between minutes, so the routes are measured in turn,
# ROUNDS times; each route is compared with the no-plugin route of its own round, rounds
# with hypervisor steal are left out, and the table gives medians (load-lib.sh,
# summarize_rounds). The last column is the CPU the plugin adds per request.
#
# Usage: benches/plugin-load.sh [duration per round=3s] [connections=50] [rounds=9]
# Needs: apt-get install -y nginx wrk; rustup target add wasm32-wasip2.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-3s}
CONNS=${2:-50}
ROUNDS=${3:-9}
command -v wrk >/dev/null && command -v nginx >/dev/null || { echo "needs: apt-get install -y nginx wrk" >&2; exit 1; }
TARGET=${CARGO_TARGET_DIR:-target}
cargo build --release -p gatehouse --quiet
cargo build --release --target wasm32-wasip2 -p noop-plugin -p header-rewrite-plugin --quiet
BIN=$TARGET/release/gatehouse
WORK=$(mktemp -d)
source benches/load-lib.sh
trap 'set +e; kill $(jobs -p) 2>/dev/null; nginx_stop origin; rm -rf "$WORK"' EXIT
ORIGIN=127.0.0.1:18181; GATEHOUSE=127.0.0.1:18180; ADMIN=127.0.0.1:18191
BODY=$(printf 'x%.0s' $(seq 1 64))
mkdir "$WORK/plugins"
cp "$TARGET/wasm32-wasip2/release/noop_plugin.wasm" "$WORK/plugins/noop.wasm"
cp "$TARGET/wasm32-wasip2/release/header_rewrite_plugin.wasm" "$WORK/plugins/rewrite.wasm"

nginx_conf origin 01 "server { listen $ORIGIN; location / { return 200 '$BODY'; } }"
{ gatehouse_base "$GATEHOUSE" "$ADMIN"; cat <<CONF; } > "$WORK/gatehouse.toml"
[plugins]
dir = "$WORK/plugins"
[[services]]
name = "origin"
endpoints = ["$ORIGIN"]
[[routes]]
name = "noop"
service = "origin"
match = { prefix = "/noop" }
plugins = [{ name = "noop" }]
[[routes]]
name = "noop-reuse"
service = "origin"
match = { prefix = "/reuse" }
plugins = [{ name = "noop", reuse_instances = true }]
[[routes]]
name = "rewrite"
service = "origin"
match = { prefix = "/rewrite" }
plugins = [{ name = "rewrite", config = { request = { x-a = "1" }, response = { x-b = "2" } } }]
[[routes]]
name = "none"
service = "origin"
CONF

nginx -c "$WORK/origin.conf" -p "$WORK"
taskset -c 1 "$BIN" run --config "$WORK/gatehouse.toml" &
wait_ready "$ADMIN"

run() { measure "$1" "http://$GATEHOUSE$2"; }
for round in $(seq "$ROUNDS"); do
  { run none /; run noop /noop; run noop-reuse /reuse; run rewrite /rewrite; } | sed "s/^/$round /"
done > "$WORK/rounds"
echo "req/s (steal %) per round:"
for route in none noop noop-reuse rewrite; do
  printf '  %-11s' "$route"
  awk -v r="$route" '$2 == r { printf " %6d (%3.1f)", $3, $6 } END { print "" }' "$WORK/rounds"
done
echo
summarize_rounds none "$WORK/rounds"
