package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/smtpd"
	"github.com/trackrelay/trackrelay/store"
)

// recordLog keeps slog messages.
type recordLog struct {
	mu   sync.Mutex
	msgs []string
}

func (l *recordLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *recordLog) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, r.Message)
	return nil
}
func (l *recordLog) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *recordLog) WithGroup(string) slog.Handler      { return l }
func (l *recordLog) has(msg string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, m := range l.msgs {
		if m == msg {
			return true
		}
	}
	return false
}

// TestStalledClient: a client that stops reading a large log is cut off
// once a write makes no progress for Timeout; a reading client gets the
// whole day.
func TestStalledClient(t *testing.T) {
	e := newEnv(t)
	day := time.Date(2026, 11, 21, 0, 0, 0, 0, time.UTC)
	ua := `{"User-Agent":"` + strings.Repeat("x", 2000) + `"}`
	const n = 8000 // about 17 MB of CSV: more than the sockets buffer
	evs := make([]store.Event, 0, n)
	for i := range n {
		evs = append(evs, store.Event{Log: store.LogClicks, Account: "shop", ID: uint64(i + 1), Time: day.Add(time.Duration(i) * time.Second),
			Fields: map[string]string{"headers": ua, "url": "https://shop.example/"}})
	}
	if err := e.relay.AppendEvents(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	logs := &recordLog{}
	kr, _ := NewKeyring([]Key{{Hash: hashKey(t, keyShop), Cred: &smtpd.Credential{Username: "u", Account: "shop"}}})
	short := newTestServer(New(Config{Submitter: e.spool, Store: e.relay, Keys: kr, Log: slog.New(logs), Timeout: 300 * time.Millisecond}))
	defer short.Close()
	path := "/v1/logfiles/clicks.2026-11-21.log"

	// The stalled client.
	conn, err := net.Dial("tcp", short.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", path, keyShop)
	t0 := time.Now()
	deadline := time.Now().Add(20 * time.Second)
	for !logs.has("api call failed") {
		if time.Now().After(deadline) {
			t.Fatal("the server still waits on a client that stopped reading")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("server gave up after %v", time.Since(t0))
	// What the stalled client can still read ends short: the answer was
	// cut, not completed.
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if resp, err := http.ReadResponse(bufio.NewReader(conn), nil); err == nil {
		if _, err := io.Copy(io.Discard, resp.Body); err == nil {
			t.Fatal("the cut answer read as complete")
		}
	}

	// A reading client gets every record (from a server whose Timeout
	// a loaded test machine cannot exceed between two reads).
	st, body := e.get(path, keyShop)
	if st != 200 {
		t.Fatalf("%d", st)
	}
	recs, err := csv.NewReader(bytes.NewReader(body)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if got := len(recs); got != n {
		t.Fatalf("%d records, want %d", got, n)
	}
}
