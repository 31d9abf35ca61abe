#!/usr/bin/env bash
# Edge responses on loopback, gatehouse against nginx in one run (issue 17):
#   *-plain      proxied, no cache: the reference each proxy's cache is compared with
#   *-hit        a cache hit: gatehouse's [routes.cache] (moka, in memory) against nginx's
#                proxy_cache (its file cache on /dev/shm, so both serve the hit from memory);
#                the origin says `Cache-Control: max-age=3600`, so after the warm-up every
#                request is a hit and the origin sees none
#   *-gzip       compression of a 128 KiB JSON response at gzip level 6 on both (nginx:
#                gzip_comp_level 6; gatehouse: gzip_level = 6), the proxy being the bottleneck;
#                reported as MB/s of uncompressed input per core (req/s x 128 KiB)
#   gatehouse-br, gatehouse-zstd  the same with brotli 4 and zstd 3 (gatehouse's defaults;
#                Debian's nginx has neither)
# Each proxy is pinned to CPU 1 with one worker; wrk and the nginx origin share CPU 0.
# This VM's steal is often far above load-lib.sh's 1 % cut, so besides req/s each run records
# the CPU time the proxy process itself used (utime + stime from /proc) per request: what a
# request costs, which steal barely moves. Compression throughput is computed from it:
# MB of uncompressed input per CPU-second of the proxy.
#
# Usage: benches/edge-load.sh [duration per round=3s] [connections=50] [rounds=5]
#        BIN=binary skips the build.
# Needs: apt-get install -y nginx wrk python3; builds gatehouse in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-3s}
CONNS=${2:-50}
ROUNDS=${3:-5}
for tool in wrk nginx python3; do
  command -v "$tool" >/dev/null || { echo "needs: apt-get install -y nginx wrk python3" >&2; exit 1; }
done
if [ -z "${BIN:-}" ]; then
  cargo build --release -p gatehouse --quiet
  BIN=${CARGO_TARGET_DIR:-target}/release/gatehouse
fi
# On tmpfs: nginx's proxy_cache keeps its entries in files, so they live in memory here.
WORK=$(mktemp -d -p /dev/shm)
source benches/load-lib.sh
trap 'set +e; kill $(jobs -p) 2>/dev/null; nginx_stop origin; nginx_stop proxy; rm -rf "$WORK"' EXIT
ORIGIN=127.0.0.1:18081; GATEHOUSE=127.0.0.1:18080; NGINX=127.0.0.1:18082; ADMIN=127.0.0.1:18901
BODY=$(printf 'x%.0s' $(seq 1 512))

# 128 KiB of API-like JSON: records with varying ids, names and prices (compresses ~8-10x,
# like real listings, not like a run of one byte).
mkdir -p "$WORK/www"
chmod 755 "$WORK"  # nginx's workers (not root) read the file below
python3 - "$WORK/www/items.json" <<'PY'
import json, random, sys
random.seed(17)
words = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima".split()
items, size = [], 0
while size < 128 * 1024:
    item = {"id": random.randrange(10**9), "name": " ".join(random.sample(words, 3)),
            "price": round(random.uniform(1, 500), 2), "stock": random.randrange(1000),
            "tags": random.sample(words, 2), "active": random.random() < 0.8}
    items.append(item)
    size += len(json.dumps(item)) + 1
text = json.dumps({"items": items})[: 128 * 1024 - 2]
text = text[: text.rfind("}") + 1] + "]}"
open(sys.argv[1], "w").write(text)
PY
chmod 644 "$WORK/www/items.json"
JSON_BYTES=$(stat -c %s "$WORK/www/items.json")

nginx_conf origin 01 "server {
    listen $ORIGIN;
    location /plain { return 200 '$BODY'; }
    location /cached { add_header Cache-Control 'max-age=3600'; return 200 '$BODY'; }
    location /items { root $WORK/www; try_files /items.json =404; default_type application/json; }
  }"
nginx_conf proxy 10 "upstream origin { server $ORIGIN; keepalive 64; }
  proxy_cache_path $WORK/nginx-cache levels=1:2 keys_zone=hits:10m max_size=64m;
  server {
    listen $NGINX;
    proxy_http_version 1.1;
    proxy_set_header Connection \"\";
    location /plain { proxy_pass http://origin; }
    location /cached { proxy_pass http://origin; proxy_cache hits; proxy_cache_lock on; }
    location /items {
      proxy_pass http://origin;
      gzip on; gzip_comp_level 6; gzip_proxied any; gzip_types application/json;
    }
  }"
{ gatehouse_base "$GATEHOUSE" "$ADMIN"; cat <<CONF; } > "$WORK/gatehouse.toml"
[[services]]
name = "origin"
endpoints = ["$ORIGIN"]
[[routes]]
name = "plain"
service = "origin"
match = { prefix = "/plain" }
[[routes]]
name = "cached"
service = "origin"
match = { prefix = "/cached" }
[routes.cache]
[[routes]]
name = "gzip"
service = "origin"
match = { prefix = "/items" }
[routes.compression]
algorithms = ["gzip", "br", "zstd"]
gzip_level = 6
CONF

nginx -c "$WORK/origin.conf" -p "$WORK"
nginx -c "$WORK/proxy.conf" -p "$WORK"
taskset -c 1 "$BIN" run --config "$WORK/gatehouse.toml" &
GATEHOUSE_PID=$!
wait_ready "$ADMIN"

# CPU ticks (utime + stime) of process $1 and its children (nginx's master and workers).
cpu_ticks() {
  local total=0 pid
  for pid in "$1" $(pgrep -P "$1"); do
    [ -r "/proc/$pid/stat" ] && total=$(( total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat") ))
  done
  echo "$total"
}

# Like load-lib.sh's `measure` for contestant $1 (process $2 and its children) on URL $3, and
# prints "name req/s cpu_µs_per_request steal_%".
measure_cpu() {
  local name=$1 pid=$2 url=$3
  shift 3
  taskset -c 0 wrk -t1 -c"$CONNS" -d1s "$@" "$url" >/dev/null
  local steal0 ticks0 start
  steal0=$(steal_ticks); ticks0=$(cpu_ticks "$pid"); start=$(date +%s%N)
  taskset -c 0 wrk -t1 -c"$CONNS" -d"$DURATION" "$@" "$url" > "$WORK/$name.wrk"
  local ticks=$(( $(cpu_ticks "$pid") - ticks0 )) steal=$(( $(steal_ticks) - steal0 ))
  local elapsed=$(( $(date +%s%N) - start ))
  if grep -q 'Non-2xx' "$WORK/$name.wrk"; then
    echo "$name: non-2xx responses" >&2; cat "$WORK/$name.wrk" >&2; return 1
  fi
  awk -v n="$name" -v ticks="$ticks" -v hz="$(getconf CLK_TCK)" -v steal="$steal" -v ns="$elapsed" -v cpus="$(nproc)" '
    / requests in / { reqs = $1 } /Requests\/sec/ { rps = $2 }
    END { printf "%s %.0f %.1f %.1f\n", n, rps, ticks / hz * 1e6 / reqs, 100 * steal / hz / (ns / 1e9) / cpus }' "$WORK/$name.wrk"
}

# The compressed responses are checked once: a proxy that stopped compressing must not pass
# for a fast one.
for check in "$GATEHOUSE gzip" "$NGINX gzip" "$GATEHOUSE br" "$GATEHOUSE zstd"; do
  set -- $check
  got=$(curl -s -o /dev/null -D - -H "Accept-Encoding: $2" "http://$1/items" | tr -d '\r' |
    awk -F': ' 'tolower($1) == "content-encoding" { print $2 }')
  [ "$got" = "$2" ] || {
    echo "http://$1/items answered content-encoding '$got', not $2:" >&2
    curl -s -o /dev/null -D - -H "Accept-Encoding: $2" "http://$1/items" >&2
    exit 1
  }
done
curl -sf "http://$GATEHOUSE/cached" >/dev/null
curl -sf "http://$NGINX/cached" >/dev/null
hit=$(curl -s -o /dev/null -D - "http://$GATEHOUSE/cached" | tr -d '\r' | awk -F': ' 'tolower($1) == "cache-status" { print $2 }')
case "$hit" in *"; hit"*) ;; *) echo "gatehouse's second /cached answer was not a hit: cache-status '$hit'" >&2; exit 1 ;; esac

NGINX_PID=$(cat "$WORK/proxy.pid")
for round in $(seq "$ROUNDS"); do
  { measure_cpu gatehouse-plain "$GATEHOUSE_PID" "http://$GATEHOUSE/plain"
    measure_cpu nginx-plain "$NGINX_PID" "http://$NGINX/plain"
    measure_cpu gatehouse-hit "$GATEHOUSE_PID" "http://$GATEHOUSE/cached"
    measure_cpu nginx-hit "$NGINX_PID" "http://$NGINX/cached"
    CONNS=10 measure_cpu gatehouse-gzip "$GATEHOUSE_PID" "http://$GATEHOUSE/items" -H 'Accept-Encoding: gzip'
    CONNS=10 measure_cpu nginx-gzip "$NGINX_PID" "http://$NGINX/items" -H 'Accept-Encoding: gzip'
    CONNS=10 measure_cpu gatehouse-br "$GATEHOUSE_PID" "http://$GATEHOUSE/items" -H 'Accept-Encoding: br'
    CONNS=10 measure_cpu gatehouse-zstd "$GATEHOUSE_PID" "http://$GATEHOUSE/items" -H 'Accept-Encoding: zstd'; } |
    sed "s/^/$round /"
done > "$WORK/rounds"
echo "per round: req/s, proxy CPU µs per request, steal %"
for who in gatehouse-plain nginx-plain gatehouse-hit nginx-hit gatehouse-gzip nginx-gzip gatehouse-br gatehouse-zstd; do
  printf '  %-16s' "$who"
  awk -v w="$who" '$2 == w { printf "  %6d %7.1f (%4.1f)", $3, $4, $5 } END { print "" }' "$WORK/rounds"
done
echo
echo "medians over all rounds: req/s, CPU µs/request, and for the JSON routes MB of input per CPU-second"
for who in gatehouse-plain nginx-plain gatehouse-hit nginx-hit gatehouse-gzip nginx-gzip gatehouse-br gatehouse-zstd; do
  awk -v w="$who" -v bytes="$JSON_BYTES" '
    function median(a, n,   i, j, t) {
      for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
      return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    $2 == w { r[++n] = $3; c[n] = $4 }
    END { cpu = median(c, n); printf "  %-16s %7d req/s %8.1f µs/req", w, median(r, n), cpu
          if (w ~ /gzip|br|zstd/) printf " %7.1f MB/CPU-s", bytes / cpu
          print "" }' "$WORK/rounds"
done
# What each compressed to, for the ratio.
for check in "$GATEHOUSE gzip gatehouse" "$NGINX gzip nginx" "$GATEHOUSE br gatehouse" "$GATEHOUSE zstd gatehouse"; do
  set -- $check
  printf '  %s %s: %s -> %s bytes\n' "$3" "$2" "$JSON_BYTES" "$(curl -s -H "Accept-Encoding: $2" "http://$1/items" | wc -c)"
done
