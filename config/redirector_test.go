package config

import (
	"strings"
	"testing"
	"time"
)

func TestRedirectorDefaultsValidate(t *testing.T) {
	var r Redirector
	r.SetDefaults()
	if err := r.Validate(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	if r.Listen != DefaultRedirectorListen || r.AdminListen != DefaultRedirectorAdmin || r.ShipBatch != DefaultShipBatch ||
		r.ShipInterval != DefaultShipInterval || r.ShutdownTimeout != DefaultShutdownTimeout ||
		r.Durability != "process" || r.FlushInterval != 10*time.Millisecond || r.MinFreeBytes != 128<<20 {
		t.Fatalf("defaults %+v", r)
	}
	if err := r.ValidateStandalone(); err == nil || !strings.Contains(err.Error(), "redirector.ingest_url") || !strings.Contains(err.Error(), "redirector.ingest_secret") {
		t.Fatalf("standalone without ingest: %v", err)
	}
}

func TestRedirectorValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Redirector)
		want string // "" = valid
	}{
		{"ok standalone", func(r *Redirector) {}, ""},
		{"bad listen", func(r *Redirector) { r.Listen = "8080" }, "redirector.listen"},
		{"admin off", func(r *Redirector) { r.AdminListen = "off" }, ""},
		{"bad admin", func(r *Redirector) { r.AdminListen = "nowhere" }, "redirector.admin_listen"},
		{"cert without key", func(r *Redirector) { r.TLSCert = "c.pem" }, "redirector.tls_cert"},
		{"cert and key", func(r *Redirector) { r.TLSCert, r.TLSKey = "c.pem", "k.pem" }, ""},
		{"domain with path", func(r *Redirector) { r.ClickDomains = []string{"click.example.com/x"} }, "redirector.click_domains"},
		{"domain bad port", func(r *Redirector) { r.ClickDomains = []string{"click.example.com:http"} }, "redirector.click_domains"},
		{"domain with port", func(r *Redirector) { r.ClickDomains = []string{"click.example.com:8443", "[::1]:80"} }, ""},
		{"negative age", func(r *Redirector) { r.MaxLinkAge = -time.Hour }, "redirector.max_link_age"},
		{"bad proxy", func(r *Redirector) { r.TrustedProxies = []string{"10.0.0.0/33"} }, "redirector.trusted_proxies"},
		{"disk durability", func(r *Redirector) { r.Durability = "disk" }, ""},
		{"bad durability", func(r *Redirector) { r.Durability = "fsync" }, "redirector.durability"},
		{"zero flush interval", func(r *Redirector) { r.FlushInterval = -time.Millisecond }, "redirector.flush_interval"},
		{"huge flush interval", func(r *Redirector) { r.FlushInterval = time.Hour }, "redirector.flush_interval"},
		{"negative floor", func(r *Redirector) { r.MinFreeBytes = -1 }, "redirector.min_free_bytes"},
		{"proxies", func(r *Redirector) { r.TrustedProxies = []string{"10.0.0.0/8", "::1", "192.0.2.7"} }, ""},
		{"ingest not http", func(r *Redirector) { r.IngestURL = "ftp://relay/hits" }, "redirector.ingest_url"},
		{"short secret", func(r *Redirector) { r.IngestSecret = "short" }, "redirector.ingest_secret"},
		{"secret file", func(r *Redirector) { r.IngestSecret, r.IngestSecretFile = "", "secret" }, ""},
		{"batch too big", func(r *Redirector) { r.ShipBatch = 1 << 20 }, "redirector.ship_batch"},
		{"batch negative", func(r *Redirector) { r.ShipBatch = -1 }, "redirector.ship_batch"},
		{"interval negative", func(r *Redirector) { r.ShipInterval = -1 }, "redirector.ship_interval"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := Redirector{IngestURL: "http://127.0.0.1:8025/internal/hits", IngestSecret: "0123456789abcdef0123"}
			r.SetDefaults()
			tc.edit(&r)
			err := r.ValidateStandalone()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want+":")):
				t.Fatalf("got %v, want an error naming %s", err, tc.want)
			}
		})
	}
}

func TestRedirectorTOML(t *testing.T) {
	c, err := Parse(strings.NewReader(`
[redirector]
listen = "0.0.0.0:443"
tls_cert = "tls/click.pem"
tls_key = "tls/click.key"
click_domains = ["click.example.com"]
max_link_age = "8760h"
trusted_proxies = ["10.0.0.0/8"]
ingest_url = "https://relay.internal:8025/internal/hits"
ingest_secret_file = "secrets/ingest"
ship_interval = "250ms"
`))
	if err != nil {
		t.Fatal(err)
	}
	r := c.Redirector
	if r.MaxLinkAge != 8760*time.Hour || r.ShipInterval != 250*time.Millisecond || r.Listen != "0.0.0.0:443" || len(r.ClickDomains) != 1 {
		t.Fatalf("parsed %+v", r)
	}
	r.SetDefaults()
	if err := r.ValidateStandalone(); err != nil {
		t.Fatal(err)
	}
}
