package smtpd

import (
	"bufio"
	"context"
	"strings"
	"testing"

	"github.com/trackrelay/trackrelay/rewrite"
)

// FuzzInboundEnvelope: the envelope line of an inbound spool file never
// panics the reader, and what it accepts has a time.
func FuzzInboundEnvelope(f *testing.F) {
	f.Add(inboundMagic + `{"from":"","rcpt":["a+b@c.test"],"received":"2026-01-01T00:00:00Z"}` + "\nFrom: x\r\n\r\nhi")
	f.Add(inboundMagic + "{\n")
	f.Add("")
	f.Add(inboundMagic + strings.Repeat("x", 70000))
	f.Fuzz(func(t *testing.T, s string) {
		env, err := readEnvelope(bufio.NewReaderSize(strings.NewReader(s), 4096))
		if err == nil && env.Received.IsZero() {
			t.Fatal("accepted an envelope without a time")
		}
	})
}

// FuzzLinkToken: the scan for tracked links in returned text never
// panics, and finds only tokens that verify (here: those of one copy).
func FuzzLinkToken(f *testing.F) {
	codec, err := rewrite.NewCodec(rewrite.DevKey)
	if err != nil {
		f.Fatal(err)
	}
	tok := codec.Encode(rewrite.Token{Kind: rewrite.KindClick, MessageID: 42, HTTPS: true, Host: "shop.test"})
	f.Add("see https://click.test/" + tok + "/x?y")
	f.Add("http://click.test/")
	f.Add("https://click.test/" + tok)
	f.Add("httphttps://click.test/abc")
	v, _ := NewVERP(VERPConfig{Codec: codec})
	in := &Inbound{cfg: InboundConfig{VERP: v, IsClickDomain: func(_ context.Context, h string) bool { return h == "click.test" }}}
	f.Fuzz(func(t *testing.T, s string) {
		if id, ok := in.linkToken(context.Background(), s); ok && id != 42 {
			t.Fatalf("found copy %d", id)
		}
	})
}
