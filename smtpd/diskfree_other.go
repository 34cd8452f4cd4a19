//go:build !unix

package smtpd

import "errors"

// freeBytes is not known here: the spool's free-space reserve is not
// checked, and a full disk still fails the write cleanly.
func freeBytes(string) (int64, error) {
	return 0, errors.New("smtpd: free disk space unknown on this system")
}
