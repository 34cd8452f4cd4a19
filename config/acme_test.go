package config

import (
	"strings"
	"testing"
)

func TestACMEAndDomainsValidate(t *testing.T) {
	tests := []struct {
		name string
		toml string
		want []string // dotted keys named; none = valid
	}{
		{"defaults", ``, nil},
		{"full", `
[redirector]
listen = "0.0.0.0:80"
tls_listen = "0.0.0.0:443"
[acme]
directory = "https://acme.internal:14000/dir"
ca_file = "ca.pem"
email = "ops@example.com"
storage = "/shared/acme"
[domains]
target = "track.relay.example"
resolver = "[::1]:53"
`, nil},
		{"acme off with files", `
[redirector]
tls_listen = "127.0.0.1:8443"
tls_cert = "c.pem"
tls_key = "k.pem"
[acme]
directory = "off"
`, nil},
		{"acme off, no files", `
[redirector]
tls_listen = "127.0.0.1:8443"
[acme]
directory = "off"
`, []string{"redirector.tls_listen"}},
		{"tls_listen is listen", `
[redirector]
listen = "127.0.0.1:8080"
tls_listen = "127.0.0.1:8080"
`, []string{"redirector.tls_listen"}},
		{"tls_listen not host:port", `
[redirector]
tls_listen = "443"
`, []string{"redirector.tls_listen"}},
		{"http directory", `
[acme]
directory = "http://acme.example/dir"
`, []string{"acme.directory"}},
		{"directory not a URL", `
[acme]
directory = "letsencrypt"
`, []string{"acme.directory"}},
		{"email with a name", `
[acme]
email = "Ops <ops@example.com>"
`, []string{"acme.email"}},
		{"email not an address", `
[acme]
email = "ops"
`, []string{"acme.email"}},
		{"target with scheme", `
[domains]
target = "https://track.relay.example"
`, []string{"domains.target"}},
		{"target an address", `
[domains]
target = "192.0.2.1"
`, []string{"domains.target"}},
		{"target one label", `
[domains]
target = "track"
`, []string{"domains.target"}},
		{"target with port", `
[domains]
target = "track.relay.example:80"
`, []string{"domains.target"}},
		{"resolver without port", `
[domains]
resolver = "127.0.0.1"
`, []string{"domains.resolver"}},
		{"resolver bad port", `
[domains]
resolver = "127.0.0.1:99999"
`, []string{"domains.resolver"}},
		{"every problem at once", `
[acme]
directory = "ftp://x"
email = "x"
[domains]
target = "-x.example"
resolver = "nowhere"
`, []string{"acme.directory", "acme.email", "domains.target", "domains.resolver"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse(strings.NewReader(minimal + tc.toml))
			if err != nil {
				t.Fatal(err)
			}
			err = c.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("unexpected: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("valid; want problems with %v", tc.want)
			}
			for _, k := range tc.want {
				if !strings.Contains(err.Error(), k+":") {
					t.Errorf("%v: does not name %s", err, k)
				}
			}
		})
	}
}

func TestACMEDefaults(t *testing.T) {
	c, err := Parse(strings.NewReader(minimal))
	if err != nil {
		t.Fatal(err)
	}
	if c.ACME.Directory != DefaultACMEDirectory || !c.ACME.Enabled() || c.Domains.Resolver != "" || c.Redirector.TLSListen != "" {
		t.Errorf("defaults: %+v %+v", c.ACME, c.Domains)
	}
}
