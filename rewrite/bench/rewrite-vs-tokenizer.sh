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
# Each run's wall time and CPU time (user + system, from rusage): on a
# busy machine the CPU ratio still holds when the wall ratio does not.
python3 - "$RUNS" "$W/in.html" "$W/tokenize" "$W/trackrelay" <<'PY'
import os, resource, statistics as st, subprocess, sys, time
runs, inp, tok, tr = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
def run(cmd):
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with open(inp, "rb") as f:
        subprocess.run(cmd, stdin=f, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    t1 = time.perf_counter()
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return t1 - t0, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
run([tok])  # warm the page cache
tz, rw = [], []
for _ in range(runs):
    tz.append(run([tok]))
    rw.append(run([tr, "rewrite", "--html", "--clicks", "--opens"]))
mb = os.path.getsize(inp) / 2**20
print(f"input: {mb:.1f} MB of newsletter HTML; load average {os.getloadavg()[0]:.1f}")
for name, v in (("tokenize", tz), ("trackrelay rewrite", rw)):
    w = [x[0] for x in v]; c = [x[1] for x in v]
    print(f"{name:18} wall s: {[round(x, 3) for x in w]} median {st.median(w):.3f} ({mb/st.median(w):.0f} MB/s); CPU s median {st.median(c):.3f}")
wr = [a[0] / b[0] for a, b in zip(tz, rw)]
cr = [a[1] / b[1] for a, b in zip(tz, rw)]
print(f"rewrite/tokenizer ratio, wall: median {st.median(wr):.2f} (min {min(wr):.2f}, max {max(wr):.2f}); CPU: median {st.median(cr):.2f} (min {min(cr):.2f}, max {max(cr):.2f})")
PY
