#!/usr/bin/env bash
# Redirector throughput against nginx's bare `return 302`, on loopback:
# builds trackrelay, starts `serve --dev` (the redirector journals every
# hit, in the default process durability, and ships it to the relay's store
# in-process), sends a message through the relay and takes a tracked link
# from the delivered copy, and runs ../shared/bench/redirector-vs-nginx.sh
# (wrk; it installs wrk and nginx).
#
#   redirector/bench/wrk.sh [SECONDS] [CONNECTIONS]
#
# With BREAKDOWN=1 it then measures, each against nginx in its own run:
#   - trackrelay serve again at four times the connections;
#   - trackrelay serve with durability = "disk" (fdatasync before every 302);
#   - ceiling -mode redirector: the real redirector (token, hit, journal,
#     metrics, shipper) whose sink only acknowledges: the relay's ingest is
#     the gap between it and serve (a measurement baseline, not the product);
#   - ceiling -mode journal, process and disk: a bare fasthttp 302 answered
#     after a store.Journal append (no token, no relay);
#   - ceiling -mode bare: a bare fasthttp 302 that writes nothing.
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
vs_nginx "trackrelay serve (durability process), $C connections" "$URL" "$C" "localhost:$HP"
[ "${BREAKDOWN:-}" = 1 ] || exit 0

vs_nginx "trackrelay serve (durability process), $((4 * C)) connections" "$URL" $((4 * C)) "localhost:$HP"
stop "$TR"
printf '\n[redirector]\ndurability = "disk"\n' >>"$W/data/trackrelay.toml"
"$W/trackrelay" serve --dev --data "$W/data" --smtp-addr "127.0.0.1:$SP" --api-addr 127.0.0.1:0 \
  --http-addr "127.0.0.1:$HP" --log-level warn 2>>"$W/serve.log" &
TR=$!
PIDS+=("$TR")
up "http://127.0.0.1:$HP/healthz"
vs_nginx "trackrelay serve (durability disk), $C connections" "$URL" "$C" "localhost:$HP"
stop "$TR"
ceiling() { # title url mode [flags...]
  local title=$1 url=$2 mode=$3; shift 3
  CP=$(port)
  GOGC=400 "$W/ceiling" -mode "$mode" -addr "127.0.0.1:$CP" -data "$W" "$@" 2>"$W/ceiling.log" &
  CE=$!
  PIDS+=("$CE")
  up "http://127.0.0.1:$CP/healthz"
  vs_nginx "$title, $C connections" "${url/PORT/$CP}" "$C" "localhost:$HP"
  stop "$CE"
}
ceiling "ceiling -mode redirector (ack-only sink, process)" "http://127.0.0.1:PORT/${URL#*://*/}" redirector \
  -keys "$W/data/token.keys" -domain "localhost:$HP"
for d in process disk; do
  ceiling "ceiling -mode journal -durability $d" "http://127.0.0.1:PORT/t/products/shoes?color=red" journal -durability "$d"
done
ceiling "ceiling -mode bare" "http://127.0.0.1:PORT/t/products/shoes?color=red" bare
