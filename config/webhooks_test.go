package config

import (
	"strings"
	"testing"
	"time"
)

func TestWebhooksValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		mod  func(*Webhooks)
		want string // "" valid, else in the error
	}{
		{"defaults", func(*Webhooks) {}, ""},
		{"networks", func(w *Webhooks) { w.AllowNetworks = []string{"10.0.0.0/8", "fd00::/8"} }, ""},
		{"bad network", func(w *Webhooks) { w.AllowNetworks = []string{"10.0.0.0/8", "10.0.0.1"} }, "webhooks.allow_networks[1]"},
		{"zero timeout", func(w *Webhooks) { w.Timeout = -time.Second }, "webhooks.timeout"},
		{"huge timeout", func(w *Webhooks) { w.Timeout = time.Hour }, "webhooks.timeout"},
		{"concurrency", func(w *Webhooks) { w.Concurrency = 1000 }, "webhooks.concurrency"},
		{"disable_after", func(w *Webhooks) { w.DisableAfter = time.Minute }, "webhooks.disable_after"},
		{"lease", func(w *Webhooks) { w.Lease = 10 * time.Second }, "webhooks.lease"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := Webhooks{}
			w.SetDefaults()
			tc.mod(&w)
			err := w.Validate()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Errorf("%v, want %q", err, tc.want)
			}
		})
	}
	c, err := Parse(strings.NewReader("[webhooks]\nallow_http = true\nallow_networks = [\"10.1.0.0/16\"]\nconcurrency = 8\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !c.Webhooks.AllowHTTP || c.Webhooks.Concurrency != 8 || c.Webhooks.Timeout != DefaultWebhookTimeout || len(c.Webhooks.Networks()) != 1 {
		t.Errorf("parsed %+v", c.Webhooks)
	}
	if err := c.Validate(); err != nil && strings.Contains(err.Error(), "webhooks.") {
		t.Errorf("a valid [webhooks] refused: %v", err)
	}
	c.Webhooks.Lease = time.Second
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "webhooks.lease") {
		t.Errorf("Config.Validate misses webhooks: %v", err)
	}
}
