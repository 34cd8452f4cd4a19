package smtpd

import (
	"bytes"
	"io"
	"net"
	"sync/atomic"
	"testing"
)

// countConn counts the writes that reach a connection.
type countConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// TestFlushOnReadConn: writes wait in the buffer until the client reads
// (a whole 36 KB body in 4 KB writes goes out as one write), arrive whole
// and in order, and a full buffer is sent without a read.
func TestFlushOnReadConn(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	cc := &countConn{Conn: client}
	c := newFlushOnReadConn(cc)
	defer c.Close()
	body := bytes.Repeat([]byte("0123456789abcdef"), 36<<10/16)
	got := make(chan []byte, 1)
	go func() {
		b := make([]byte, len(body)+upstreamWriteBuf+1)
		n, _ := io.ReadFull(server, b[:len(body)])
		server.Write([]byte("ok"))
		m, _ := io.ReadFull(server, b[n:n+upstreamWriteBuf+1])
		got <- b[:n+m]
	}()
	for i := 0; i < len(body); i += 4 << 10 {
		if _, err := c.Write(body[i:min(i+4<<10, len(body))]); err != nil {
			t.Fatal(err)
		}
	}
	if n := cc.writes.Load(); n != 0 {
		t.Fatalf("%d writes reached the connection before the client read", n)
	}
	reply := make([]byte, 2)
	if _, err := io.ReadFull(c, reply); err != nil || string(reply) != "ok" {
		t.Fatalf("read %q, %v", reply, err)
	}
	if n := cc.writes.Load(); n != 1 {
		t.Fatalf("%d writes for a 36 KB body, want 1", n)
	}
	// More than the buffer holds goes out without waiting for a read.
	big := bytes.Repeat([]byte("x"), upstreamWriteBuf+1)
	if _, err := c.Write(big); err != nil {
		t.Fatal(err)
	}
	if b := <-got; !bytes.Equal(b, append(append([]byte(nil), body...), big...)) {
		t.Fatalf("the server got %d bytes, not what was written", len(b))
	}
}
