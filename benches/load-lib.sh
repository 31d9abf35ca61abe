# Shared by the load scripts (proxy-load.sh, balancing-load.sh, plugin-load.sh, and
# proxy-instructions.sh for the nginx helpers); source it after setting WORK (a scratch
# directory), and CONNS and DURATION (wrk's -c and -d) before calling `measure`.
#
# The layout they share: the proxy under test pinned to CPU 1 with one worker; wrk and the
# nginx origin(s) on CPU 0.

# Writes $WORK/$1.conf: one nginx worker pinned to affinity mask $2, serving the http-block
# contents $3, no access log, keep-alive without a request cap.
nginx_conf() {
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

# Stops the nginx started from $WORK/$1.conf, if it runs. For the EXIT trap, so a failed run
# never leaves an origin holding its port.
nginx_stop() {
  nginx -s stop -c "$WORK/$1.conf" -p "$WORK" 2>/dev/null || true
}

# Prints the [listen] and [log] tables of a one-worker gateway on public address $1 and admin
# address $2, quiet but for warnings (no access log).
gatehouse_base() {
  printf '[listen]\npublic = "%s"\nadmin = "%s"\nworkers = 1\n[log]\nlevel = "warn"\n' "$1" "$2"
}

# Waits up to 10 s for gatehouse's admin listener at $1 to report ready.
wait_ready() {
  for _ in $(seq 100); do curl -sf "http://$1/readyz" >/dev/null && return 0; sleep 0.1; done
  echo "gatehouse did not become ready at $1" >&2
  return 1
}

# Loads URL $2 with wrk on CPU 0 (a short warm-up, then DURATION) and prints
# "$1 req/s p50_µs p99_µs". Fails on non-2xx responses: a broken route must not pass for a
# fast one.
measure() {
  taskset -c 0 wrk -t1 -c"$CONNS" -d1s "$2" >/dev/null
  taskset -c 0 wrk -t1 -c"$CONNS" -d"$DURATION" --latency "$2" > "$WORK/$1.wrk"
  if grep -q 'Non-2xx' "$WORK/$1.wrk"; then
    echo "$1: non-2xx responses" >&2
    cat "$WORK/$1.wrk" >&2
    return 1
  fi
  awk -v n="$1" '
    function us(v) { if (v ~ /us$/) return v+0; if (v ~ /ms$/) return (v+0)*1000; return (v+0)*1000000 }
    /Requests\/sec/ { rps=$2 } / 50%/ { p50=us($2) } / 99%/ { p99=us($2) }
    END { printf "%s %.0f %.0f %.0f\n", n, rps, p50, p99 }' "$WORK/$1.wrk"
}
