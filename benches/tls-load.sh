#!/usr/bin/env bash
# TLS termination on loopback, gatehouse against nginx in one run, both proxying plaintext to
# the same nginx origin (a fixed 64-byte body):
#   *-keepalive   wrk keeps its connections: requests/s over established TLS (HTTP/1.1)
#   *-handshake   wrk sends `Connection: close`: every request is a new TCP connection and a
#                 full TLS handshake (wrk does not resume sessions), so requests/s is
#                 handshakes/s
# Both terminate with the same RSA-2048 certificate (the server's private-key operation is
# the handshake's main cost, as at a real edge), TLS 1.2/1.3 with each side's defaults (wrk's
# OpenSSL negotiates TLS 1.3 with X25519), ALPN http/1.1. Each proxy is pinned to CPU 1 with
# one worker; wrk and the origin share CPU 0. Rounds with steal are left out and each
# contestant is compared with nginx's figure of the same kind in its round (load-lib.sh).
#
# Usage: benches/tls-load.sh [duration per round=3s] [connections=50] [rounds=5]
#        BIN=binary skips the build.
# Needs: apt-get install -y nginx wrk openssl; builds gatehouse in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-3s}
CONNS=${2:-50}
ROUNDS=${3:-5}
for tool in wrk nginx openssl; do
  command -v "$tool" >/dev/null || { echo "needs: apt-get install -y nginx wrk openssl" >&2; exit 1; }
done
if [ -z "${BIN:-}" ]; then
  cargo build --release -p gatehouse --quiet
  BIN=${CARGO_TARGET_DIR:-target}/release/gatehouse
fi
WORK=$(mktemp -d)
source benches/load-lib.sh
trap 'set +e; kill $(jobs -p) 2>/dev/null; nginx_stop origin; nginx_stop proxy; rm -rf "$WORK"' EXIT
ORIGIN=127.0.0.1:18081; GATEHOUSE=127.0.0.1:18443; NGINX=127.0.0.1:18444; ADMIN=127.0.0.1:18901
BODY=$(printf 'x%.0s' $(seq 1 64))

openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=localhost \
  -addext 'subjectAltName=DNS:localhost,IP:127.0.0.1' \
  -keyout "$WORK/server.key" -out "$WORK/server.pem" 2>/dev/null

nginx_conf origin 01 "server { listen $ORIGIN; location / { return 200 '$BODY'; } }"
nginx_conf proxy 10 "upstream origin { server $ORIGIN; keepalive 64; }
  server {
    listen $NGINX ssl;
    ssl_certificate $WORK/server.pem;
    ssl_certificate_key $WORK/server.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection \"\"; }
  }"
{ gatehouse_base "$GATEHOUSE" "$ADMIN"; cat <<CONF; } > "$WORK/gatehouse.toml"
[listen.tls]
certificates = [{ cert = "$WORK/server.pem", key = "$WORK/server.key" }]
[[services]]
name = "origin"
endpoints = ["$ORIGIN"]
[[routes]]
name = "all"
service = "origin"
CONF

nginx -c "$WORK/origin.conf" -p "$WORK"
nginx -c "$WORK/proxy.conf" -p "$WORK"
taskset -c 1 "$BIN" run --config "$WORK/gatehouse.toml" &
wait_ready "$ADMIN"

for round in $(seq "$ROUNDS"); do
  { measure gatehouse-keepalive "https://$GATEHOUSE/"
    measure nginx-keepalive "https://$NGINX/"
    measure gatehouse-handshake "https://$GATEHOUSE/" -H 'Connection: close'
    measure nginx-handshake "https://$NGINX/" -H 'Connection: close'; } |
    sed "s/^/$round /"
done > "$WORK/rounds"
echo "req/s (steal %) per round:"
for who in gatehouse-keepalive nginx-keepalive gatehouse-handshake nginx-handshake; do
  printf '  %-20s' "$who"
  awk -v w="$who" '$2 == w { printf " %6d (%3.1f)", $3, $6 } END { print "" }' "$WORK/rounds"
done
for kind in keepalive handshake; do
  echo
  grep -E " (gatehouse|nginx)-$kind " "$WORK/rounds" > "$WORK/$kind.rounds"
  summarize_rounds "nginx-$kind" "$WORK/$kind.rounds"
done
