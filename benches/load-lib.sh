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

# CPU time the hypervisor gave to other guests (steal), in ticks, over all CPUs.
steal_ticks() { awk '/^cpu / { print $9 }' /proc/stat; }

# Loads URL $2 with wrk on CPU 0 (a short warm-up, then DURATION; further arguments go to wrk,
# e.g. -H 'Connection: close' for a new connection per request) and prints
# "$1 req/s p50_µs p99_µs steal_%", steal_% being the share of the machine's CPU time the
# hypervisor took during the run. Fails on non-2xx responses: a broken route must not pass
# for a fast one.
measure() {
  local name=$1 url=$2
  shift 2
  taskset -c 0 wrk -t1 -c"$CONNS" -d1s "$@" "$url" >/dev/null
  local steal0 start
  steal0=$(steal_ticks); start=$(date +%s%N)
  taskset -c 0 wrk -t1 -c"$CONNS" -d"$DURATION" --latency "$@" "$url" > "$WORK/$name.wrk"
  local steal=$(( $(steal_ticks) - steal0 )) elapsed=$(( $(date +%s%N) - start ))
  if grep -q 'Non-2xx' "$WORK/$name.wrk"; then
    echo "$name: non-2xx responses" >&2
    cat "$WORK/$name.wrk" >&2
    return 1
  fi
  awk -v n="$name" -v steal="$steal" -v ns="$elapsed" -v cpus="$(nproc)" -v hz="$(getconf CLK_TCK)" '
    function us(v) { if (v ~ /us$/) return v+0; if (v ~ /ms$/) return (v+0)*1000; return (v+0)*1000000 }
    /Requests\/sec/ { rps=$2 } / 50%/ { p50=us($2) } / 99%/ { p99=us($2) }
    END { printf "%s %.0f %.0f %.0f %.1f\n", n, rps, p50, p99, 100 * steal / hz / (ns / 1e9) / cpus }' "$WORK/$name.wrk"
}

# Summarises rounds of `measure` lines, each prefixed with its round number ("round name
# req/s p50 p99 steal"), read from file $2, against contestant $1 of the same round.
#
# This VM's neighbours take CPU in bursts (steal), and a run with steal is far slower, so a
# run counts only if neither it nor its round's baseline saw more than STEAL_MAX % (default
# 1). Each contestant is compared with the baseline of its own round; the table gives
# medians over the runs that count, and how many did.
summarize_rounds() {
  awk -v base="$1" -v max="${STEAL_MAX:-1}" '
    function median(list,   n, a, i, j, t) {
      n = split(list, a, " ")
      for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
      return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }
    { line[NR] = $0; if (!($2 in seen)) { seen[$2]; order[++names] = $2 }
      if ($2 == base) { brps[$1] = $3; bp99[$1] = $5; bsteal[$1] = $6 } }
    END {
      for (i = 1; i <= NR; i++) {
        split(line[i], f, " ")
        r = f[1]; n = f[2]; runs[n]++
        if (f[6] > max || bsteal[r] > max) continue
        quiet[n]++
        rps[n] = rps[n] " " f[3]; p50[n] = p50[n] " " f[4]; p99[n] = p99[n] " " f[5]
        ratio[n] = ratio[n] " " f[3] / brps[r]; p99r[n] = p99r[n] " " f[5] / bp99[r]
        cpu[n] = cpu[n] " " 1e6 / f[3] - 1e6 / brps[r]
      }
      printf "medians over the runs where neither the run nor its round'"'"'s %s saw steal > %s%%\n", base, max
      printf "%-11s %7s %9s %8s %8s %11s %11s %12s\n", "", "runs", "req/s", "p50 µs", "p99 µs", "req/s vs " base, "p99 vs " base, "CPU µs/req"
      for (i = 1; i <= names; i++) {
        n = order[i]
        if (!quiet[n]) { printf "%-11s %3d/%-3d (every run had steal)\n", n, 0, runs[n]; continue }
        printf "%-11s %3d/%-3d %9d %8d %8d %11.2f %11.2f %+12.1f\n", n, quiet[n], runs[n], median(rps[n]), median(p50[n]), median(p99[n]), median(ratio[n]), median(p99r[n]), median(cpu[n])
      }
    }' "$2"
}

# The issue-15 routes both proxy benches add (TOML on stdout), on the origin $1: /limited/ (a
# client-address rate limit and max_in_flight, too high to refuse anything) and /traffic/ (the
# same plus a 95/5 weighted split over two services that are both that origin).
traffic_routes() {
  local ORIGIN=$1
  cat <<CONF
[[routes]]
name = "limited"
service = "origin"
match = { prefix = "/limited" }
max_in_flight = 100000
rate_limits = [{ name = "per-client", requests = 1000000000, per = "1s", key = "client-address" }]
[[services]]
name = "origin-canary"
endpoints = ["$ORIGIN"]
[[routes]]
name = "traffic"
match = { prefix = "/traffic" }
max_in_flight = 100000
rate_limits = [{ name = "per-client", requests = 1000000000, per = "1s", key = "client-address" }]
[[routes.split]]
service = "origin"
weight = 95
[[routes.split]]
service = "origin-canary"
weight = 5
CONF
}
