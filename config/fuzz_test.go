package config

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzParse: any input either fails to parse or parses into a config that
// Validate judges without panicking, the same way twice.
func FuzzParse(f *testing.F) {
	f.Add(Example())
	f.Add([]byte(minimal))
	f.Add([]byte("[smtp]\nmax_message_bytes = -1\n"))
	f.Add([]byte("[[upstreams]]\nname = \"x\"\nfolder = \"o\"\n"))
	f.Fuzz(func(t *testing.T, src []byte) {
		c, err := Parse(bytes.NewReader(src))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "config: ") {
				t.Fatalf("error without package prefix: %v", err)
			}
			return
		}
		e1, e2 := c.Validate(), c.Validate()
		if (e1 == nil) != (e2 == nil) || e1 != nil && e1.Error() != e2.Error() {
			t.Fatalf("Validate is not deterministic: %v / %v", e1, e2)
		}
	})
}
