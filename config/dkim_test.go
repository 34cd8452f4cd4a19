package config

import (
	"strings"
	"testing"
	"time"
)

// TestDKIMSection: defaults fill in, the values parse from TOML, and every
// bad value is named by its dotted key.
func TestDKIMSection(t *testing.T) {
	c, err := Parse(strings.NewReader(minimal))
	if err != nil {
		t.Fatal(err)
	}
	d := c.DKIM
	if d.CheckInterval != DefaultDKIMCheckInterval || d.RecheckInterval != DefaultDKIMRecheckInterval || d.RetireAfter != DefaultDKIMRetireAfter || d.Resolver != "" {
		t.Fatalf("defaults: %+v", d)
	}
	c, err = Parse(strings.NewReader(minimal + "[dkim]\nresolver = \"127.0.0.1:5353\"\ncheck_interval = \"30s\"\nretire_after = \"72h\"\ncname_zone = \"DKIM.Relay.Example.\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if d := c.DKIM; d.Resolver != "127.0.0.1:5353" || d.CheckInterval != 30*time.Second || d.RetireAfter != 72*time.Hour || d.CNAMEZone != "dkim.relay.example" {
		t.Fatalf("parsed: %+v", d)
	}
	for _, tc := range []struct {
		name string
		d    DKIM
		want string
	}{
		{"resolver port", DKIM{Resolver: "127.0.0.1:x"}, "dkim.resolver"},
		{"resolver url", DKIM{Resolver: "udp://8.8.8.8"}, "dkim.resolver"},
		{"check interval", DKIM{CheckInterval: time.Millisecond}, "dkim.check_interval"},
		{"recheck interval", DKIM{RecheckInterval: -time.Second}, "dkim.recheck_interval"},
		{"retire after", DKIM{RetireAfter: -time.Hour}, "dkim.retire_after"},
		{"cname zone", DKIM{CNAMEZone: "no_dots"}, "dkim.cname_zone"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := tc.d
			d.SetDefaults()
			err := d.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%+v: %v, want a problem with %s", d, err, tc.want)
			}
		})
	}
	ok := DKIM{Resolver: "[::1]:53"}
	ok.SetDefaults()
	if err := ok.Validate(); err != nil {
		t.Fatalf("IPv6 resolver: %v", err)
	}
}
