// Package config reads, defaults and validates trackrelay's TOML
// configuration file. It is its own package because every role (relay,
// redirector, API) and the admin commands read the same file.
package config

// Config is the whole configuration file.
type Config struct {
	// Redirector is the public HTTP edge's section; see redirector.go.
	Redirector Redirector `toml:"redirector"`
}
