#!/usr/bin/env bash
# Gateway throughput with the rate limiter's counters in Redis (docs/scale-out.md), all
# contestants in one run:
#   gatehouse  wrk → gatehouse → origin (route without limits)
#   local      the same gateway, a route with a client-address limit counted in process
#   redis      a second gateway, the same limit with its counters in Redis (one EVALSHA per
#              request to a redis-server on loopback)
# Both limits are too high to refuse anything, so local/gatehouse and redis/gatehouse are the
# cost of the limit checks. Each gateway is pinned to CPU 1 with one worker; wrk, the nginx
# origin and redis-server share CPU 0. Rounds with hypervisor steal are left out
# (load-lib.sh, summarize_rounds); ratios are against `gatehouse` of the same round.
#
# Usage: benches/redis-load.sh [duration per round=3s] [connections=50] [rounds=7]
#        BIN=binary skips the build.
# Needs: apt-get install -y nginx wrk redis-server; builds gatehouse in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-3s}
CONNS=${2:-50}
ROUNDS=${3:-7}
for tool in wrk nginx redis-server; do
  command -v "$tool" >/dev/null || { echo "needs: apt-get install -y nginx wrk redis-server" >&2; exit 1; }
done
if [ -z "${BIN:-}" ]; then
  cargo build --release -p gatehouse --quiet
  BIN=${CARGO_TARGET_DIR:-target}/release/gatehouse
fi
WORK=$(mktemp -d)
source benches/load-lib.sh
trap 'set +e; kill $(jobs -p) 2>/dev/null; nginx_stop origin; rm -rf "$WORK"' EXIT
ORIGIN=127.0.0.1:18081; LOCAL=127.0.0.1:18080; ADMIN=127.0.0.1:18901
SHARED=127.0.0.1:18083; SHARED_ADMIN=127.0.0.1:18902; REDIS_PORT=18379
BODY=$(printf 'x%.0s' $(seq 1 64))

nginx_conf origin 01 "server { listen $ORIGIN; location / { return 200 '$BODY'; } }"
routes() {
  cat <<CONF
[[services]]
name = "origin"
endpoints = ["$ORIGIN"]
[[routes]]
name = "limited"
service = "origin"
match = { prefix = "/limited/" }
rate_limits = [{ name = "per-client", requests = 100000000, per = "1s", key = "client-address" }]
[[routes]]
name = "all"
service = "origin"
CONF
}
{ gatehouse_base "$LOCAL" "$ADMIN"; routes; } > "$WORK/local.toml"
{ gatehouse_base "$SHARED" "$SHARED_ADMIN"
  printf '[redis]\nurl = "redis://127.0.0.1:%s"\n[rate_limits]\nstore = "redis"\non_error = "closed"\n' "$REDIS_PORT"
  routes; } > "$WORK/redis.toml"

nginx -c "$WORK/origin.conf" -p "$WORK"
taskset -c 0 redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
  --dir "$WORK" >/dev/null &
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT") 2>/dev/null && break; sleep 0.1; done
taskset -c 1 "$BIN" run --config "$WORK/local.toml" &
taskset -c 1 "$BIN" run --config "$WORK/redis.toml" &
wait_ready "$ADMIN"
wait_ready "$SHARED_ADMIN"
# A refusal would make the figures meaningless: check one request each way first.
curl -sf "http://$SHARED/limited/" >/dev/null || { echo "the redis-limited route does not answer 200" >&2; exit 1; }

for round in $(seq "$ROUNDS"); do
  { measure gatehouse "http://$LOCAL/"; measure local "http://$LOCAL/limited/"
    measure redis "http://$SHARED/limited/"; } |
    sed "s/^/$round /"
done > "$WORK/rounds"
echo "req/s (steal %) per round:"
for who in gatehouse local redis; do
  printf '  %-10s' "$who"
  awk -v w="$who" '$2 == w { printf " %6d (%3.1f)", $3, $6 } END { print "" }' "$WORK/rounds"
done
echo
summarize_rounds gatehouse "$WORK/rounds"
# Every request must have been allowed through Redis, none decided locally or refused.
curl -s "http://$SHARED_ADMIN/metrics" | grep -E '^gatehouse_redis_(calls|refused|local_fallbacks)' || true
