//go:build linux

package store

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// FreeBytes returns the bytes free for an unprivileged writer on the file
// system that holds dir (statfs(2): f_bavail × f_bsize).
func FreeBytes(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("store: statfs %s: %w", dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}
