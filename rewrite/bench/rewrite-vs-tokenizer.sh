#!/usr/bin/env bash
# `trackrelay rewrite --html --clicks --opens` as a whole process against a
# whole process that only runs x/net/html's Tokenizer over the same stdin
# (rewrite/bench/tokenize), over about 32 MB of real email HTML: the HTML
# of ../shared/bench/newsletter.eml, decoded, repeated. Runs A B A B ...
# and prints each one's time and the median ratio of throughputs
# (tokenizer time / rewrite time: 1.0 means as fast as the bare tokenizer).
#
#   rewrite/bench/rewrite-vs-tokenizer.sh [RUNS] [MB]
set -euo pipefail
cd "$(dirname "$0")/../.."
SHARED=${SHARED:-../shared}
RUNS=${1:-7}
MB=${2:-32}
[ -f "$SHARED/bench/newsletter.eml" ] || {
  echo "rewrite bench: $SHARED/bench/newsletter.eml not found" >&2; exit 1; }
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
go build -o "$W/trackrelay" ./cmd/trackrelay
go build -o "$W/tokenize" ./rewrite/bench/tokenize
python3 - "$SHARED/bench/newsletter.eml" "$W/in.html" "$MB" <<'PY'
import email, sys
from email import policy
m = email.message_from_binary_file(open(sys.argv[1], "rb"), policy=policy.default)
html = m.get_body(("html",)).get_content().encode("utf-8")
want = int(sys.argv[3]) << 20
with open(sys.argv[2], "wb") as f:
    f.write(html * (want // len(html) + 1))
PY
# The tokenizer's output is its input: a check that it ran over all of it.
"$W/tokenize" <"$W/in.html" | cmp -s - "$W/in.html" || { echo "rewrite bench: tokenize changed its input" >&2; exit 1; }
t() { # command... -> seconds (output to /dev/null)
  local t0 t1
  t0=$(date +%s.%N)
  "$@" <"$W/in.html" >/dev/null 2>"$W/err" || { cat "$W/err" >&2; exit 1; }
  t1=$(date +%s.%N)
  python3 -c "print($t1-$t0)"
}
t "$W/tokenize" >/dev/null # warm the page cache
declare -a TZ RW
for _ in $(seq "$RUNS"); do
  TZ+=("$(t "$W/tokenize")")
  RW+=("$(t "$W/trackrelay" rewrite --html --clicks --opens)")
done
python3 - "$(stat -c %s "$W/in.html")" "${TZ[*]}" "${RW[*]}" <<'PY'
import sys, statistics as st
n = int(sys.argv[1]); tz = [float(x) for x in sys.argv[2].split()]; rw = [float(x) for x in sys.argv[3].split()]
print(f"input: {n/2**20:.1f} MB of newsletter HTML")
print(f"tokenize         s: {[round(x, 3) for x in tz]} median {st.median(tz):.3f} ({n/2**20/st.median(tz):.0f} MB/s)")
print(f"trackrelay rewrite s: {[round(x, 3) for x in rw]} median {st.median(rw):.3f} ({n/2**20/st.median(rw):.0f} MB/s)")
r = [a / b for a, b in zip(tz, rw)]
print(f"rewrite/tokenizer ratio: median {st.median(r):.2f} (min {min(r):.2f}, max {max(r):.2f})")
PY
