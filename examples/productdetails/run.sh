#!/usr/bin/env bash
# The product-details demo in one command, on a fresh machine with a Rust toolchain:
# builds the two plugins (wasm32-wasip2), the gateway and the mock services (release),
# starts the gateway, then product-info, recommendations, reviews and price as four
# processes that register themselves in the gateway's registry, waits until
# GET /productdetails answers, and prints curl lines to try. Ctrl-C stops everything
# (the services deregister first).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
PUBLIC=127.0.0.1:8080   # [listen] in gatehouse.toml
ADMIN=127.0.0.1:9901
SERVICES=(product-info recommendations reviews price)
LOGS="$HERE/logs"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

command -v cargo >/dev/null || die "cargo not found: install Rust from https://rustup.rs"
command -v curl >/dev/null || die "curl not found: the script polls the gateway with it"

# Fail before building if something already listens on the demo's ports.
for addr in "$PUBLIC" "$ADMIN"; do
  if curl -s -o /dev/null --max-time 1 "http://$addr/"; then
    die "$addr is in use (another gateway?); stop it first"
  fi
done

if command -v rustup >/dev/null; then
  if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    say "adding the wasm32-wasip2 target"
    rustup target add wasm32-wasip2
  fi
else
  echo "note: no rustup; the wasm32-wasip2 target must already be installed" >&2
fi

say "building the plugins (jwt-auth, aggregate) for wasm32-wasip2"
(cd "$ROOT" && cargo build --release --target wasm32-wasip2 -p jwt-auth-plugin -p aggregate-plugin)
mkdir -p "$HERE/plugins" "$LOGS"
cp "$TARGET/wasm32-wasip2/release/jwt_auth_plugin.wasm" "$HERE/plugins/jwt-auth.wasm"
cp "$TARGET/wasm32-wasip2/release/aggregate_plugin.wasm" "$HERE/plugins/aggregate.wasm"

say "building the gateway and the mock services (release)"
(cd "$ROOT" && cargo build --release -p gatehouse -p productdetails --bins)
GATEHOUSE="$TARGET/release/gatehouse"
DEMO="$TARGET/release/productdetails"

"$GATEHOUSE" check --config "$HERE/gatehouse.toml"

GATEWAY_PID=""
PIDS=()   # PIDS[i] runs SERVICES[i] (no associative arrays: macOS ships bash 3.2)
pid_of() {
  local i
  for i in "${!SERVICES[@]}"; do
    if [ "${SERVICES[$i]}" = "$1" ]; then echo "${PIDS[$i]:-}"; fi
  done
}
stop_all() {
  trap - INT TERM EXIT
  echo
  say "stopping"
  # Services first: on SIGTERM each deregisters from the gateway it is about to lose.
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do
    if kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid" 2>/dev/null || true; fi
  done
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do
    wait "$pid" 2>/dev/null || true
  done
  if [ -n "$GATEWAY_PID" ] && kill -0 "$GATEWAY_PID" 2>/dev/null; then
    kill -TERM "$GATEWAY_PID" 2>/dev/null || true
    wait "$GATEWAY_PID" 2>/dev/null || true
  fi
  say "stopped; logs are in $LOGS"
}
trap stop_all INT TERM EXIT

# wait_for WHAT SECONDS COMMAND...: poll COMMAND every 0.2 s until it succeeds or time is up.
wait_for() {
  local what="$1" secs="$2"; shift 2
  local deadline=$((SECONDS + secs))
  until "$@"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "timed out after ${secs}s waiting for $what; last log lines:" >&2
      tail -n 20 "$LOGS"/*.log >&2 || true
      exit 1
    fi
    if [ -n "$GATEWAY_PID" ] && ! kill -0 "$GATEWAY_PID" 2>/dev/null; then
      echo "the gateway exited; its log:" >&2
      tail -n 40 "$LOGS/gateway.log" >&2 || true
      exit 1
    fi
    sleep 0.2
  done
}

say "starting the gateway on $PUBLIC (admin $ADMIN); log: $LOGS/gateway.log"
# Started in this directory: gatehouse.toml's `[plugins] dir = "plugins"` is relative to it.
(cd "$HERE" && exec "$GATEHOUSE" run --config gatehouse.toml) >"$LOGS/gateway.log" 2>&1 &
GATEWAY_PID=$!
wait_for "the gateway's /readyz" 30 curl -sf -o /dev/null "http://$ADMIN/readyz"

for name in "${SERVICES[@]}"; do
  "$DEMO" serve --service "$name" --admin "$ADMIN" >"$LOGS/$name.log" 2>&1 &
  PIDS+=("$!")
done

TOKEN="$("$DEMO" token --sub alice --ttl 12h)"
URL="http://$PUBLIC/productdetails?productid=42"
all_parts_live() {
  local headers
  headers="$(curl -s -D - -o /dev/null -H "authorization: Bearer $TOKEN" "$URL")" || return 1
  # 200, and no part degraded: all four services registered and answering.
  grep -q '^HTTP/1.1 200' <<<"$headers" && ! grep -qi '^x-gatehouse-degraded' <<<"$headers"
}
say "starting the services (${SERVICES[*]}); waiting for /productdetails"
wait_for "GET /productdetails with all four parts" 30 all_parts_live

cat <<EOF

The demo is up. Try:

  TOKEN=$TOKEN

  # the full document: product, recommendations, reviews, price
  curl -s -H "authorization: Bearer \$TOKEN" '$URL'

  # no token / a bad token: 401 with WWW-Authenticate
  curl -si '$URL'
  curl -si -H 'authorization: Bearer not.a.token' '$URL'

  # an unknown product: 404 from product-info, passed on
  curl -s -H "authorization: Bearer \$TOKEN" 'http://$PUBLIC/productdetails?productid=99'

  # partial failure: stop a service, curl again, and look at the answer
  kill $(pid_of recommendations)   # recommendations: {"items": []}, listed in "_degraded"
  kill $(pid_of price)   # price: the last cached price with "cached": true
  kill $(pid_of product-info)   # product-info is required: 502 with a JSON error
  curl -si -H "authorization: Bearer \$TOKEN" '$URL'

  # bring one back (it registers itself again)
  $DEMO serve --service price --admin $ADMIN &

  # what the registry knows
  curl -s http://$ADMIN/registry/services

Logs: $LOGS. Ctrl-C stops everything.
EOF

# Keep running until Ctrl-C (the trap stops everything) or the gateway exits.
wait "$GATEWAY_PID"
