// Package dkim signs the relay's copies with DKIM (RFC 6376) after the
// rewrite, and checks that a key's record is published.
package dkim
