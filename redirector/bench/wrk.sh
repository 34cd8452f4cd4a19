#!/usr/bin/env bash
# Redirector throughput with durable journaling, against nginx's bare
# `return 302`, on loopback: builds trackrelay, starts `serve --dev` (the
# redirector journals every hit with fsync and ships it to the relay's store
# in-process), sends a message through the relay and takes a tracked link
# from the delivered copy, and runs ../shared/bench/redirector-vs-nginx.sh
# (wrk; it installs wrk and nginx).
#
#   redirector/bench/wrk.sh [SECONDS] [CONNECTIONS]
#
# With BREAKDOWN=1 it then measures, each against nginx in its own run:
#   - ceiling -mode journal: a bare fasthttp 302 answered after a durable
#     store.Journal append (no token, no relay): the most a redirector that
#     keeps the journal's guarantee answers on this machine;
#   - ceiling -mode bare: a bare fasthttp 302 that writes nothing;
#   - trackrelay again at four times the connections, where the fsync's
#     latency no longer bounds a closed-loop load.
set -euo pipefail
cd "$(dirname "$0")/../.."
SHARED=${SHARED:-../shared}
D=${1:-8}
C=${2:-64}
[ -f "$SHARED/bench/redirector-vs-nginx.sh" ] || {
  echo "redirector bench: $SHARED/bench/redirector-vs-nginx.sh not found" >&2; exit 1; }
W=$(mktemp -d)
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$W"' EXIT
go build -o "$W/trackrelay" ./cmd/trackrelay
go build -o "$W/ceiling" ./redirector/bench/ceiling
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
up() { for _ in $(seq 100); do curl -s -o /dev/null "$1" && return; sleep 0.1; done; echo "redirector bench: $1 did not come up" >&2; exit 1; }
stop() { kill "$1"; wait "$1" 2>/dev/null || true; }
vs_nginx() { # title url [connections] [host header]
  echo "== $1"
  HOST_HEADER="${4:-}" bash "$SHARED/bench/redirector-vs-nginx.sh" "$2" "$D" "${3:-$C}"
}

HP=$(port)
SP=$(port)
"$W/trackrelay" serve --dev --data "$W/data" --smtp-addr "127.0.0.1:$SP" --api-addr 127.0.0.1:0 \
  --http-addr "127.0.0.1:$HP" --log-level warn 2>"$W/serve.log" &
TR=$!
PIDS+=("$TR")
up "http://127.0.0.1:$HP/healthz"
# A real message through the relay, so that every hit joins a real copy
# (recipient, account, events and counts), as clicks in production do.
python3 - "$SP" <<'PY'
import smtplib, sys
from email.message import EmailMessage
m = EmailMessage()
m["From"], m["To"], m["Subject"] = "shop@example.com", "anna@example.org", "bench"
m.set_content("shoes")
m.add_alternative('<html><body><a href="https://shop.example.com/products/shoes?color=red">shoes</a></body></html>', subtype="html", cte="7bit")
with smtplib.SMTP("127.0.0.1", int(sys.argv[1])) as s:
    s.login("dev", "dev")
    s.send_message(m)
PY
for _ in $(seq 100); do ls "$W/data/outbox/"*.eml >/dev/null 2>&1 && break; sleep 0.1; done
URL=$(cat "$W/data/outbox/"*.eml 2>/dev/null | grep -o "http://localhost:$HP/[^\"]*" | head -1)
[ -n "$URL" ] || { echo "redirector bench: no tracked link in the delivered message" >&2; exit 1; }
URL=${URL/localhost/127.0.0.1}
vs_nginx "trackrelay serve, $C connections" "$URL" "$C" "localhost:$HP"
[ "${BREAKDOWN:-}" = 1 ] || exit 0

vs_nginx "trackrelay serve, $((4 * C)) connections" "$URL" $((4 * C)) "localhost:$HP"
stop "$TR"
for mode in journal bare; do
  CP=$(port)
  GOGC=400 "$W/ceiling" -mode "$mode" -addr "127.0.0.1:$CP" -data "$W" 2>"$W/ceiling.log" &
  CE=$!
  PIDS+=("$CE")
  up "http://127.0.0.1:$CP/"
  vs_nginx "ceiling -mode $mode, $C connections" "http://127.0.0.1:$CP/t/products/shoes?color=red"
  stop "$CE"
done
