package main

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/mime/dkim/dkimtest"
)

// The bounce domain check against a real DNS server: an MX (or a CNAME)
// leading to the MX host passes; everything else fails with words that
// say what to create.
func TestCheckBounceDomain(t *testing.T) {
	d := dkimtest.StartDNS(t)
	rc := &relayChecker{mxHost: "mx.relay.test", resolver: d.Addr}
	d.SetZoneLine(t, "good.shop.test. 300 IN MX 10 MX.Relay.Test.")
	d.SetZoneLine(t, "alias.shop.test. 300 IN CNAME good.shop.test.")
	d.SetZoneLine(t, "direct.shop.test. 300 IN CNAME mx.relay.test.")
	d.SetZoneLine(t, "mx.relay.test. 300 IN A 192.0.2.25")
	d.SetZoneLine(t, "wrong.shop.test. 300 IN MX 10 mail.google.test.")
	d.SetZoneLine(t, "null.shop.test. 300 IN MX 0 .")
	d.SetZoneLine(t, "bare.shop.test. 300 IN A 192.0.2.99")
	d.SetZoneLine(t, "elsewhere.shop.test. 300 IN CNAME other.test.")
	d.SetZoneLine(t, "other.test. 300 IN A 192.0.2.1")
	for _, tc := range []struct {
		name string
		ok   bool
		says string
	}{
		{"good.shop.test", true, ""},
		{"alias.shop.test", true, ""},
		{"direct.shop.test", true, ""},
		{"wrong.shop.test", false, "lead to mail.google.test, not to mx.relay.test"},
		{"null.shop.test", false, "null MX"},
		{"bare.shop.test", false, "has no MX record"},
		{"elsewhere.shop.test", false, "CNAME to other.test"},
		{"missing.shop.test", false, "does not exist"},
	} {
		res := checkBounceMX(context.Background(), rc, tc.name)
		if res.OK != tc.ok || !strings.Contains(res.Problem, tc.says) {
			t.Errorf("%s: %+v, want ok %v and a problem saying %q", tc.name, res, tc.ok, tc.says)
		}
		if !tc.ok && (len(res.Records) != 1 || res.Records[0] != tc.name+". 3600 IN MX 10 mx.relay.test.") {
			t.Errorf("%s: records %q", tc.name, res.Records)
		}
	}
	// No mx_host: the check says so.
	if res := checkBounceMX(context.Background(), &relayChecker{resolver: d.Addr}, "good.shop.test"); res.OK || !strings.Contains(res.Problem, "mx_host") {
		t.Errorf("without mx_host: %+v", res)
	}
	// A resolver that does not answer: a failed lookup, not a verdict.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	silent := &relayChecker{mxHost: "mx.relay.test", resolver: pc.LocalAddr().String(), dnsTimeout: 200 * time.Millisecond}
	if res := checkBounceMX(context.Background(), silent, "good.shop.test"); res.OK || !strings.Contains(res.Problem, "lookup") {
		t.Errorf("silent resolver: %+v", res)
	}
}
