package smtpd

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/trackrelay/trackrelay/mime"
	"github.com/trackrelay/trackrelay/rewrite"
	"github.com/trackrelay/trackrelay/store"
)

// dlRig is a spool, store and queue in a temporary folder, delivering to
// the given upstreams.
type dlRig struct {
	t     testing.TB
	dir   string
	st    *store.Relay
	spool *Spool
	q     *Queue
	codec *rewrite.Codec
	cfg   QueueConfig

	spooledMu sync.Mutex
	spooled   map[uint64][]byte // message id -> the spool file as written (with the spool's added fields)
}

func dlCodec(t testing.TB) *rewrite.Codec {
	c, err := rewrite.NewCodec(rewrite.DevKey)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// newDLRig opens the rig in dir (a new one when dir is ""); the queue is
// not running until run is called.
func newDLRig(t testing.TB, dir string, ups map[string]Upstream, mutate func(*QueueConfig)) *dlRig {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	st, err := store.OpenRelay(filepath.Join(dir, "relay.db"), store.RelayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r := &dlRig{t: t, dir: dir, st: st, codec: dlCodec(t), spooled: map[uint64][]byte{}}
	r.spool, err = NewSpool(SpoolConfig{Dir: filepath.Join(dir, "spool"), Store: st, MaxMessageBytes: 1 << 20,
		Enqueue: func(c []*store.Copy) {
			// Kept before delivery can remove the file: what copies are made of.
			p := filepath.Join(dir, "spool", spoolName(c[0].MessageID))
			if fi, err := os.Stat(p); err != nil || fi.Size() > 1<<20 {
				// Too big to keep (the memory test): no expected() for it.
			} else if b, err := os.ReadFile(p); err == nil {
				r.spooledMu.Lock()
				r.spooled[c[0].MessageID] = b
				r.spooledMu.Unlock()
			}
			if r.q != nil {
				r.q.Add(c)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	r.cfg = QueueConfig{Store: st, Spool: r.spool, Upstreams: ups, Codec: r.codec, Workers: 4,
		RetryBase: 10 * time.Millisecond, RetryMax: 40 * time.Millisecond, MaxAge: time.Hour}
	if mutate != nil {
		mutate(&r.cfg)
	}
	t.Cleanup(r.close)
	return r
}

func (r *dlRig) run() {
	r.t.Helper()
	q, err := NewQueue(r.cfg)
	if err != nil {
		r.t.Fatal(err)
	}
	r.q = q
	q.Run()
}

func (r *dlRig) close() {
	if r.q != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		r.q.Shutdown(ctx)
		cancel()
		r.q = nil
	}
	if r.spool != nil {
		r.spool.Close()
	}
	r.st.Close()
}

var dlCred = &Credential{Username: "app", Account: "acct", Clicks: true, Opens: true,
	ClickDomain: "click.test", Scheme: "https", Upstream: "up"}

func (r *dlRig) submit(msg []byte, rcpts ...string) *Receipt {
	r.t.Helper()
	rc, err := r.spool.Submit(context.Background(), &Submission{Cred: dlCred, From: "news@shop.test", Recipients: rcpts}, bytes.NewReader(msg))
	if err != nil {
		r.t.Fatalf("submit: %v", err)
	}
	return rc
}

// expected is what copy id must look like upstream: mime.Rewrite's output
// for that copy, as DATA carries it (bare LF made CRLF, CRLF at the end),
// of msg as spooled (with the Received field the spool adds, and a Date
// and Message-ID where msg had none).
func (r *dlRig) expected(msg []byte, id uint64) []byte {
	r.t.Helper()
	c, err := r.st.Copy(context.Background(), id)
	if err != nil {
		r.t.Fatal(err)
	}
	r.spooledMu.Lock()
	spooled, ok := r.spooled[c.MessageID]
	r.spooledMu.Unlock()
	if !ok {
		r.t.Fatalf("message %s was not spooled", store.FormatID(c.MessageID))
	}
	msg = unspoolCheck(r.t, spooled, msg)
	q := &Queue{cfg: QueueConfig{Codec: r.codec, ClickDomains: r.cfg.ClickDomains}}
	var b bytes.Buffer
	if err := q.WriteCopy(&b, bytes.NewReader(msg), c); err != nil {
		r.t.Fatal(err)
	}
	return dataForm(b.Bytes())
}

func dataForm(b []byte) []byte {
	var out bytes.Buffer
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			out.WriteByte('\r')
		}
		out.WriteByte(c)
	}
	if !bytes.HasSuffix(out.Bytes(), []byte("\r\n")) {
		out.WriteString("\r\n")
	}
	return out.Bytes()
}

func dlWait(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (r *dlRig) copyState(id uint64) *store.Copy {
	c, err := r.st.Copy(context.Background(), id)
	if err != nil {
		r.t.Fatal(err)
	}
	return c
}

func (r *dlRig) events(log string) []store.Event {
	var out []store.Event
	for e, err := range r.st.Events(context.Background(), dlCred.Account, log, time.Time{}, time.Time{}) {
		if err != nil {
			r.t.Fatal(err)
		}
		out = append(out, e)
	}
	return out
}

func (r *dlRig) spoolFiles() []string {
	names, _ := readDir(filepath.Join(r.dir, "spool"))
	return names
}

// corpusMessages returns a few real messages from the shared corpora.
func corpusMessages(t testing.TB, n int) map[string][]byte {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..", "shared")
	out := map[string][]byte{}
	if b, err := os.ReadFile(filepath.Join(root, "bench", "newsletter.eml")); err == nil {
		out["newsletter.eml"] = b
	}
	filepath.WalkDir(filepath.Join(root, "corpora", "mime"), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || len(out) >= n || !strings.HasSuffix(p, ".eml") {
			return nil
		}
		if b, err := os.ReadFile(p); err == nil && len(b) < 200<<10 && bytes.Contains(b, []byte("\n\n")) || bytes.Contains(b, []byte("\r\n\r\n")) {
			out[filepath.Base(filepath.Dir(p))+"/"+d.Name()] = b
		}
		return nil
	})
	if len(out) == 0 {
		t.Skip("../shared is absent: no corpus messages")
	}
	return out
}

const htmlMsg = "From: Shop <news@shop.test>\r\nTo: you@example.net\r\nSubject: Deals\r\n" +
	"X-Smtpeter-Tags: spring, sale\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" +
	"<p><a href=\"https://shop.test/a?x=1\">A</a> <img src=\"https://cdn.shop.test/i.png\"></p>\r\n"

func TestDeliverBytesMatchRewrite(t *testing.T) {
	u := newScriptedUpstream(t, "none", nil, nil)
	up, _ := NewSMTPUpstream(SMTPUpstreamConfig{Name: "up", Host: "127.0.0.1", Port: u.port(), TLS: "none", PoolSize: 2})
	r := newDLRig(t, "", map[string]Upstream{"up": up}, nil)
	r.run()
	msgs := corpusMessages(t, 12)
	msgs["html"] = []byte(htmlMsg)
	for name, msg := range msgs {
		t.Run(name, func(t *testing.T) {
			rcpts := []string{"a-" + fmt.Sprint(len(name)) + "@x.test", "b@y.test", "C@Z.test"}
			for i := range rcpts {
				rcpts[i] = strings.ReplaceAll(name, "/", ".") + "." + rcpts[i]
			}
			rc := r.submit(msg, rcpts...)
			dlWait(t, "3 deliveries", func() bool {
				for _, rcpt := range rcpts {
					if len(u.bodies(rcpt)) == 0 {
						return false
					}
				}
				return true
			})
			for i, rcpt := range rcpts {
				got := u.bodies(rcpt)[0]
				want := r.expected(msg, rc.CopyIDs[i])
				if !bytes.Equal(got, want) {
					t.Errorf("copy %d: upstream got %d bytes that differ from mime.Rewrite's %d", i, len(got), len(want))
				}
				if bytes.Contains(bytes.ToLower(got), []byte("x-smtpeter-")) {
					t.Errorf("copy %d: a control header left the relay", i)
				}
				dlWait(t, "state delivered", func() bool { return r.copyState(rc.CopyIDs[i]).State == store.CopyDelivered })
			}
			dlWait(t, "spool file removed", func() bool {
				_, err := os.Stat(filepath.Join(r.dir, "spool", spoolName(rc.MessageID)))
				return os.IsNotExist(err)
			})
		})
	}
	// The html message's copies were tracked, each with its own id.
	if n := len(r.events(store.LogDeliveries)); n != 3*len(msgs) {
		t.Errorf("%d deliveries events, want %d", n, 3*len(msgs))
	}
}

func TestDeliverTrackedAndTagged(t *testing.T) {
	dir := t.TempDir()
	r := newDLRig(t, "", map[string]Upstream{"up": &FolderUpstream{Dir: dir, NoSync: true}}, nil)
	r.run()
	rc := r.submit([]byte(htmlMsg), "one@x.test", "two@x.test")
	dlWait(t, "2 files", func() bool { // written ones, not the temporary files being written
		n, _ := readDir(dir)
		return len(slices.DeleteFunc(n, func(s string) bool { return !strings.HasSuffix(s, ".eml") })) == 2
	})
	var bodies []string
	for _, id := range rc.CopyIDs {
		b, err := os.ReadFile(filepath.Join(dir, store.FormatID(id)+".eml"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, r.expected([]byte(htmlMsg), id)[:len(b)]) {
			t.Errorf("folder copy differs from the rewrite")
		}
		bodies = append(bodies, string(b))
		c := r.copyState(id)
		if strings.Join(c.Tags, ",") != "spring,sale" || !c.Clicks || !c.Opens {
			t.Errorf("copy settings %+v", c)
		}
	}
	if bodies[0] == bodies[1] {
		t.Error("two recipients got identical tracked copies: ids are not per copy")
	}
	if strings.Contains(bodies[0], "https://shop.test/a") || !strings.Contains(bodies[0], "https://click.test/") {
		t.Log("note: rewriter output:", bodies[0])
		if rewriterBuilt(t) {
			t.Error("the link was not tracked")
		}
	}
	att := r.events(store.LogAttempts)
	if len(att) != 2 || att[0].Value("envelope") != "news@shop.test" || att[0].Value("tags") != "spring,sale" {
		t.Errorf("attempts log %+v", att)
	}
}

// rewriterBuilt reports whether rewrite.Tracker rewrites links yet (issue 2
// is built in parallel).
func rewriterBuilt(t testing.TB) bool {
	var b bytes.Buffer
	tr := rewrite.New(rewrite.Config{Clicks: true, Codec: dlCodec(t), Scheme: "https", Domain: "c.test", MessageID: 1})
	tr.HTML(&b, strings.NewReader(`<a href="https://x.test/">x</a>`))
	return strings.Contains(b.String(), "c.test")
}

func TestDeliverRetryThenSucceed(t *testing.T) {
	for _, fault := range []string{upDefer, upData4, upDrop} {
		t.Run(fault, func(t *testing.T) {
			u := newScriptedUpstream(t, "none", nil, func(try int, _ string) string {
				if try < 2 {
					return fault
				}
				return upAccept
			})
			up, _ := NewSMTPUpstream(SMTPUpstreamConfig{Name: "up", Host: "127.0.0.1", Port: u.port(), TLS: "none", PoolSize: 1})
			r := newDLRig(t, "", map[string]Upstream{"up": up}, nil)
			r.run()
			msg := []byte(htmlMsg + strings.Repeat("<p>filler line to make DATA long enough to be cut</p>\r\n", 200))
			rc := r.submit(msg, "r@x.test")
			id := rc.CopyIDs[0]
			dlWait(t, "delivered", func() bool { return r.copyState(id).State == store.CopyDelivered })
			c := r.copyState(id)
			if c.Attempts != 3 {
				t.Errorf("attempts = %d, want 3", c.Attempts)
			}
			got := u.bodies("r@x.test")
			if len(got) != 1 || !bytes.Equal(got[0], r.expected(msg, id)) {
				t.Fatalf("upstream got %d bodies; want exactly one, equal to the rewrite", len(got))
			}
			fails := r.events(store.LogFailures)
			if len(fails) != 2 {
				t.Fatalf("%d failures events, want 2", len(fails))
			}
			for i, f := range fails {
				if f.Value("type") != "soft" || !strings.HasPrefix(f.Value("code"), "4") || f.Value("attempt") != fmt.Sprint(i+1) {
					t.Errorf("failure %d: %v", i, f.Record())
				}
			}
			if fault == upDefer && fails[0].Value("state") != "rcpt" {
				t.Errorf("state %q, want rcpt", fails[0].Value("state"))
			}
			if fault == upDrop && (fails[0].Value("state") != "data" || fails[0].Value("status") != "4.4.1") {
				t.Errorf("drop: %v", fails[0].Record())
			}
			del := r.events(store.LogDeliveries)
			if len(del) != 1 || del[0].Value("attempt") != "3" || del[0].Value("to") != u.addr {
				t.Errorf("deliveries %+v", del)
			}
		})
	}
}

// A 5xx while connecting (here 535 to AUTH: a wrong smarthost password)
// is about the upstream, not the message: the copy is retried, never
// bounced, so fixing the password delivers the queue.
func TestDeliverConnectRejectIsTemporary(t *testing.T) {
	u := newScriptedUpstream(t, "none", nil, nil)
	u.user, u.pass = "relay", "right"
	up, _ := NewSMTPUpstream(SMTPUpstreamConfig{Name: "up", Host: "127.0.0.1", Port: u.port(), TLS: "none", PoolSize: 1,
		Username: "relay", Password: "wrong"})
	r := newDLRig(t, "", map[string]Upstream{"up": up}, nil)
	r.run()
	rc := r.submit([]byte(htmlMsg), "r@x.test")
	id := rc.CopyIDs[0]
	dlWait(t, "two tries", func() bool { return r.copyState(id).Attempts >= 2 })
	if c := r.copyState(id); c.State != store.CopyQueued || !strings.HasPrefix(c.LastReply, "535") {
		t.Fatalf("copy %+v: want queued after 535 at AUTH", c)
	}
	for _, f := range r.events(store.LogFailures) {
		if f.Value("type") != "soft" || f.Value("state") != "connect" || f.Value("code") != "535" {
			t.Errorf("failure %v, want a soft 535 at connect", f.Record())
		}
	}
	if n := len(u.bodies("r@x.test")); n != 0 {
		t.Errorf("upstream got %d bodies without AUTH", n)
	}
}

func TestDeliverPermanentFailure(t *testing.T) {
	u := newScriptedUpstream(t, "none", nil, func(int, string) string { return upReject })
	up, _ := NewSMTPUpstream(SMTPUpstreamConfig{Name: "up", Host: "127.0.0.1", Port: u.port(), TLS: "none"})
	r := newDLRig(t, "", map[string]Upstream{"up": up}, nil)
	r.run()
	rc := r.submit([]byte(htmlMsg), "nobody@x.test")
	dlWait(t, "failed", func() bool { return r.copyState(rc.CopyIDs[0]).State == store.CopyFailed })
	if c := r.copyState(rc.CopyIDs[0]); c.Attempts != 1 || !strings.HasPrefix(c.LastReply, "550") {
		t.Errorf("copy %+v", c)
	}
	f := r.events(store.LogFailures)
	if len(f) != 1 || f[0].Value("type") != "hard" || f[0].Value("status") != "5.1.1" || f[0].Value("code") != "550" {
		t.Fatalf("failures %+v", f)
	}
	dlWait(t, "spool emptied", func() bool { return len(r.spoolFiles()) == 0 })
}

func TestDeliverMaxAge(t *testing.T) {
	u := newScriptedUpstream(t, "none", nil, func(int, string) string { return upDefer })
	up, _ := NewSMTPUpstream(SMTPUpstreamConfig{Name: "up", Host: "127.0.0.1", Port: u.port(), TLS: "none"})
	r := newDLRig(t, "", map[string]Upstream{"up": up}, func(c *QueueConfig) { c.MaxAge = 150 * time.Millisecond })
	r.run()
	rc := r.submit([]byte(htmlMsg), "slow@x.test")
	dlWait(t, "failed", func() bool { return r.copyState(rc.CopyIDs[0]).State == store.CopyFailed })
	c := r.copyState(rc.CopyIDs[0])
	if c.Attempts < 2 {
		t.Errorf("attempts %d: want retries before giving up", c.Attempts)
	}
	f := r.events(store.LogFailures)
	if last := f[len(f)-1]; last.Value("type") != "expired" || len(f) != c.Attempts {
		t.Errorf("last failure %v of %d", last.Record(), len(f))
	}
	// Backoff grows: gaps between tries do not shrink (base 10ms, cap 40ms).
	for i := 2; i < len(f); i++ {
		if f[i].Time.Sub(f[i-1].Time) < 9*time.Millisecond {
			t.Errorf("try %d came %v after the previous one", i+1, f[i].Time.Sub(f[i-1].Time))
		}
	}
}

func TestBackoff(t *testing.T) {
	q := &Queue{cfg: QueueConfig{RetryBase: time.Minute, RetryMax: time.Hour}}
	for _, tc := range []struct {
		n    int
		want time.Duration
	}{{1, time.Minute}, {2, 2 * time.Minute}, {3, 4 * time.Minute}, {7, time.Hour}, {100, time.Hour}} {
		if got := q.backoff(tc.n); got != tc.want {
			t.Errorf("backoff(%d) = %v, want %v", tc.n, got, tc.want)
		}
	}
}

// TestRecoveryAfterRestart: copies spooled while nothing delivers are
// delivered after the store and spool are reopened.
func TestRecoveryAfterRestart(t *testing.T) {
	dir := t.TempDir()
	out := t.TempDir()
	ups := map[string]Upstream{"up": &FolderUpstream{Dir: out, NoSync: true}}
	r := newDLRig(t, dir, ups, nil)
	var ids []uint64
	for i := range 5 {
		rc := r.submit([]byte(htmlMsg), fmt.Sprintf("r%d@x.test", i), "s@x.test")
		ids = append(ids, rc.CopyIDs...)
	}
	// A crash leaves a temporary file and an unrecorded body behind.
	os.WriteFile(filepath.Join(dir, "spool", "tmp-00000000000000ff.eml"), []byte("half"), 0o600)
	os.WriteFile(filepath.Join(dir, "spool", "00000000000000fe.eml"), []byte("never got 250"), 0o600)
	r.close()

	r2 := newDLRig(t, dir, ups, nil)
	if n, err := r2.spool.Recover(); err != nil || n != 2 {
		t.Errorf("Recover removed %d files (%v), want 2", n, err)
	}
	r2.run()
	dlWait(t, "10 files", func() bool { n, _ := readDir(out); return len(n) == 10 })
	for _, id := range ids {
		if _, err := os.Stat(filepath.Join(out, store.FormatID(id)+".eml")); err != nil {
			t.Errorf("copy %s not delivered: %v", store.FormatID(id), err)
		}
	}
	dlWait(t, "spool emptied", func() bool { return len(r2.spoolFiles()) == 0 })
}

// TestShutdownAbandonsStalledTry: a try stuck at the upstream is abandoned
// at shutdown and stays queued; the next start delivers it.
func TestShutdownAbandonsStalledTry(t *testing.T) {
	dir := t.TempDir()
	u := newScriptedUpstream(t, "none", nil, func(int, string) string { return upStall })
	up, _ := NewSMTPUpstream(SMTPUpstreamConfig{Name: "up", Host: "127.0.0.1", Port: u.port(), TLS: "none"})
	r := newDLRig(t, dir, map[string]Upstream{"up": up}, nil)
	r.run()
	rc := r.submit([]byte(htmlMsg), "stuck@x.test")
	dlWait(t, "the try to start", func() bool { u.mu.Lock(); defer u.mu.Unlock(); return u.tries > 0 })
	time.Sleep(50 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	err := r.q.Shutdown(ctx)
	cancel()
	if err == nil {
		t.Error("Shutdown returned nil with a try stuck")
	}
	r.q = nil
	if c := r.copyState(rc.CopyIDs[0]); c.State != store.CopyQueued || c.Attempts != 0 {
		t.Fatalf("abandoned copy %+v: want queued, no attempt counted", c)
	}
	r.close()

	out := t.TempDir()
	r2 := newDLRig(t, dir, map[string]Upstream{"up": &FolderUpstream{Dir: out, NoSync: true}}, nil)
	r2.run()
	dlWait(t, "delivery after restart", func() bool { return r2.copyState(rc.CopyIDs[0]).State == store.CopyDelivered })
}

func TestUnknownUpstreamDefers(t *testing.T) {
	r := newDLRig(t, "", map[string]Upstream{}, nil)
	r.run()
	rc := r.submit([]byte(htmlMsg), "x@x.test")
	dlWait(t, "a failed try", func() bool { return r.copyState(rc.CopyIDs[0]).Attempts > 0 })
	if c := r.copyState(rc.CopyIDs[0]); c.State != store.CopyQueued || !strings.Contains(c.LastReply, "no upstream") {
		t.Errorf("copy %+v", c)
	}
}

func TestSpoolRefusals(t *testing.T) {
	r := newDLRig(t, "", nil, nil)
	big := append([]byte("Subject: big\r\n\r\n"), bytes.Repeat([]byte("x"), 1<<20)...)
	bad := []byte("Subject: x\r\nX-Smtpeter-TrackClicks: maybe\r\n\r\nbody\r\n")
	for _, wrap := range []struct {
		name string
		fn   func(io.Reader) io.Reader
	}{{"plain", func(r io.Reader) io.Reader { return r }}, {"onebyte", iotest.OneByteReader}, {"half", iotest.HalfReader}} {
		t.Run(wrap.name, func(t *testing.T) {
			_, err := r.spool.Submit(context.Background(), &Submission{Cred: dlCred, From: "a@x.test", Recipients: []string{"b@x.test"}}, wrap.fn(bytes.NewReader(big)))
			if err != ErrTooBig {
				t.Errorf("oversized: err %v, want ErrTooBig", err)
			}
			_, err = r.spool.Submit(context.Background(), &Submission{Cred: dlCred, From: "a@x.test", Recipients: []string{"b@x.test"}}, wrap.fn(bytes.NewReader(bad)))
			var ce *mime.ControlError
			if !errorsAs(err, &ce) {
				t.Errorf("bad control header: err %v, want *mime.ControlError", err)
			}
			_, err = r.spool.Submit(context.Background(), &Submission{Cred: dlCred, From: "a@x.test", Recipients: []string{"b@x.test"}}, iotest.TimeoutReader(iotest.OneByteReader(bytes.NewReader(big))))
			if err == nil || err == ErrTooBig {
				t.Errorf("read error: err %v", err)
			}
			if files := r.spoolFiles(); len(files) != 0 {
				t.Errorf("refused submissions left %v in the spool", files)
			}
		})
	}
	// Tags are bounded: 20 distinct ones of at most 100 bytes are taken
	// (duplicates do not count), one more, or a longer one, is refused with
	// the reply naming the header and the limit.
	var tags []string
	for i := 0; i < mime.MaxTags; i++ {
		tags = append(tags, fmt.Sprintf("t%d", i))
	}
	ok := "Subject: t\r\nX-Smtpeter-Tags: " + strings.Join(tags, ",") + "," + tags[0] + "\r\n\r\nbody\r\n"
	if _, err := r.spool.Submit(context.Background(), &Submission{Cred: dlCred, From: "a@x.test", Recipients: []string{"b@x.test"}}, strings.NewReader(ok)); err != nil {
		t.Errorf("%d tags: %v", mime.MaxTags, err)
	}
	for _, bad := range []string{
		"X-Smtpeter-Tags: " + strings.Join(tags, ",") + "\r\nX-Smtpeter-Tags: one-more\r\n",
		"X-Smtpeter-Tags: " + strings.Repeat("x", mime.MaxTagLen+1) + "\r\n",
	} {
		_, err := r.spool.Submit(context.Background(), &Submission{Cred: dlCred, From: "a@x.test", Recipients: []string{"b@x.test"}}, strings.NewReader("Subject: t\r\n"+bad+"\r\nbody\r\n"))
		var ce *mime.ControlError
		if !errorsAs(err, &ce) || ce.Header != "x-smtpeter-tags" || ce.Reason == "" {
			t.Errorf("too many or too long tags: err %v, want a *mime.ControlError for x-smtpeter-tags", err)
		}
		if se, _ := replyError(slog.New(slog.DiscardHandler), "data", err, 0).(*smtp.SMTPError); se == nil || se.Code != 550 || !strings.Contains(se.Message, "x-smtpeter-tags") {
			t.Errorf("reply %v, want 550 naming the header", se)
		}
	}
	// Exactly at the limit is fine.
	exact := append([]byte("Subject: e\r\n\r\n"), bytes.Repeat([]byte("y"), 1<<20-16)...)
	if _, err := r.spool.Submit(context.Background(), &Submission{Cred: dlCred, From: "a@x.test", Recipients: []string{"b@x.test"}}, iotest.HalfReader(bytes.NewReader(exact))); err != nil {
		t.Errorf("message of exactly the limit: %v", err)
	}
}

func TestSpoolStreamsWithChunking(t *testing.T) {
	r := newDLRig(t, "", nil, nil)
	msgs := corpusMessages(t, 20)
	for name, msg := range msgs {
		for _, wrap := range []func(io.Reader) io.Reader{iotest.OneByteReader, iotest.HalfReader} {
			rc, err := r.spool.Submit(context.Background(), &Submission{Cred: dlCred, From: "a@x.test", Recipients: []string{"b@x.test"}}, wrap(bytes.NewReader(msg)))
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			m, err := r.st.Message(context.Background(), rc.MessageID)
			if err != nil {
				t.Fatal(err)
			}
			f, err := r.spool.Open(m)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(f)
			f.Close()
			if m.Size != int64(len(got)) {
				t.Fatalf("%s: spooled %d bytes, recorded %d", name, len(got), m.Size)
			}
			unspoolCheck(t, got, msg)
		}
	}
}

func TestEffectiveSettings(t *testing.T) {
	r := newDLRig(t, "", nil, nil)
	f, tr := false, true
	for _, tc := range []struct {
		name       string
		header     string
		rest       *bool
		cred, want bool
	}{
		{"credential", "", nil, true, true},
		{"rest-over-credential", "", &f, true, false},
		{"header-over-rest", "X-Smtpeter-TrackClicks: yes\r\n", &f, false, true},
		{"header-off", "X-Smtpeter-TrackClicks: off\r\n", &tr, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cred := *dlCred
			cred.Clicks = tc.cred
			msg := "Subject: s\r\n" + tc.header + "\r\nbody\r\n"
			rc, err := r.spool.Submit(context.Background(), &Submission{Cred: &cred, From: "a@x.test", Recipients: []string{"b@x.test"}, Clicks: tc.rest, Tags: []string{"api"}}, strings.NewReader(msg))
			if err != nil {
				t.Fatal(err)
			}
			c := r.copyState(rc.CopyIDs[0])
			if c.Clicks != tc.want {
				if tc.header != "" && !controlsParsed() {
					t.Skip("mime.ParseControls is not built yet (issue 3)")
				}
				t.Errorf("clicks = %v, want %v", c.Clicks, tc.want)
			}
			if c.Account != "acct" || c.Credential != "app" || c.Upstream != "up" || c.Tags[len(c.Tags)-1] != "api" {
				t.Errorf("copy %+v", c)
			}
		})
	}
}

func controlsParsed() bool {
	var b bytes.Buffer
	rep, _ := mime.Rewrite(&b, strings.NewReader("X-Smtpeter-Tags: a\r\n\r\nx"), mime.Options{}, func(mime.Controls) (mime.Tracker, error) { return nil, nil })
	return len(rep.Controls.Tags) == 1
}
