package smtpd

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message/textproto"

	"github.com/trackrelay/trackrelay/store"
)

var addedField = regexp.MustCompile(`^(Date: [A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d \+0000|Message-ID: <[0-9a-f]{16}\.[0-9a-f]{12}@[^<>@\s]+>)\r?\n`)

// unspoolCheck checks that spooled is orig as the spool writes it: a
// Received field first, orig byte for byte after it, except for a Date
// and a Message-ID field at the end of orig's header where orig has none.
// It returns spooled.
func unspoolCheck(t testing.TB, spooled, orig []byte) []byte {
	t.Helper()
	if !bytes.HasPrefix(spooled, []byte("Received: from ")) {
		t.Fatalf("spooled message does not start with a Received field: %.80q", spooled)
	}
	// The field ends with its date, in UTC.
	i := bytes.Index(spooled, []byte(" +0000\n"))
	if j := bytes.Index(spooled, []byte(" +0000\r\n")); j >= 0 && (i < 0 || j < i) {
		i = j + 1
	}
	if i < 0 {
		t.Fatalf("no end to the Received field: %.300q", spooled)
	}
	i += len(" +0000\n")
	if !strings.Contains(string(spooled[:i]), "(trackrelay)") {
		t.Fatalf("first field is not the relay's Received: %q", spooled[:i])
	}
	rest := spooled[i:]
	if bytes.Equal(rest, orig) {
		return spooled
	}
	// The header ends at its first empty line.
	k := -1
	switch {
	case bytes.HasPrefix(orig, []byte("\r\n")), bytes.HasPrefix(orig, []byte("\n")):
		k = 0
	default:
		if j := bytes.Index(orig, []byte("\n\r\n")); j >= 0 {
			k = j + 1
		}
		if j := bytes.Index(orig, []byte("\n\n")); j >= 0 && (k < 0 || j+1 < k) {
			k = j + 1
		}
		if k < 0 && bytes.HasSuffix(orig, []byte("\n")) {
			k = len(orig) // all header, no empty line: added at the end
		}
	}
	if k < 0 || len(rest) < len(orig) || !bytes.Equal(rest[:k], orig[:k]) || !bytes.Equal(rest[len(rest)-(len(orig)-k):], orig[k:]) {
		t.Fatalf("spooled message is not the submitted one with fields added:\nspooled %.300q\nsent    %.300q", rest, orig)
	}
	mid := rest[k : len(rest)-(len(orig)-k)]
	for len(mid) > 0 {
		m := addedField.Find(mid)
		if m == nil {
			t.Fatalf("spool added %q", mid)
		}
		name, _, _ := strings.Cut(string(m), ":")
		h, _ := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(orig)))
		if h.Has(name) {
			t.Fatalf("spool added %s although the message has one", name)
		}
		mid = mid[len(m):]
	}
	return spooled
}

func newSpoolRig(t *testing.T, mutate func(*SpoolConfig)) (*Spool, *store.Relay) {
	t.Helper()
	dir := t.TempDir()
	st, err := store.OpenRelay(filepath.Join(dir, "relay.db"), store.RelayOptions{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg := SpoolConfig{Dir: filepath.Join(dir, "spool"), Store: st, MaxMessageBytes: 1 << 20, NoSync: true,
		Hostname: "relay.example.net", Now: func() time.Time { return time.Date(2026, 11, 5, 8, 42, 1, 0, time.UTC) }}
	if mutate != nil {
		mutate(&cfg)
	}
	sp, err := NewSpool(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return sp, st
}

func spooledBytes(t *testing.T, sp *Spool, st *store.Relay, rc *Receipt) []byte {
	t.Helper()
	m, err := st.Message(context.Background(), rc.MessageID)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(sp.cfg.Dir, m.SpoolPath))
	if err != nil {
		t.Fatal(err)
	}
	if m.Size != int64(len(b)) {
		t.Errorf("recorded size %d, file %d", m.Size, len(b))
	}
	return b
}

// The spool writes a Received field (RFC 5321 §4.4) before every message
// and a Date and Message-ID (RFC 6409 §8) where they are missing, leaving
// every other byte as it came.
func TestSpoolAddsTraceDateMessageID(t *testing.T) {
	sp, st := newSpoolRig(t, nil)
	for _, tc := range []struct {
		name, msg  string
		tr         *Trace
		rcpts      []string
		smtputf8   bool
		received   string // the whole Received field, CRLF folded
		date, msid bool   // added
	}{
		{"authenticated TLS, one recipient", "From: a@x.test\r\nSubject: hi\r\n\r\nbody\r\n",
			&Trace{Via: "SMTP", Helo: "client.example", RemoteIP: netip.MustParseAddr("192.0.2.7"), TLSVersion: tls.VersionTLS13, TLSCipher: tls.TLS_AES_128_GCM_SHA256, AuthUser: "shop"},
			[]string{"r@y.test"}, false,
			"Received: from client.example ([192.0.2.7])\r\n\t(using TLS 1.3 with cipher TLS_AES_128_GCM_SHA256)\r\n\t(Authenticated sender: shop)\r\n\tby relay.example.net (trackrelay) with ESMTPSA id %s\r\n\tfor <r@y.test>; Thu, 05 Nov 2026 08:42:01 +0000\r\n",
			true, true},
		{"trusted, no AUTH, two recipients, has Date and Message-ID", "Date: Mon, 2 Nov 2026 10:00:00 +0100\r\nMessage-Id: <x@y>\r\nSubject: hi\r\n\r\nbody",
			&Trace{Via: "SMTP", Helo: "ev(il)\\ helo", RemoteIP: netip.MustParseAddr("::1"), Trusted: "::1/128"},
			[]string{"a@y.test", "b@y.test"}, false,
			"Received: from ev?il???helo ([IPv6:::1])\r\n\t(trusted network ::1/128)\r\n\tby relay.example.net (trackrelay) with ESMTP id %s; Thu, 05 Nov 2026 08:42:01 +0000\r\n",
			false, false},
		{"REST API, LF line endings", "Subject: hi\nFrom: a@x.test\n\n<p>x</p>\n",
			&Trace{Via: "HTTP", RemoteIP: netip.MustParseAddr("127.0.0.1"), AuthUser: "api:shop"},
			[]string{"r@y.test"}, false,
			"Received: from [127.0.0.1] ([127.0.0.1])\n\t(Authenticated sender: api:shop)\n\tby relay.example.net (trackrelay) with HTTP id %s\n\tfor <r@y.test>; Thu, 05 Nov 2026 08:42:01 +0000\n",
			true, true},
		{"SMTPUTF8 with TLS, header unreadable", "no header at all",
			&Trace{Via: "SMTP", Helo: "h", RemoteIP: netip.MustParseAddr("192.0.2.8"), TLSVersion: tls.VersionTLS12, TLSCipher: tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, AuthUser: "u"},
			[]string{"r@y.test"}, true,
			"Received: from h ([192.0.2.8])\r\n\t(using TLS 1.2 with cipher TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)\r\n\t(Authenticated sender: u)\r\n\tby relay.example.net (trackrelay) with UTF8SMTPSA id %s\r\n\tfor <r@y.test>; Thu, 05 Nov 2026 08:42:01 +0000\r\n",
			false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc, err := sp.Submit(context.Background(), &Submission{Cred: dlCred, From: "a@x.test", Recipients: tc.rcpts, SMTPUTF8: tc.smtputf8, Trace: tc.tr}, strings.NewReader(tc.msg))
			if err != nil {
				t.Fatal(err)
			}
			got := spooledBytes(t, sp, st, rc)
			unspoolCheck(t, got, []byte(tc.msg))
			want := strings.ReplaceAll(tc.received, "%s", store.FormatID(rc.MessageID))
			if !strings.HasPrefix(string(got), want) {
				t.Errorf("Received field:\n got %q\nwant %q", got[:min(len(got), len(want)+40)], want)
			}
			if d := strings.Contains(string(got), "\nDate: Thu, 05 Nov 2026 08:42:01 +0000"); d != tc.date {
				t.Errorf("Date added: %v, want %v", d, tc.date)
			}
			msid := "\nMessage-ID: <" + store.FormatID(rc.MessageID) + "."
			if m := strings.Contains(string(got), msid); m != tc.msid {
				t.Errorf("Message-ID added: %v, want %v", m, tc.msid)
			}
			if tc.msid && !strings.Contains(string(got), "@relay.example.net>") {
				t.Errorf("Message-ID not on the relay's host name: %q", got)
			}
		})
	}
}

// Below the free-space reserve the spool refuses mail, at MAIL (through
// CheckSpace) and at submission, and writes nothing.
func TestSpoolFreeSpaceReserve(t *testing.T) {
	free, err := freeBytes(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// A reserve larger than the disk's real free space: the real statfs
	// says there is too little.
	sp, _ := newSpoolRig(t, func(c *SpoolConfig) { c.MinFreeBytes = free + 1<<40 })
	if err := sp.CheckSpace(0); err != ErrInsufficientStorage {
		t.Fatalf("CheckSpace = %v, want ErrInsufficientStorage", err)
	}
	_, err = sp.Submit(context.Background(), &Submission{Cred: dlCred, From: "a@x.test", Recipients: []string{"b@x.test"}}, strings.NewReader("Subject: x\r\n\r\nx"))
	if err != ErrInsufficientStorage {
		t.Fatalf("Submit = %v, want ErrInsufficientStorage", err)
	}
	if ents, _ := os.ReadDir(sp.cfg.Dir); len(ents) != 0 {
		t.Errorf("a refused message left %d files", len(ents))
	}
	if se := replyError(discardLogger(), "data", err, 0).Error(); !strings.Contains(se, "452") {
		t.Errorf("reply %q, want 452", se)
	}
	// A reserve the disk has room for, and a declared size that would take
	// the free space below it.
	sp2, _ := newSpoolRig(t, func(c *SpoolConfig) { c.MinFreeBytes = 1 << 20 })
	if err := sp2.CheckSpace(1000); err != nil {
		t.Fatalf("CheckSpace with room: %v", err)
	}
	if err := sp2.CheckSpace(free); err != ErrInsufficientStorage {
		t.Fatalf("CheckSpace(free) = %v", err)
	}
}

// A credential's TrackSigned reaches the copy and the walk: a DKIM-signed
// message is tracked only when it is set.
func TestTrackSignedCredential(t *testing.T) {
	const signed = "DKIM-Signature: v=1; a=rsa-sha256; d=shop.test; s=s1; h=from:subject; bh=x; b=y\r\n" +
		"From: a@shop.test\r\nSubject: hi\r\nContent-Type: text/html\r\n\r\n<a href=\"https://shop.test/p\">p</a>\r\n"
	for _, on := range []bool{false, true} {
		out := t.TempDir()
		r := newDLRig(t, "", map[string]Upstream{"up": &FolderUpstream{Dir: out, NoSync: true}}, nil)
		r.run()
		cred := *dlCred
		cred.TrackSigned = on
		rc, err := r.spool.Submit(context.Background(), &Submission{Cred: &cred, From: "a@shop.test", Recipients: []string{"r@x.test"}}, strings.NewReader(signed))
		if err != nil {
			t.Fatal(err)
		}
		if c := r.copyState(rc.CopyIDs[0]); c.TrackSigned != on {
			t.Fatalf("copy TrackSigned = %v, want %v", c.TrackSigned, on)
		}
		var got []byte
		dlWait(t, "delivered", func() bool {
			got, err = os.ReadFile(filepath.Join(out, store.FormatID(rc.CopyIDs[0])+".eml"))
			return err == nil
		})
		if tracked := strings.Contains(string(got), "https://click.test/"); tracked != on {
			t.Errorf("track_signed %v: tracked %v:\n%s", on, tracked, got)
		}
	}
}
