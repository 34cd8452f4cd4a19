#!/usr/bin/env bash
# Redirector throughput with durable journaling, against nginx's bare
# `return 302`, on loopback: builds trackrelay, starts `serve --dev` (the
# redirector journals every hit with fsync and ships it to the relay's store
# in-process), takes a tracked link from `trackrelay rewrite`, and runs
# ../shared/bench/redirector-vs-nginx.sh (wrk; it installs wrk and nginx).
#
#   redirector/bench/wrk.sh [SECONDS] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/../.."
SHARED=${SHARED:-../shared}
[ -x "$SHARED/bench/redirector-vs-nginx.sh" ] || [ -f "$SHARED/bench/redirector-vs-nginx.sh" ] || {
  echo "redirector bench: $SHARED/bench/redirector-vs-nginx.sh not found" >&2; exit 1; }
W=$(mktemp -d)
go build -o "$W/trackrelay" ./cmd/trackrelay
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
HP=$(port)
"$W/trackrelay" serve --dev --data "$W/data" --smtp-addr 127.0.0.1:0 --api-addr 127.0.0.1:0 \
  --http-addr "127.0.0.1:$HP" --log-level warn 2>"$W/serve.log" &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$W"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$HP/healthz" >/dev/null && break; sleep 0.1; done
URL=$(echo '<a href="https://shop.example.com/products/shoes?color=red">shoes</a>' |
  "$W/trackrelay" rewrite --html --key-file "$W/data/token.keys" --click-domain "localhost:$HP" 2>/dev/null |
  grep -o 'http://localhost:[0-9]*/[^"]*' | head -1)
[ -n "$URL" ] || { echo "redirector bench: no tracked URL from trackrelay rewrite" >&2; exit 1; }
HOST_HEADER="localhost:$HP" bash "$SHARED/bench/redirector-vs-nginx.sh" "${URL/localhost/127.0.0.1}" "${1:-8}" "${2:-64}"
