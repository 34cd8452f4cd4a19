package inbound

import (
	"io"
	"testing/iotest"
)

// readers are the ways a table test feeds its input: whole, a byte at a
// time, and in halves (streaming code breaks at chunk edges).
var readers = map[string]func(io.Reader) io.Reader{
	"whole":   func(r io.Reader) io.Reader { return r },
	"onebyte": iotest.OneByteReader,
	"half":    iotest.HalfReader,
}
