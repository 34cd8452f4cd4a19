//go:build linux

package store

import (
	"os"

	"golang.org/x/sys/unix"
)

// fdatasync flushes f's data (not its metadata, such as times: the hit
// log's size never changes), as fdatasync(2).
func fdatasync(f *os.File) error {
	for {
		err := unix.Fdatasync(int(f.Fd()))
		if err != unix.EINTR {
			return err
		}
	}
}
