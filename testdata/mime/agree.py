#!/usr/bin/env python3
"""Independent-parser check for trackrelay's MIME walker (package mime).

Usage: agree.py MANIFEST.json DATA

The manifest lists message pairs written by mime's TestPythonAgreement:
{"name", "in", "out", "leaves": [{"path", "mode", "edits": [{"off", "old",
"new"}]}], "requoted": [paths], "keep_controls": bool}, where "in" and "out"
are [offset, length] of the input and output message in DATA. For each pair,
Python's email package parses input and output, and they must agree:
the same tree (content types, multipart or not, filenames, defects), the
same preambles and epilogues, the same headers (except the removed
x-smtpeter-* headers and the Content-Transfer-Encoding of re-encoded leaves),
the same decoded bytes for every leaf the walker did not track (so the same
attachments by hash and the same text), and for tracked leaves, the
decoded output with the reported edits undone equal to the decoded input.

Prints one line per failing pair and exits 1 if any failed; prints a summary.
"""

import binascii
import email
import hashlib
import json
import re
import sys
from email.policy import Compat32


class Unfolding(Compat32):
    """compat32 (fast, raw header values kept) with RFC 5322 §2.2.3
    unfolding when a value is read, so a folded boundary parameter means
    what it says; compat32 alone keeps the line break inside it."""

    def header_fetch_parse(self, name, value):
        return super().header_fetch_parse(name, re.sub(r"\r?\n(?=[ \t])", "", value))


POLICY = Unfolding()


def walk(msg, path, out):
    """Depth-first entities with IMAP-like paths, as the walker numbers them.
    An encapsulated message/rfc822 gets "<path>.m" (never tracked)."""
    out.append((path, msg))
    if msg.is_multipart():
        payload = msg.get_payload()
        if msg.get_content_maintype() == "message":
            for sub in payload:
                walk(sub, path + ".m", out)
        else:
            for i, sub in enumerate(payload, 1):
                walk(sub, str(i) if path == "" else path + "." + str(i), out)


def decoded(part):
    if part.is_multipart():
        return None
    try:
        b = part.get_payload(decode=True)
    except Exception as e:  # noqa: BLE001 - report, do not crash
        return ("error", type(e).__name__)
    return b


def shape(path, part):
    return (
        path,
        part.get_content_type(),
        part.is_multipart(),
        part.get_filename(),
        sorted(type(d).__name__ for d in part.defects),
        part.preamble if part.is_multipart() else None,
        part.epilogue if part.is_multipart() else None,
    )


def headers(part, top, requoted, keep_controls):
    hs = []
    for k, v in part._headers:  # raw (name, value) pairs in order
        lk = k.lower()
        if top and not keep_controls and lk.startswith("x-smtpeter-"):
            continue
        if requoted and lk == "content-transfer-encoding":
            continue
        hs.append((k, v.replace("\r\n", "\n")))
    return hs


def undo(out, edits):
    b = bytearray()
    pos = 0
    for e in edits:
        off = e["off"]
        new = e["new"].encode("utf-8")
        if off < pos or out[off:off + len(new)] != new:
            raise ValueError("edit at %d does not match the output" % off)
        b += out[pos:off]
        b += e["old"].encode("utf-8")
        pos = off + len(new)
    b += out[pos:]
    return bytes(b)


# Python's strict codecs for labels that mail (and x/text, following
# WHATWG) reads as their supersets.
SUPERSETS = {"gb2312": "gbk", "euc-cn": "gbk", "ks_c_5601-1987": "cp949", "euc-kr": "cp949"}


def charset_of(part):
    cs = (part.get_content_charset() or "us-ascii").lower()
    return SUPERSETS.get(cs, cs)


def qp_decoded(part):
    """Decode quoted-printable as RFC 2045 §6.7 rule 3 says, deleting the
    trailing white space of each encoded line; Python's binascii decoder
    keeps it."""
    # The raw payload: message_from_bytes keeps 8-bit bytes as surrogates.
    try:
        raw = part._payload.encode("ascii", "surrogateescape")
    except UnicodeEncodeError:
        raw = part._payload.encode("utf-8", "surrogateescape")
    lines = raw.splitlines(keepends=True)
    raw = b"".join(l.rstrip(b"\r\n").rstrip(b" \t") + l[len(l.rstrip(b"\r\n")):] for l in lines)
    return binascii.a2b_qp(raw)


def check(pair, data):
    (ia, na), (ib, nb) = pair["in"], pair["out"]
    a = email.message_from_bytes(data[ia:ia + na], policy=POLICY)
    b = email.message_from_bytes(data[ib:ib + nb], policy=POLICY)
    ea, eb = [], []
    walk(a, "", ea)
    walk(b, "", eb)
    sa = [shape(p, m) for p, m in ea]
    sb = [shape(p, m) for p, m in eb]
    if sa != sb:
        for x, y in zip(sa, sb):
            if x != y:
                return "tree differs: %r vs %r" % (x, y)
        return "tree differs in size: %d vs %d" % (len(sa), len(sb))
    if (a.get_unixfrom() or "") != (b.get_unixfrom() or ""):
        return "unixfrom differs"
    leaves = {l["path"]: l for l in pair["leaves"] or []}
    requoted = set(pair["requoted"] or [])
    tracked = 0
    for (path, pa), (_, pb) in zip(ea, eb):
        ha = headers(pa, path == "", path in requoted, pair["keep_controls"])
        hb = headers(pb, False, path in requoted, True)
        if ha != hb:
            return "%s: headers differ: %r vs %r" % (path or "top", ha, hb)
        if path == "" and not pair["keep_controls"]:
            if any(k.lower().startswith("x-smtpeter-") for k, _ in pb._headers):
                return "control header left in output"
        da, db = decoded(pa), decoded(pb)
        if path not in leaves:
            if da != db:
                return "%s: untracked leaf decodes differently" % (path or "top")
            continue
        tracked += 1
        if isinstance(da, tuple) or isinstance(db, tuple):
            return "%s: tracked leaf does not decode: %r %r" % (path, da, db)
        leaf = leaves[path]
        if (pa.get("Content-Transfer-Encoding") or "").strip().lower() == "quoted-printable":
            da = qp_decoded(pa)
        if (pb.get("Content-Transfer-Encoding") or "").strip().lower() == "quoted-printable":
            db = qp_decoded(pb)
        if leaf["mode"] == "utf8":
            cs = charset_of(pa)
            try:
                da = da.decode(cs).encode("utf-8")
                db = db.decode(cs).encode("utf-8")
            except (LookupError, UnicodeError) as e:
                return "%s: python cannot convert %s: %s" % (path, cs, e)
        try:
            back = undo(db, leaf["edits"])
        except ValueError as e:
            return "%s: %s" % (path, e)
        if back != da:
            return "%s: tracked leaf differs beyond the edits" % path
    if tracked != len(leaves):
        return "python found %d of %d tracked leaves" % (tracked, len(leaves))
    # Attachments by hash, explicitly.
    ha = [hashlib.sha256(d).hexdigest() for p, m in ea if m.get_filename() and isinstance(d := decoded(m), bytes)]
    hb = [hashlib.sha256(d).hexdigest() for p, m in eb if m.get_filename() and isinstance(d := decoded(m), bytes)]
    if ha != hb:
        return "attachments differ"
    return None


def main():
    with open(sys.argv[1]) as f:
        pairs = json.load(f)
    with open(sys.argv[2], "rb") as f:
        data = f.read()
    failed = 0
    leaves = 0
    for pair in pairs:
        try:
            err = check(pair, data)
        except Exception as e:  # noqa: BLE001 - a crash is a failure too
            err = "python raised %s: %s" % (type(e).__name__, e)
        if err:
            failed += 1
            print("FAIL %s: %s" % (pair["name"], err))
        leaves += len(pair["leaves"] or [])
    print("checked %d pairs, %d tracked leaves, %d failed" % (len(pairs), leaves, failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
