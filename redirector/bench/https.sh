#!/usr/bin/env bash
# Redirector throughput over HTTPS against nginx answering a bare
# `return 302` over HTTPS, on loopback, with the same certificate (one
# ECDSA P-256 key), the same load generator (wrk, keep-alive connections)
# and TLS session resumption on in both (nginx: a shared session cache and
# tickets; Go: tickets, on by default). nginx keeps a connection for a
# million requests, as the redirector does, so neither pays handshakes the
# other does not; both speak TLS 1.3 with AES-128-GCM (printed before
# the runs).
#
#   redirector/bench/https.sh [SECONDS] [CONNECTIONS]
#
# It builds trackrelay, starts `serve --dev` with redirector.tls_listen and
# the certificate given as redirector.tls_cert; by default ACME stays on
# (TLS_MODE=acme: the handshake goes through certmagic, which serves the
# file's certificate from its cache, as for an operator who brings their
# own), TLS_MODE=files turns ACME off (crypto/tls alone). It sends a message
# through the relay, takes the tracked link from the delivered copy, and
# runs nginx and the redirector in turn, A B A B A B, reporting the median
# ratio. With HTTP_TOO=1 it then runs the same pair over plain HTTP, so the
# two ratios come from one run. It installs wrk and nginx-light when
# missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
D=${1:-8}
C=${2:-64}
TLS_MODE=${TLS_MODE:-acme}
if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq nginx-light wrk >/dev/null
fi
W=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  [ -f "$W/nginx.pid" ] && nginx -s stop -c "$W/nginx.conf" 2>/dev/null
  rm -rf "$W"
}
trap cleanup EXIT
go build -o "$W/trackrelay" ./cmd/trackrelay
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
up() { for _ in $(seq 100); do curl -sk -o /dev/null "$1" && return; sleep 0.1; done; echo "https bench: $1 did not come up" >&2; exit 1; }

# One certificate for both servers.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
  -keyout "$W/key.pem" -out "$W/cert.pem" 2>/dev/null

HP=$(port); TP=$(port); SP=$(port); NP=$(port); NHP=$(port)
# A first start writes the dev config; the redirector's TLS goes after it.
"$W/trackrelay" serve --dev --data "$W/data" --smtp-addr "127.0.0.1:$SP" --api-addr 127.0.0.1:0 \
  --http-addr "127.0.0.1:$HP" --log-level warn 2>"$W/serve0.log" &
PIDS+=($!)
up "http://127.0.0.1:$HP/healthz"
kill "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null || true; PIDS=()
DIRECTORY='directory = "off"'
# With ACME on, certmagic serves the file's certificate from its cache and
# never asks this (unreachable) directory: localhost is covered.
[ "$TLS_MODE" = acme ] && DIRECTORY='directory = "https://127.0.0.1:1/directory"'
cat >>"$W/data/trackrelay.toml" <<CONF

[redirector]
tls_listen    = "127.0.0.1:$TP"
tls_cert      = "$W/cert.pem"
tls_key       = "$W/key.pem"
click_domains = ["localhost"]

[acme]
$DIRECTORY
CONF
"$W/trackrelay" serve --dev --data "$W/data" --smtp-addr "127.0.0.1:$SP" --api-addr 127.0.0.1:0 \
  --http-addr "127.0.0.1:$HP" --log-level warn 2>"$W/serve.log" &
PIDS+=($!)
up "http://127.0.0.1:$HP/healthz"
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
LINK=$(cat "$W/data/outbox/"*.eml 2>/dev/null | grep -o "http://localhost:$HP/[^\"]*" | head -1)
[ -n "$LINK" ] || { echo "https bench: no tracked link in the delivered message" >&2; exit 1; }
PATHQ=/${LINK#*://*/}
URL="https://localhost:$TP$PATHQ"

cat >"$W/nginx.conf" <<CONF
worker_processes 2;
pid $W/nginx.pid;
error_log $W/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  ssl_session_cache shared:SSL:10m;
  ssl_session_tickets on;
  # TLS 1.3 with AES-128-GCM first, what Go's server picks on this CPU.
  ssl_protocols TLSv1.2 TLSv1.3;
  ssl_prefer_server_ciphers on;
  ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256;
  server {
    listen 127.0.0.1:$NHP;
    location / { return 302 https://shop.example.com\$request_uri; }
  }
  server {
    listen 127.0.0.1:$NP ssl;
    ssl_certificate $W/cert.pem;
    ssl_certificate_key $W/key.pem;
    location / { return 302 https://shop.example.com\$request_uri; }
  }
}
CONF
nginx -c "$W/nginx.conf"
sleep 0.5
NURL="https://localhost:$NP$PATHQ"

for u in "$URL" "$NURL"; do
  out=$(curl -sv --cacert "$W/cert.pem" --resolve "localhost:$TP:127.0.0.1" --resolve "localhost:$NP:127.0.0.1" \
    -o /dev/null -w '%{http_code}' "$u" 2>"$W/curl.err") || true
  [ "$out" = 302 ] || { echo "https bench: $u answered $out, not 302" >&2; cat "$W/curl.err" >&2; exit 1; }
  echo "$u: 302, $(grep -o 'SSL connection using [^ ]* / [^ ]*' "$W/curl.err" | head -1 | sed 's/SSL connection using //')"
done

# Session resumption, as a returning client would: a second connection
# with the first one's session (a TLS 1.3 ticket) must be "Reused".
resumed() {
  local req='GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n'
  printf "$req" | openssl s_client -connect "127.0.0.1:$1" -servername localhost -sess_out "$W/sess" -ign_eof >/dev/null 2>&1
  if printf "$req" | openssl s_client -connect "127.0.0.1:$1" -servername localhost -sess_in "$W/sess" -ign_eof 2>/dev/null | grep -q '^Reused'; then
    echo "session resumption on :$1: yes"
  else
    echo "session resumption on :$1: NO" >&2; exit 1
  fi
}
resumed "$TP"
resumed "$NP"

# wrk resolves localhost itself; make sure it reaches 127.0.0.1.
getent ahostsv4 localhost >/dev/null || { echo "https bench: localhost does not resolve to IPv4" >&2; exit 1; }
run() { # url -> "req/s p99ms"
  wrk -t2 -c"$C" -d"${D}s" --latency "$1" 2>/dev/null | awk '
    /Requests\/sec/ {r=$2}
    / 99%/ {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; p=v}
    END {printf "%.0f %.2f\n", r, p}'
}
echo "== HTTPS, $C connections, ${D}s runs, TLS_MODE=$TLS_MODE"
declare -a NR TR NPS TPS
for i in 1 2 3; do
  read -r a b < <(run "$NURL"); NR+=("$a"); NPS+=("$b")
  read -r a b < <(run "$URL"); TR+=("$a"); TPS+=("$b")
done
python3 - "${NR[*]}" "${TR[*]}" "${NPS[*]}" "${TPS[*]}" <<'PY'
import sys, statistics as st
nr, tr, np_, tp = ([float(x) for x in a.split()] for a in sys.argv[1:])
print(f"nginx return 302 (https)  req/s: {nr} median {st.median(nr):.0f}, p99 ms median {st.median(np_):.2f}")
print(f"trackrelay (https)        req/s: {tr} median {st.median(tr):.0f}, p99 ms median {st.median(tp):.2f}")
print(f"redirector/nginx ratio over HTTPS: {st.median([b/a for a, b in zip(nr, tr)]):.2f}")
PY
[ "${HTTP_TOO:-}" = 1 ] || exit 0
# The same pair over plain HTTP in the same run, to see what TLS costs each.
echo "== HTTP, $C connections, ${D}s runs"
declare -a HNR HTR HNP HTP
for i in 1 2 3; do
  read -r a b < <(run "http://127.0.0.1:$NHP$PATHQ"); HNR+=("$a"); HNP+=("$b")
  read -r a b < <(run "http://localhost:$HP$PATHQ"); HTR+=("$a"); HTP+=("$b")
done
python3 - "${HNR[*]}" "${HTR[*]}" "${HNP[*]}" "${HTP[*]}" <<'PY'
import sys, statistics as st
nr, tr, np_, tp = ([float(x) for x in a.split()] for a in sys.argv[1:])
print(f"nginx return 302 (http)   req/s: {nr} median {st.median(nr):.0f}, p99 ms median {st.median(np_):.2f}")
print(f"trackrelay (http)         req/s: {tr} median {st.median(tr):.0f}, p99 ms median {st.median(tp):.2f}")
print(f"redirector/nginx ratio over HTTP: {st.median([b/a for a, b in zip(nr, tr)]):.2f}")
PY
