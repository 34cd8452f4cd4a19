"""Verify DKIM signatures with dkimpy, the independent verifier of the
mime/dkim tests, fetching keys over real DNS from the test's server.

Usage: verify.py PORT. Reads requests from stdin, each a line
"LENGTH NSIG" followed by LENGTH bytes of message, and answers each with
one JSON line: {"results": [{"ok": bool, "reason": str}, ...]}, one
result per signature, the topmost first (dkimpy's idx)."""

import json
import logging
import sys

import dkim
import dns.resolver

resolver = dns.resolver.Resolver(configure=False)
resolver.nameservers = ["127.0.0.1"]
resolver.port = int(sys.argv[1])


def dnsfunc(name, timeout=5):
    """Like dkimpy's own get_txt_dnspython, against the test server."""
    if isinstance(name, bytes):
        name = name.decode()
    try:
        a = resolver.resolve(name, "TXT", raise_on_no_answer=False, lifetime=timeout)
    except dns.resolver.NXDOMAIN:
        return None
    for r in a.response.answer:
        if r.rdtype == dns.rdatatype.TXT:
            return b"".join(list(r.items)[0].strings)
    return None


class Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def main():
    inp, out = sys.stdin.buffer, sys.stdout
    while True:
        line = inp.readline()
        if not line:
            return
        length, nsig = (int(x) for x in line.split())
        msg = inp.read(length)
        results = []
        for idx in range(nsig):
            log = logging.getLogger("dkimpy")
            log.setLevel(logging.DEBUG)
            log.propagate = False
            h = Collect()
            log.handlers = [h]
            try:
                d = dkim.DKIM(msg, logger=log)
                ok = bool(d.verify(idx=idx, dnsfunc=dnsfunc))
                reason = "" if ok else "; ".join(l for l in h.lines if not l.startswith("sig:"))[-300:]
            except Exception as e:  # dkimpy raises for malformed input
                ok, reason = False, "%s: %s" % (type(e).__name__, e)
            results.append({"ok": ok, "reason": reason})
        out.write(json.dumps({"results": results}) + "\n")
        out.flush()


main()
