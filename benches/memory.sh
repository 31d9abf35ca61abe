#!/usr/bin/env bash
# Resident memory of the release gateway with N plugins loaded (issue #20: RSS ≤ 50 MiB with
# 20 plugins). The plugins are copies of the shipped ones under their own names, each on a
# route of its own: half the no-op plugin, half header-rewrite (each its own component, so
# compiled and instantiated separately, as 20 different plugins would be). Traffic reaches
# every route (each plugin gets instantiated), then VmRSS, VmHWM and the process's mappings
# by kind are read from /proc.
#
# Usage: benches/memory.sh [gatehouse-binary] [plugins=20]
#        DETAIL=1 adds the largest resident mappings after traffic (smaps). mimalloc's own
#        options pass through the environment (e.g. MIMALLOC_PURGE_DELAY=0).
#        WASM_DIR=DIR takes noop_plugin.wasm and header_rewrite_plugin.wasm from DIR instead of
#        building them. WORKERS=N sets listen.workers (default: the gateway's, one per CPU).
#        PORT_BASE=P moves the ports (P gateway, P+1 origin, P+11 admin; default 18280).
# Needs: apt-get install -y nginx wrk; rustup target add wasm32-wasip2.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-target}
BIN=${1:-}
PLUGINS=${2:-20}
if [ -z "$BIN" ]; then
  cargo build --release -p gatehouse --quiet
  BIN=$TARGET/release/gatehouse
fi
if [ -z "${WASM_DIR:-}" ]; then
  cargo build --release --target wasm32-wasip2 -p noop-plugin -p header-rewrite-plugin --quiet
  WASM_DIR=$TARGET/wasm32-wasip2/release
fi
WORK=$(mktemp -d)
source benches/load-lib.sh
trap 'set +e; kill $(jobs -p) 2>/dev/null; nginx_stop origin; rm -rf "$WORK"' EXIT
BASE=${PORT_BASE:-18280}
ORIGIN=127.0.0.1:$((BASE + 1)); PUBLIC=127.0.0.1:$BASE; ADMIN=127.0.0.1:$((BASE + 11))
BODY=$(printf 'x%.0s' $(seq 1 64))
nginx_conf origin 01 "server { listen $ORIGIN; location / { return 200 '$BODY'; } }"
nginx -c "$WORK/origin.conf" -p "$WORK"

# $1 = plugin count → writes $WORK/gatehouse.toml and $WORK/plugins (keeping the plugins'
# compile cache, $WORK/plugins/.cache, between starts)
configure() {
  mkdir -p "$WORK/plugins"; rm -f "$WORK/plugins"/*.wasm
  {
    printf '[listen]\npublic = "%s"\nadmin = "%s"\n' "$PUBLIC" "$ADMIN"
    [ -n "${WORKERS:-}" ] && printf 'workers = %s\n' "$WORKERS"
    printf '[log]\nlevel = "warn"\n[plugins]\ndir = "%s"\n' "$WORK/plugins"
    printf '[[services]]\nname = "origin"\nendpoints = ["%s"]\n' "$ORIGIN"
    for i in $(seq 1 "$1"); do
      if [ $((i % 2)) -eq 1 ]; then
        cp "$WASM_DIR/noop_plugin.wasm" "$WORK/plugins/noop$i.wasm"
        printf '[[routes]]\nname = "p%d"\nservice = "origin"\nmatch = { prefix = "/p%d/" }\nplugins = [{ name = "noop%d" }]\n' "$i" "$i" "$i"
      else
        cp "$WASM_DIR/header_rewrite_plugin.wasm" "$WORK/plugins/rewrite$i.wasm"
        printf '[[routes]]\nname = "p%d"\nservice = "origin"\nmatch = { prefix = "/p%d/" }\nplugins = [{ name = "rewrite%d", config = { request = { x-a = "%d" }, response = { x-b = "2" } } }]\n' "$i" "$i" "$i" "$i"
      fi
    done
    printf '[[routes]]\nname = "plain"\nservice = "origin"\n'
  } > "$WORK/gatehouse.toml"
}

kib() { awk -v k="$1" '$1 == k":" { print $2 }' "/proc/$2/status"; }

# The process's resident KiB by mapping (smaps): the named ones (the binary, libraries,
# [heap], [stack]) and the largest anonymous regions (wasmtime's reservations, mimalloc's
# segments, thread stacks), each 512 KiB or more.
mappings() {
  awk '/^[0-9a-f]+-[0-9a-f]+ / { name = ($6 == "") ? "anon " $1 : $6; next }
       /^Rss:/ { rss[name] += $2 }
       END { for (n in rss) if (rss[n] >= 512) printf "    %8d KiB  %s\n", rss[n], n }' \
    "/proc/$1/smaps" | sort -n -r | head -20
}

measure_count() { # $1 = plugins, $2 = a label for the line
  configure "$1"
  "$BIN" run --config "$WORK/gatehouse.toml" >"$WORK/gatehouse.log" 2>&1 &
  local pid=$!
  if ! wait_ready "$ADMIN"; then cat "$WORK/gatehouse.log" >&2; return 1; fi
  local idle; idle=$(kib VmRSS "$pid")
  # Every plugin route, then the plain one, a few seconds of 10 connections each (bounded).
  for i in $(seq 1 "$1"); do
    curl -sf "http://$PUBLIC/p$i/" >/dev/null || { echo "route /p$i/ failed" >&2; cat "$WORK/gatehouse.log" >&2; return 1; }
    wrk -t1 -c10 -d1s "http://$PUBLIC/p$i/" >/dev/null
  done
  wrk -t1 -c10 -d2s "http://$PUBLIC/" >/dev/null
  sleep 1
  printf '%2d plugins, %-18s VmRSS %6d KiB after start, %6d KiB after traffic, VmHWM %6d KiB\n' \
    "$1" "$2:" "$idle" "$(kib VmRSS "$pid")" "$(kib VmHWM "$pid")"
  [ -n "${DETAIL:-}" ] && mappings "$pid"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

# Each count twice: the first start compiles every plugin (cold cache), the second loads
# them from the compile cache, as every start after the first does.
for count in 0 5 "$PLUGINS"; do
  rm -rf "$WORK/plugins"
  measure_count "$count" "cold cache"
  [ "$count" -gt 0 ] && measure_count "$count" "warm cache"
done
