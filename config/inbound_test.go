package config

import (
	"strings"
	"testing"
	"time"
)

// TestInboundSection: defaults fill in, values parse and normalise, and
// every bad value is named by its dotted key.
func TestInboundSection(t *testing.T) {
	c, err := Parse(strings.NewReader(minimal))
	if err != nil {
		t.Fatal(err)
	}
	in := c.Inbound
	if in.On() || in.SoftBounceLimit != DefaultSoftBounceLimit || in.SoftBounceWindow != DefaultSoftBounceWindow ||
		in.MaxMessageBytes != DefaultInboundMaxBytes || in.MaxUnclaimed != DefaultInboundMaxUnclaim {
		t.Fatalf("defaults: %+v", in)
	}
	c, err = Parse(strings.NewReader(minimal + `[inbound]
listen = "127.0.0.1:2530"
bounce_domain = "Bounces.Relay.Example."
mx_host = "MX.relay.example"
report_addresses = [" DMARC@bounces.relay.example "]
soft_bounce_limit = -1
soft_bounce_window = "72h"
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	in = c.Inbound
	if !in.On() || in.BounceDomain != "bounces.relay.example" || in.MXHost != "mx.relay.example" ||
		in.ReportAddresses[0] != "dmarc@bounces.relay.example" || in.SoftBounceLimit != -1 || in.SoftBounceWindow != 72*time.Hour {
		t.Fatalf("parsed: %+v", in)
	}
	for _, tc := range []struct {
		name string
		in   Inbound
		want string
	}{
		{"listen", Inbound{Listen: "25"}, "inbound.listen"},
		{"bounce domain", Inbound{BounceDomain: "http://b.example"}, "inbound.bounce_domain"},
		{"bounce domain one label", Inbound{BounceDomain: "bounces"}, "inbound.bounce_domain"},
		{"mx host", Inbound{MXHost: "10.0.0.1"}, "inbound.mx_host"},
		{"report address", Inbound{ReportAddresses: []string{"dmarc"}}, "inbound.report_addresses[0]"},
		{"report address plus", Inbound{ReportAddresses: []string{"dmarc+x@b.example"}}, "inbound.report_addresses[0]"},
		{"report address twice", Inbound{ReportAddresses: []string{"d@b.example", "D@b.example"}}, "inbound.report_addresses[1]"},
		{"soft limit", Inbound{SoftBounceLimit: -2}, "inbound.soft_bounce_limit"},
		{"soft window", Inbound{SoftBounceWindow: time.Second}, "inbound.soft_bounce_window"},
		{"size", Inbound{MaxMessageBytes: 1000}, "inbound.max_message_bytes"},
		{"per ip", Inbound{MaxSessions: 5, MaxSessionsPerIP: 6}, "inbound.max_sessions_per_ip"},
		{"block", Inbound{BadRecipientsSlow: 5, BadRecipientsBlock: 2}, "inbound.bad_recipients_block"},
		{"data timeout", Inbound{ReadTimeout: time.Hour, DataTimeout: time.Minute}, "inbound.data_timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in
			in.SetDefaults()
			err := in.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want+":") {
				t.Fatalf("%+v: %v, want a problem with %s", in, err, tc.want)
			}
		})
	}
}
