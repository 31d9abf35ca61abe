#!/usr/bin/env bash
# Propagation of a registry change through etcd (docs/scale-out.md, "The registry in etcd"):
# three gateways share one etcd; each change is a register through gateway A, timed from the
# moment the POST is sent until gateways B and C both list the instance in their
# `/registry/services/<service>` view (the view the balancers are fed from). The view is
# polled over keep-alive connections in a tight loop, so the figure includes up to one poll's
# round trip (~0.2 ms on loopback). Prints p50/p99/max in ms over CHANGES registrations, and
# the same for deregistrations (DELETE through A until gone from B and C).
#
# Usage: benches/etcd-propagation.sh [changes=200]
#        BIN=binary skips the build (default: a release build).
# Needs: apt-get install -y etcd-server python3
set -euo pipefail
cd "$(dirname "$0")/.."
CHANGES=${1:-200}
command -v etcd >/dev/null || { echo "needs: apt-get install -y etcd-server" >&2; exit 1; }
if [ -z "${BIN:-}" ]; then
  cargo build --release -p gatehouse --quiet
  BIN=${CARGO_TARGET_DIR:-target}/release/gatehouse
fi
WORK=$(mktemp -d)
trap 'set +e; kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
ETCD=127.0.0.1:18379; ETCD_PEER=127.0.0.1:18380

etcd --name bench --data-dir "$WORK/etcd" \
  --listen-client-urls "http://$ETCD" --advertise-client-urls "http://$ETCD" \
  --listen-peer-urls "http://$ETCD_PEER" --initial-advertise-peer-urls "http://$ETCD_PEER" \
  --initial-cluster "bench=http://$ETCD_PEER" --log-level error >"$WORK/etcd.log" 2>&1 &
for _ in $(seq 1 100); do
  curl -sf "http://$ETCD/health" | grep -q '"health":"true"' && break
  sleep 0.1
done

for i in 1 2 3; do
  cat >"$WORK/gw$i.toml" <<CONF
[listen]
public = "127.0.0.1:1818$i"
admin = "127.0.0.1:1890$i"
workers = 1

[log]
level = "warn"

[etcd]
endpoints = ["http://$ETCD"]

[registry]
token = "bench"
store = "etcd"
lease = "60s"
heartbeat = "20s"

[[services]]
name = "bench"
discovery = "registry"

[[routes]]
name = "bench"
service = "bench"
match = { prefix = "/" }
CONF
  "$BIN" run --config "$WORK/gw$i.toml" >"$WORK/gw$i.log" 2>&1 &
done
for i in 1 2 3; do
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:1890$i/readyz" >/dev/null && break
    sleep 0.1
  done
done

python3 - "$CHANGES" <<'PY'
import http.client, json, sys, time

changes = int(sys.argv[1])
a = http.client.HTTPConnection("127.0.0.1", 18901)
views = [http.client.HTTPConnection("127.0.0.1", p) for p in (18902, 18903)]
auth = {"authorization": "Bearer bench", "content-type": "application/json"}

def ids(conn):
    conn.request("GET", "/registry/services/bench")
    r = conn.getresponse()
    body = r.read()
    if r.status != 200:
        return set()
    return {i["id"] for i in json.loads(body)["instances"]}

def until(pred):
    for conn in views:
        while not pred(ids(conn)):
            pass

def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]

def report(what, xs):
    print(f"{what}: n={len(xs)} p50={pct(xs, 50):.2f} ms p99={pct(xs, 99):.2f} ms max={max(xs):.2f} ms")

reg, dereg = [], []
for n in range(changes):
    iid = f"i{n}"
    body = json.dumps({"id": iid, "address": "127.0.0.1", "port": 20000 + n})
    t0 = time.perf_counter()
    a.request("POST", "/registry/services/bench/instances", body, auth)
    r = a.getresponse(); r.read()
    assert r.status == 201, r.status
    until(lambda s: iid in s)
    reg.append((time.perf_counter() - t0) * 1000)
for n in range(changes):
    iid = f"i{n}"
    t0 = time.perf_counter()
    a.request("DELETE", f"/registry/services/bench/instances/{iid}", headers=auth)
    r = a.getresponse(); r.read()
    assert r.status == 204, r.status
    until(lambda s: iid not in s)
    dereg.append((time.perf_counter() - t0) * 1000)
report("register on A -> listed on B and C", reg)
report("deregister on A -> gone from B and C", dereg)
PY
