//go:build !linux

package store

import (
	"errors"
	"fmt"
)

// FreeBytes returns the bytes free on the file system that holds dir. It
// is implemented on Linux only; elsewhere it fails, and floors on free
// space are not applied.
func FreeBytes(dir string) (int64, error) {
	return 0, fmt.Errorf("store: free space of %s: %w", dir, errors.ErrUnsupported)
}
