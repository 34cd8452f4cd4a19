package smtpd

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
)

func readFile(p string) ([]byte, error) { return os.ReadFile(p) }

// readDir lists the files in p, leaving out a FolderUpstream's temporary
// files (".tmp-*"): a copy being written is not yet delivered.
func readDir(p string) ([]string, error) {
	ents, err := os.ReadDir(p)
	var names []string
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".tmp-") {
			names = append(names, e.Name())
		}
	}
	return names, err
}

func errorsAs(err error, target any) bool { return errors.As(err, target) }

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
