package config

import (
	"errors"
	"fmt"
	"net/mail"
	"net/url"
)

// ACME configures how the redirector gets the certificates of click
// domains (issue 15): over ACME (RFC 8555), on demand at the first HTTPS
// request for a click domain, for click domains only, served on
// redirector.tls_listen and renewed before they expire. Certificate files
// (redirector.tls_cert, tls_key) still work beside it, for the names they
// cover.
type ACME struct {
	// Directory is the ACME server's directory URL; "off" turns ACME off.
	// Using a directory means accepting its CA's subscriber agreement.
	Directory string `toml:"directory"`
	// CAFile is a PEM file of CA certificates trusted, beside the system's,
	// for the ACME server's own HTTPS: for a private ACME server.
	CAFile string `toml:"ca_file"`
	// Email is the ACME account's contact; the CA may mail it about
	// expiring certificates and changes of terms.
	Email string `toml:"email"`
	// Storage is the folder that keeps the certificates, their keys and the
	// ACME account. Redirectors that mount the same folder share all of
	// them and need no ACME account or certificate of their own. Empty:
	// "acme" in relay.data_dir.
	Storage string `toml:"storage"`
}

// ACME defaults.
const (
	// DefaultACMEDirectory is Let's Encrypt's production directory.
	DefaultACMEDirectory = "https://acme-v02.api.letsencrypt.org/directory"
	// ACMEOff as acme.directory turns ACME off.
	ACMEOff = "off"
)

// SetDefaults fills unset fields of the acme section.
func (a *ACME) SetDefaults() {
	if a.Directory == "" {
		a.Directory = DefaultACMEDirectory
	}
}

// Enabled reports whether ACME is on (acme.directory is not "off").
func (a *ACME) Enabled() bool { return a.Directory != ACMEOff }

// Validate checks the acme section and joins every problem, each named
// by its dotted key. It is pure; call SetDefaults first.
func (a *ACME) Validate() error {
	var errs []error
	if a.Directory != ACMEOff {
		u, err := url.Parse(a.Directory)
		if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil {
			errs = append(errs, fmt.Errorf("acme.directory: want an https URL (RFC 8555 requires HTTPS) or %q, got %q", ACMEOff, a.Directory))
		}
	}
	if a.Email != "" {
		if m, err := mail.ParseAddress(a.Email); err != nil || m.Address != a.Email || m.Name != "" {
			errs = append(errs, fmt.Errorf("acme.email: want a bare address like ops@example.com, got %q", a.Email))
		}
	}
	return errors.Join(errs...)
}

// validateRedirectorTLS checks what the redirector's HTTPS listener needs:
// certificate files or ACME.
func (c *Config) validateRedirectorTLS() error {
	r := c.Redirector
	if r.TLSListen != "" && !c.ACME.Enabled() && r.TLSCert == "" {
		return fmt.Errorf("redirector.tls_listen: needs redirector.tls_cert and tls_key, or ACME (acme.directory is %q)", ACMEOff)
	}
	return nil
}
