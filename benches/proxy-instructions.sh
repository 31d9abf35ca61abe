#!/usr/bin/env bash
# User-space instructions per proxied request, counted by valgrind's callgrind: a figure that
# stays put when other work shares the machine (wall-clock throughput does not).
#   wrk (10 connections) → gatehouse (under callgrind) → nginx origin (64-byte body)
# The config stays one that builds before `listen.workers` accept, so old and new binaries can
# be compared: old ones get one tokio worker from TOKIO_WORKER_THREADS, new ones their default
# worker count, which callgrind runs one thread at a time anyway.
# Counts only the measured window (after a warm-up) and divides by the requests the gateway's
# own metrics say it answered in that window. Pass a second binary to compare two builds.
# Last, nginx as the same reverse proxy is counted the same way, for comparison.
#
# Usage: benches/proxy-instructions.sh [gatehouse-binary [other-binary]]
#        KEEP_PROFILES=DIR keeps each measured window's callgrind profile there.
#        PORT_BASE=P moves every port (P public, P+1 origin, P+2 nginx, P+11 admin, P+19 the
#        unanswered OTLP endpoint; default 18180), so two runs can share a machine.
#        TRAFFIC=1 adds two routes and counts each (after the plain route, same binary):
#        /limited/ (a rate limit and max_in_flight that never refuse) and /traffic/ (the same
#        plus a 95/5 weighted split over two services on the one origin).
#        EDGE=1 adds a cached route and a static one and counts each: /cached/ (a cache hit:
#        the origin says max-age=3600, so after the warm-up every request is a hit) and
#        /static (a `respond` route, no upstream); nginx is then also counted serving the
#        /cached/ hit from its proxy_cache.
#        TRACING=1 counts the plain route again with `[tracing]` on, sampling 1 % and 100 % of
#        new traces, and prints each as a ratio to tracing off (same binary, same run). The
#        OTLP endpoint is a port nothing listens on: spans are made, queued, batched and
#        encoded, and each batch's export fails at connect (counted as failed), so the figure
#        is the gateway's own cost without a collector's answers.
#        PLUGINS=1 adds three plugin routes and counts each: /noop/ (the no-op plugin, a fresh
#        instance per request, the default), /reuse/ (the same with reuse_instances = true) and
#        /jwt/ (jwt-auth verifying an HS256 token sent on every request, fresh instances: with
#        WIT 0.1.3 `init` they start from the route's pre-initialised snapshot); each is printed
#        with its ratio to the plain route. Then, without valgrind, the system and user CPU
#        time per request of the plain, /noop/, /reuse/ and /jwt/ routes, from /proc/PID/stat over a
#        10 s wrk run (clock ticks: 10 ms resolution over tens of thousands of requests).
#        Plugins load from the cache (prime_plugins), so no compile runs under valgrind.
#        READY_WAIT=SECONDS (default 600) bounds each wait for the gateway to start and load
#        its plugins; past it the script stops with the gateway's log instead of measuring.
#        GUESTS=DIR uses the two plugins' .wasm files from DIR instead of building them.
#        JWT_WITHOUT_INIT=FILE.wasm adds /jwt-old/: the same jwt-auth route served by FILE, a
#        jwt-auth built without `init` (e.g. from a commit before it), which parses its config
#        on every request: the before of the same run.
# Needs: apt-get install -y nginx wrk valgrind; builds gatehouse in release mode by default.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in wrk nginx valgrind callgrind_control; do
  command -v "$tool" >/dev/null || { echo "needs: apt-get install -y nginx wrk valgrind" >&2; exit 1; }
done
if [ $# -eq 0 ]; then
  cargo build --release -p gatehouse --quiet
  set -- "${CARGO_TARGET_DIR:-target}/release/gatehouse"
fi
WORK=$(mktemp -d)
source benches/load-lib.sh
trap 'set +e; kill $(jobs -p) 2>/dev/null; nginx_stop origin; rm -rf "$WORK"' EXIT
P=${PORT_BASE:-18180}
ORIGIN=127.0.0.1:$((P + 1)); PUBLIC=127.0.0.1:$P; ADMIN=127.0.0.1:$((P + 11)); NGINX=127.0.0.1:$((P + 2))
BODY=$(printf 'x%.0s' $(seq 1 64))
nginx_conf origin 01 "server { listen $ORIGIN; location / { return 200 '$BODY'; }
  location /cached/ { add_header Cache-Control 'max-age=3600'; return 200 '$BODY'; } }"
cat > "$WORK/gatehouse.toml" <<CONF
[listen]
public = "$PUBLIC"
admin = "$ADMIN"
[log]
level = "warn"
[[services]]
name = "origin"
endpoints = ["$ORIGIN"]
[[routes]]
name = "all"
service = "origin"
CONF
[ -n "${TRAFFIC:-}" ] && traffic_routes "$ORIGIN" >> "$WORK/gatehouse.toml"
[ -n "${EDGE:-}" ] && cat >> "$WORK/gatehouse.toml" <<CONF
[[routes]]
name = "cached"
service = "origin"
match = { prefix = "/cached" }
[routes.cache]
[[routes]]
name = "static"
match = { path = "/static" }
respond = { body = "$BODY" }
CONF
if [ -n "${PLUGINS:-}" ]; then
  # The guests as benches/plugin-load.sh builds them; jwt-auth's HS256 secret and a token
  # valid for a day, signed here (openssl), sent on every /jwt/ request.
  # GUESTS=DIR takes noop_plugin.wasm and jwt_auth_plugin.wasm built before from DIR (no
  # cargo: the build would wait on the target dir's lock while another build holds it).
  guests=${GUESTS:-${CARGO_TARGET_DIR:-target}/wasm32-wasip2/release}
  [ -n "${GUESTS:-}" ] || cargo build --release --target wasm32-wasip2 -p noop-plugin -p jwt-auth-plugin --quiet
  mkdir -p "$WORK/plugins"
  cp "$guests/noop_plugin.wasm" "$WORK/plugins/noop.wasm"
  cp "$guests/jwt_auth_plugin.wasm" "$WORK/plugins/jwt-auth.wasm"
  SECRET=bench-secret-that-is-at-least-32-bytes
  b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
  SIGNED="$(printf '{"alg":"HS256","typ":"JWT"}' | b64url).$(printf '{"sub":"bench","exp":%d}' $(( $(date +%s) + 86400 )) | b64url)"
  TOKEN="$SIGNED.$(printf '%s' "$SIGNED" | openssl dgst -sha256 -hmac "$SECRET" -binary | b64url)"
  cat >> "$WORK/gatehouse.toml" <<CONF
[[routes]]
name = "noop"
service = "origin"
match = { prefix = "/noop" }
plugins = [{ name = "noop" }]
[[routes]]
name = "reuse"
service = "origin"
match = { prefix = "/reuse" }
plugins = [{ name = "noop", reuse_instances = true }]
[[routes]]
name = "jwt"
service = "origin"
match = { prefix = "/jwt" }
plugins = [{ name = "jwt-auth", config = { keys = [{ secret = "$SECRET" }] } }]
CONF
  if [ -n "${JWT_WITHOUT_INIT:-}" ]; then
    cp "$JWT_WITHOUT_INIT" "$WORK/plugins/jwt-old.wasm"
    cat >> "$WORK/gatehouse.toml" <<CONF
[[routes]]
name = "jwt-old"
service = "origin"
match = { prefix = "/jwt-old" }
plugins = [{ name = "jwt-old", config = { keys = [{ secret = "$SECRET" }] } }]
CONF
  fi
  # [plugins] must come before the first [[services]] table; the cache keeps compiled
  # plugins and snapshots between the runs of this script. A pool of 64 instances: valgrind
  # cannot reserve the default pool's address space (1000 slots: ~200 GB). A 30 s deadline:
  # under valgrind wasm runs ~50x slower, and the load-time check instantiation and
  # jwt-auth's `init` would overrun the default 100 ms (the plugin then fails to load).
  { printf '[plugins]\ndir = "%s"\ncache_dir = "%s"\nmax_instances = 64\ndeadline = "30s"\n' "$WORK/plugins" "$WORK/plugin-cache"; cat "$WORK/gatehouse.toml"; } > "$WORK/with-plugins.toml"
  mv "$WORK/with-plugins.toml" "$WORK/gatehouse.toml"
fi
nginx -c "$WORK/origin.conf" -p "$WORK"

# Polls command $3 every 0.5 s until it succeeds, for at most READY_WAIT seconds, while
# process $2 lives; otherwise stops the script, naming what $1 did not get to and showing
# the tail of log $4.
await() { # $1 = what, $2 = pid, $3 = command, $4 = log
  local deadline=$(( SECONDS + ${READY_WAIT:-600} ))
  until eval "$3" >/dev/null 2>&1; do
    if ! kill -0 "$2" 2>/dev/null; then
      echo "gatehouse exited before $1; its log ($4):" >&2; tail -20 "$4" >&2; exit 1
    fi
    if (( SECONDS >= deadline )); then
      echo "gatehouse did not get to $1 within ${READY_WAIT:-600} s (READY_WAIT); its log ($4):" >&2
      tail -20 "$4" >&2; kill "$2"; exit 1
    fi
    sleep 0.5
  done
}
ready() { curl -sf "http://$ADMIN/readyz"; }
# Every plugin loaded in its optimized build (none failed, none still baseline or loading).
plugins_ready() {
  local listing; listing=$(curl -sf "http://$ADMIN/admin/plugins") || return 1
  ! grep -q '"baseline"\|"failed"\|"loading"' <<<"$listing" && grep -q '"optimized"' <<<"$listing"
}
# The plugin route at path $3 settled how its instances start: a plugin exporting `init` gets a
# snapshot made (or loaded from the cache), or is found to have nothing to set up, on its
# route's first request; under callgrind that takes seconds of instrumenting and compiling,
# which must not fall inside the measured window. Settled: after a request to the route,
# gateway process $1 used under 5 % of a CPU in the next second (works for any binary;
# jwt-auth's line in log $2 says so at once for binaries that log it).
settled() {
  [ "${3:-/}" = / ] && return 0
  curl -sf -H "Authorization: Bearer ${TOKEN:-}" "http://$PUBLIC$3" >/dev/null || true
  [ "$3" = /jwt/ ] && grep -q 'plugin pre-initialised' "$2" && return 0
  local before after
  before=$(awk '{ print $14 + $15 }' "/proc/$1/stat")
  sleep 1
  after=$(awk '{ print $14 + $15 }' "/proc/$1/stat")
  (( after - before < $(getconf CLK_TCK) / 20 ))
}
export RUST_LOG=warn,gatehouse::plugins::runtime::preinit=info

answered() { curl -sf "http://$ADMIN/metrics" | awk '/^gatehouse_requests_total/ { s += $2 } END { print s + 0 }'; }

# The measured window on the proxy under callgrind (valgrind's pid $1) at URL $2: a warm-up,
# then 10 s of wrk between zeroing and dumping the counters; then the proxy is stopped.
# Prints "instructions-per-request requests". The requests are counted by command $3 (run
# before and after) when given, else taken from wrk (within the 10 in flight at either end).
measure_window() {
  local pid=$1 url=$2 counter=${3:-}
  callgrind_control -i on "$pid" >/dev/null
  local auth=(); [[ "$url" == */jwt/* || "$url" == */jwt-old/* ]] && auth=(-H "Authorization: Bearer $TOKEN")
  wrk -t1 -c10 -d3s "${auth[@]}" "$url" >/dev/null      # warm-up: pools, caches
  callgrind_control -z "$pid" >/dev/null
  local before=0 requests
  [ -n "$counter" ] && before=$("$counter")
  requests=$(wrk -t1 -c10 -d10s "${auth[@]}" "$url" | awk '/requests in/ { print $1 }')
  [ -n "$counter" ] && requests=$(( $("$counter") - before ))
  callgrind_control -d "$pid" >/dev/null
  kill "$pid"; wait "$pid" 2>/dev/null || true
  local total
  total=$(callgrind_annotate "$WORK"/cg."$pid".1 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
  # KEEP_PROFILES=DIR keeps each window's profile for callgrind_annotate.
  [ -n "${KEEP_PROFILES:-}" ] && cp "$WORK"/cg."$pid".1 "$KEEP_PROFILES/cg.$(basename "${PROFILE_NAME:-$pid}").$pid"
  rm -f "$WORK"/cg.*
  echo "$((total / requests)) $requests"
}

count_instructions() { # $1 = binary, $2 = path (default /) → "instructions-per-request requests"
  TOKIO_WORKER_THREADS=1 valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$WORK/cg.%p" "$1" run --config "$WORK/gatehouse.toml" >"$WORK/gatehouse.log" 2>&1 &
  local pid=$!
  await "readiness under callgrind" "$pid" ready "$WORK/gatehouse.log"
  [ -n "${PLUGINS:-}" ] && await "its plugins under callgrind" "$pid" plugins_ready "$WORK/gatehouse.log"
  [ -n "${PLUGINS:-}" ] && await "route ${2:-/}'s instances settled under callgrind" "$pid" "settled $pid $WORK/gatehouse.log ${2:-/}" "$WORK/gatehouse.log"
  measure_window "$pid" "http://$PUBLIC${2:-/}" answered
}

# nginx as the same reverse proxy (keep-alive upstream pool), for comparison: one process in
# the foreground so callgrind follows the worker itself. nginx keeps no request count, so the
# window's requests are wrk's.
count_nginx_instructions() { # $1 = path (default /) → "instructions-per-request requests"
  nginx_conf proxy 10 "upstream origin { server $ORIGIN; keepalive 64; }
  proxy_cache_path $WORK/nginx-cache levels=1:2 keys_zone=hits:10m;
  server { listen $NGINX; proxy_http_version 1.1; proxy_set_header Connection \"\";
    location / { proxy_pass http://origin; }
    location /cached/ { proxy_pass http://origin; proxy_cache hits; } }"
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/cg.%p" \
    nginx -c "$WORK/proxy.conf" -p "$WORK" -g 'daemon off; master_process off;' >"$WORK/nginx.log" 2>&1 &
  local pid=$!
  for _ in $(seq 240); do curl -sf "http://$NGINX/" >/dev/null && break; sleep 0.5; done
  measure_window "$pid" "http://$NGINX${1:-/}"
}

# User and system CPU per request at $2 without valgrind (one worker), from /proc/PID/stat
# over a 10 s wrk run after a warm-up → "user-us system-us requests".
cpu_per_request() { # $1 = binary, $2 = path
  TOKIO_WORKER_THREADS=1 "$1" run --config "$WORK/gatehouse.toml" >"$WORK/gatehouse.log" 2>&1 &
  local pid=$! url="http://$PUBLIC$2" auth=()
  [[ "$2" == /jwt* ]] && auth=(-H "Authorization: Bearer $TOKEN")
  await "readiness" "$pid" ready "$WORK/gatehouse.log"
  [ -n "${PLUGINS:-}" ] && await "its plugins" "$pid" plugins_ready "$WORK/gatehouse.log"
  await "route $2's instances settled" "$pid" "settled $pid $WORK/gatehouse.log $2" "$WORK/gatehouse.log"
  wrk -t1 -c10 -d5s "${auth[@]}" "$url" >/dev/null
  local before after requests hz
  hz=$(getconf CLK_TCK)
  before=$(awk '{ print $14, $15 }' "/proc/$pid/stat")
  requests=$(wrk -t1 -c10 -d10s "${auth[@]}" "$url" | awk '/requests in/ { print $1 }')
  after=$(awk '{ print $14, $15 }' "/proc/$pid/stat")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  awk -v b="$before" -v a="$after" -v n="$requests" -v hz="$hz" 'BEGIN {
    split(b, x, " "); split(a, y, " ");
    printf "%.2f %.2f %d\n", (y[1] - x[1]) / hz * 1e6 / n, (y[2] - x[2]) / hz * 1e6 / n, n }'
}

# Let the plugins' optimized builds and jwt-auth's snapshot land in the plugin cache, so the
# counted runs load them from disk instead of compiling inside the measured window. Twice:
# natively for the CPU runs, and under valgrind (its cheapest tool) for the callgrind runs:
# valgrind's emulated CPU reports fewer features, so wasmtime's compatibility key (part of
# each cache file's name) differs there, and a natively primed cache would miss.
prime_plugins() { # $1 = binary
  local runner
  for runner in "" "valgrind --tool=none"; do
    TOKIO_WORKER_THREADS=1 $runner "$1" run --config "$WORK/gatehouse.toml" >"$WORK/prime.log" 2>&1 &
    local pid=$! how=${runner:+ under valgrind}
    await "readiness$how (priming the plugin cache)" "$pid" ready "$WORK/prime.log"
    await "its plugins' optimized builds$how" "$pid" plugins_ready "$WORK/prime.log"
    await "jwt-auth's snapshot$how" "$pid" "settled $pid $WORK/prime.log /jwt/" "$WORK/prime.log"
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
}

for bin in "$@"; do
  [ -n "${PLUGINS:-}" ] && prime_plugins "$bin"
  read -r per_request requests < <(count_instructions "$bin")
  printf '%-50s %8d instructions/request (%d requests)\n' "$bin" "$per_request" "$requests"
  if [ -n "${TRACING:-}" ]; then
    off=$per_request
    cp "$WORK/gatehouse.toml" "$WORK/untraced.toml"
    for ratio in 0.01 1.0; do
      { cat "$WORK/untraced.toml"
        printf '[tracing]\nendpoint = "http://127.0.0.1:%s"\nsample_ratio = %s\n' "$((P + 19))" "$ratio"
      } > "$WORK/gatehouse.toml"
      read -r per_request requests < <(count_instructions "$bin")
      printf '%-50s %8d instructions/request (%d requests), %s x tracing off\n' \
        "  tracing, sample_ratio $ratio" "$per_request" "$requests" \
        "$(awk -v a="$per_request" -v b="$off" 'BEGIN { printf "%.2f", a / b }')"
    done
    cp "$WORK/untraced.toml" "$WORK/gatehouse.toml"
  fi
  if [ -n "${TRAFFIC:-}" ]; then
    for path in /limited/ /traffic/; do
      read -r per_request requests < <(count_instructions "$bin" "$path")
      printf '%-50s %8d instructions/request (%d requests)\n' "  $path" "$per_request" "$requests"
    done
  fi
  if [ -n "${PLUGINS:-}" ]; then
    plain=$per_request
    for path in /noop/ /reuse/ /jwt/ ${JWT_WITHOUT_INIT:+/jwt-old/}; do
      read -r per_request requests < <(count_instructions "$bin" "$path")
      printf '%-50s %8d instructions/request (%d requests), %s x plain, +%d\n' "  $path" \
        "$per_request" "$requests" "$(awk -v a="$per_request" -v b="$plain" 'BEGIN { printf "%.2f", a / b }')" \
        $(( per_request - plain ))
    done
    for path in / /noop/ /reuse/ /jwt/; do
      read -r user system requests < <(cpu_per_request "$bin" "$path")
      printf '%-50s user %6.2f us, system %6.2f us per request (%d requests, no valgrind)\n' \
        "  cpu $path" "$user" "$system" "$requests"
    done
  fi
  if [ -n "${EDGE:-}" ]; then
    for path in /cached/ /static; do
      read -r per_request requests < <(count_instructions "$bin" "$path")
      printf '%-50s %8d instructions/request (%d requests)\n' "  $path" "$per_request" "$requests"
    done
  fi
done
if [ -n "${EDGE:-}" ]; then
  read -r per_request requests < <(count_nginx_instructions /cached/)
  printf '%-50s %8d instructions/request (%d requests)\n' "nginx proxy_cache hit, /cached/" "$per_request" "$requests"
fi
read -r per_request requests < <(count_nginx_instructions)
printf '%-50s %8d instructions/request (%d requests)\n' "nginx (same proxy, for comparison)" "$per_request" "$requests"
