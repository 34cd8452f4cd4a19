package smtpd

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/trackrelay/trackrelay/rewrite"
	"github.com/trackrelay/trackrelay/store"
)

// The inbound spool: what the MX listener takes is made durable before
// the 250 (a file of its own: written to a temporary name, fsynced,
// renamed, the folder fsynced), then a processor classifies it
// (package inbound), joins it to its copy and records it (mxrecord.go).
// The processor resumes the folder's files after a crash; recording is
// idempotent (every event carries a key made of the file's name), so a
// file processed but not yet removed when the process died is recorded
// once.
//
// Files are named by a time-ordered id and read in that order:
//
//	<id>.msg        TRACKRELAY-INBOUND 1 {envelope JSON}\n, then the message as it came
//	unclaimed/      messages of no account (postmaster mail, reports of unknown domains), kept for the operator
//	failed/         files the processor cannot read (a damaged envelope line), kept for the operator

// InboundStore is what the inbound side needs from the store; every
// store.DB backend implements it.
type InboundStore interface {
	store.RecordStore
	NextID() uint64
	Copy(ctx context.Context, id uint64) (*store.Copy, error)
	RecordReturned(ctx context.Context, events []store.Event, bounced []uint64, lists []store.AddressEntry) error
	EventsByRecipient(ctx context.Context, account, recipient string, from, to time.Time) iter.Seq2[store.Event, error]
}

var _ InboundStore = (store.DB)(nil)

// InboundConfig configures an Inbound.
type InboundConfig struct {
	Dir   string       // the inbound spool folder; created if missing
	Store InboundStore // required
	// VERP reads VERP addresses (the token codec, the bounce domains);
	// required.
	VERP *VERP
	// ReportAddresses take DMARC and feedback-loop reports; their
	// LOCAL+ACCOUNT@DOMAIN forms name an account. Lower case.
	ReportAddresses []string
	// Postmaster lists the domains whose postmaster@ is taken (RFC 5321
	// §4.5.1), besides the bounce domains; its mail is kept unclaimed.
	Postmaster []string
	// IsClickDomain says whether host serves tracked links: a bounce
	// without a VERP token is joined by a link token in the message it
	// returns, read at these hosts only. Nil: no such joins.
	IsClickDomain func(ctx context.Context, host string) bool
	// SoftBounceLimit and SoftBounceWindow are the relay's defaults for
	// accounts without their own: that many soft bounces of an address
	// within the window suppress it; a limit below 0 never does.
	SoftBounceLimit  int
	SoftBounceWindow time.Duration
	// MaxMessageBytes bounds a message (larger: ErrTooBig); required.
	MaxMessageBytes int64
	// MinFreeBytes is the free space kept on the folder's file system;
	// 0 turns the check off.
	MinFreeBytes int64
	// MaxUnclaimed bounds the files kept in unclaimed/; default 1000.
	MaxUnclaimed int
	NoSync       bool // skip fsync: tests and benchmarks only
	Logger       *slog.Logger
	Registerer   prometheus.Registerer
	Now          func() time.Time
}

// Inbound is the inbound spool and its processor. It implements
// Submitter (the MX session hands it each message) and SpaceChecker.
type Inbound struct {
	cfg InboundConfig
	log *slog.Logger

	wake   chan struct{}
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once

	mu      sync.Mutex
	started bool

	m inboundMetrics
}

type inboundMetrics struct {
	received  *prometheus.CounterVec
	processed *prometheus.CounterVec
	rcpt      *prometheus.CounterVec
	backlog   prometheus.GaugeFunc
}

var (
	_ Submitter    = (*Inbound)(nil)
	_ SpaceChecker = (*Inbound)(nil)
)

// Subfolders of the inbound spool.
const (
	inboundUnclaimed = "unclaimed"
	inboundFailed    = "failed"
	inboundMagic     = "TRACKRELAY-INBOUND 1 "
	inboundExt       = ".msg"
	maxEnvelopeLine  = 1 << 20
)

// NewInbound opens the inbound spool, creating its folders, and removes
// what a crash left half written. Call Run to start the processor.
func NewInbound(cfg InboundConfig) (*Inbound, error) {
	if cfg.Dir == "" || cfg.Store == nil || cfg.VERP == nil || cfg.MaxMessageBytes <= 0 {
		return nil, errors.New("smtpd: inbound: Dir, Store, VERP and MaxMessageBytes are required")
	}
	if cfg.SoftBounceWindow <= 0 {
		cfg.SoftBounceWindow = 14 * 24 * time.Hour
	}
	if cfg.MaxUnclaimed <= 0 {
		cfg.MaxUnclaimed = 1000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	for i, a := range cfg.ReportAddresses {
		cfg.ReportAddresses[i] = strings.ToLower(strings.TrimSpace(a))
	}
	for _, d := range []string{cfg.Dir, filepath.Join(cfg.Dir, inboundUnclaimed), filepath.Join(cfg.Dir, inboundFailed)} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("smtpd: inbound: %w", err)
		}
	}
	ents, err := os.ReadDir(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("smtpd: inbound: %w", err)
	}
	for _, e := range ents {
		if !e.IsDir() && strings.HasPrefix(e.Name(), tmpPrefix) {
			// Never answered 250: the client sends it again.
			_ = os.Remove(filepath.Join(cfg.Dir, e.Name()))
		}
	}
	in := &Inbound{cfg: cfg, log: cfg.Logger, wake: make(chan struct{}, 1), done: make(chan struct{})}
	in.m.received = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trackrelay_mx_messages_total", Help: "Messages at the end of DATA on the MX listener, by result (accepted, refused).",
	}, []string{"result"})
	in.m.rcpt = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trackrelay_mx_recipients_total", Help: "RCPT TO on the MX listener, by result (verp, report, postmaster, refused).",
	}, []string{"result"})
	in.m.processed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "trackrelay_inbound_processed_total", Help: "Messages that came back, by what they were (bounce, delayed, complaint, dmarc, response, ...) once recorded; unclaimed: of no account, kept for the operator.",
	}, []string{"kind"})
	in.m.backlog = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "trackrelay_inbound_backlog", Help: "Messages in the inbound spool waiting to be processed.",
	}, func() float64 { return float64(len(in.pending())) })
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{in.m.received, in.m.rcpt, in.m.processed, in.m.backlog} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("smtpd: inbound: metrics: %w", err)
			}
		}
	}
	return in, nil
}

// inboundEnvelope is the envelope line of a spooled message.
type inboundEnvelope struct {
	From     string    `json:"from"`
	Rcpt     []string  `json:"rcpt"`
	Received time.Time `json:"received"`
	Remote   string    `json:"remote,omitempty"`
	Helo     string    `json:"helo,omitempty"`
	TLS      bool      `json:"tls,omitempty"`
	SMTPUTF8 bool      `json:"smtputf8,omitempty"`
}

// CheckSpace implements SpaceChecker, like the spool's.
func (in *Inbound) CheckSpace(size int64) error {
	if in.cfg.MinFreeBytes <= 0 {
		return nil
	}
	free, err := freeBytes(in.cfg.Dir)
	if err != nil {
		in.log.Warn("inbound spool free space unknown", "err", err)
		return nil
	}
	if free-max(size, 0) < in.cfg.MinFreeBytes {
		in.log.Warn("inbound spool low on disk space, refusing mail", "free_bytes", free, "min_free_bytes", in.cfg.MinFreeBytes)
		return ErrInsufficientStorage
	}
	return nil
}

// Submit implements Submitter for the MX session: it makes the message
// durable in the inbound spool and wakes the processor. The receipt's id
// names the file; it holds no copies (every "copy id" is the file's id).
func (in *Inbound) Submit(ctx context.Context, sub *Submission, body io.Reader) (*Receipt, error) {
	if sub == nil || len(sub.Recipients) == 0 {
		return nil, errors.New("smtpd: inbound: a message needs recipients")
	}
	if err := in.CheckSpace(sub.Size); err != nil {
		return nil, err
	}
	env := inboundEnvelope{From: sub.From, Rcpt: sub.Recipients, Received: in.cfg.Now().UTC(), Remote: sub.RemoteAddr, SMTPUTF8: sub.SMTPUTF8}
	if tr := sub.Trace; tr != nil {
		env.Helo, env.TLS = printable(tr.Helo, 255), tr.TLSVersion != 0
	}
	line, err := json.Marshal(&env)
	if err != nil {
		return nil, fmt.Errorf("smtpd: inbound: %w", err)
	}
	id := in.cfg.Store.NextID()
	name := store.FormatID(id) + inboundExt
	tmp := filepath.Join(in.cfg.Dir, tmpPrefix+name)
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("smtpd: inbound: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	bw := bufio.NewWriterSize(f, 64<<10)
	cw := &countWriter{w: bw}
	_, _ = io.WriteString(cw, inboundMagic)
	_, _ = cw.Write(line)
	_, _ = io.WriteString(cw, "\n")
	lim := &spoolLimit{r: body, n: in.cfg.MaxMessageBytes}
	if _, err := io.Copy(cw, lim); err != nil {
		if cw.err != nil {
			return nil, in.diskErr("write", cw.err)
		}
		if errors.Is(err, ErrTooBig) {
			return nil, ErrTooBig
		}
		return nil, fmt.Errorf("smtpd: inbound: read: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return nil, in.diskErr("write", err)
	}
	if !in.cfg.NoSync {
		if err := f.Sync(); err != nil {
			return nil, in.diskErr("fsync", err)
		}
	}
	if err := f.Close(); err != nil {
		return nil, in.diskErr("close", err)
	}
	final := filepath.Join(in.cfg.Dir, name)
	if err := os.Rename(tmp, final); err != nil {
		return nil, fmt.Errorf("smtpd: inbound: %w", err)
	}
	ok = true
	if !in.cfg.NoSync {
		if err := syncDir(in.cfg.Dir); err != nil {
			os.Remove(final)
			return nil, in.diskErr("fsync folder", err)
		}
	}
	in.m.received.WithLabelValues("accepted").Inc()
	in.log.Info("inbound message spooled", "file", name, "rcpts", len(sub.Recipients), "bytes", cw.n, "null_sender", sub.From == "")
	select {
	case in.wake <- struct{}{}:
	default:
	}
	ids := make([]uint64, len(sub.Recipients))
	for i := range ids {
		ids[i] = id
	}
	return &Receipt{MessageID: id, CopyIDs: ids}, nil
}

// diskErr wraps a failure to write a spool file; a full disk is
// ErrInsufficientStorage (452 4.3.1).
func (in *Inbound) diskErr(op string, err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w: %s: %w", ErrInsufficientStorage, op, err)
	}
	return fmt.Errorf("smtpd: inbound: %s: %w", op, err)
}

// Run starts the processor: it works through the files already in the
// folder (a restart resumes them), then each new one. Call it once;
// Shutdown stops it.
func (in *Inbound) Run() {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.started {
		return
	}
	in.started = true
	ctx, cancel := context.WithCancel(context.Background())
	in.cancel = cancel
	go func() {
		defer close(in.done)
		in.loop(ctx)
	}()
}

// Shutdown stops the processor after the message in hand, or when ctx
// ends (what is left stays in the folder for the next start).
func (in *Inbound) Shutdown(ctx context.Context) error {
	in.mu.Lock()
	started := in.started
	in.mu.Unlock()
	if !started {
		return nil
	}
	in.once.Do(in.cancel)
	select {
	case <-in.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// pending lists the spooled messages waiting, oldest first.
func (in *Inbound) pending() []string {
	ents, err := os.ReadDir(in.cfg.Dir)
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range ents {
		if n := e.Name(); !e.IsDir() && strings.HasSuffix(n, inboundExt) && !strings.HasPrefix(n, tmpPrefix) {
			names = append(names, n)
		}
	}
	slices.Sort(names) // ids sort by time
	return names
}

// loop is the processor. A message whose recording fails (the store) is
// retried with a growing delay, in its turn: later ones wait, so what
// comes back is recorded in order.
func (in *Inbound) loop(ctx context.Context) {
	delay := time.Duration(0)
	for {
		failed := false
		for _, name := range in.pending() {
			if ctx.Err() != nil {
				return
			}
			if err := in.handle(ctx, name); err != nil {
				if ctx.Err() != nil {
					return
				}
				delay = min(max(2*delay, time.Second), time.Minute)
				in.log.Error("inbound message not recorded; will retry", "file", name, "retry_in", delay, "err", err)
				failed = true
				break
			}
			delay = 0
		}
		var retry <-chan time.Time
		var t *time.Timer
		if failed {
			t = time.NewTimer(delay)
			retry = t.C
		}
		select {
		case <-ctx.Done():
		case <-in.wake:
		case <-retry:
		}
		if t != nil {
			t.Stop()
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// handle processes one spooled file: read, classify, record, then remove
// (or keep it unclaimed). The error is a failure to record: the file stays.
func (in *Inbound) handle(ctx context.Context, name string) (err error) {
	path := filepath.Join(in.cfg.Dir, name)
	defer func() {
		if p := recover(); p != nil {
			in.log.Error("inbound processing panicked; message kept in failed/", "file", name, "panic", p)
			in.keep(path, inboundFailed)
			err = nil
		}
	}()
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("smtpd: inbound: %w", err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 64<<10)
	env, err := readEnvelope(br)
	if err != nil {
		in.log.Error("inbound message unreadable; kept in failed/", "file", name, "err", err)
		f.Close()
		in.keep(path, inboundFailed)
		return nil
	}
	out, err := in.record(ctx, strings.TrimSuffix(name, inboundExt), env, br)
	var ue *unreadableError
	if errors.As(err, &ue) {
		in.log.Error("inbound message unreadable; kept in failed/", "file", name, "err", err)
		f.Close()
		in.keep(path, inboundFailed)
		return nil
	}
	if err != nil {
		return err
	}
	f.Close()
	in.m.processed.WithLabelValues(out.kind).Inc()
	if out.unclaimed != "" {
		in.log.Warn("inbound message of no account; kept for the operator in unclaimed/", "file", name, "kind", out.kind, "why", out.unclaimed)
		in.keep(path, inboundUnclaimed)
		in.trimUnclaimed()
		return nil
	}
	in.log.Info("inbound message recorded", "file", name, "kind", out.kind, "events", out.events, "account", out.account)
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		in.log.Error("inbound message recorded but not removed; it will be recorded again (idempotently)", "file", name, "err", err)
	}
	return nil
}

// readEnvelope reads the envelope line of a spooled message.
func readEnvelope(br *bufio.Reader) (*inboundEnvelope, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		line = append(line, chunk...)
		if err == nil {
			break
		}
		if !errors.Is(err, bufio.ErrBufferFull) || len(line) > maxEnvelopeLine {
			return nil, fmt.Errorf("smtpd: inbound: envelope line: %w", err)
		}
	}
	rest, ok := strings.CutPrefix(string(line), inboundMagic)
	if !ok {
		return nil, errors.New("smtpd: inbound: not an inbound spool file")
	}
	var env inboundEnvelope
	if err := json.Unmarshal([]byte(rest), &env); err != nil {
		return nil, fmt.Errorf("smtpd: inbound: envelope line: %w", err)
	}
	if env.Received.IsZero() {
		return nil, errors.New("smtpd: inbound: envelope line without a time")
	}
	return &env, nil
}

// keep moves a spooled file into a subfolder for the operator.
func (in *Inbound) keep(path, sub string) {
	dst := filepath.Join(in.cfg.Dir, sub, filepath.Base(path))
	if err := os.Rename(path, dst); err != nil {
		in.log.Error("inbound message could not be moved; it stays in the spool", "file", filepath.Base(path), "to", sub, "err", err)
		return
	}
	if !in.cfg.NoSync {
		_ = syncDir(filepath.Join(in.cfg.Dir, sub))
		_ = syncDir(in.cfg.Dir)
	}
}

// trimUnclaimed keeps unclaimed/ within MaxUnclaimed files, oldest out.
func (in *Inbound) trimUnclaimed() {
	dir := filepath.Join(in.cfg.Dir, inboundUnclaimed)
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) <= in.cfg.MaxUnclaimed {
		return
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	slices.Sort(names)
	for _, n := range names[:len(names)-in.cfg.MaxUnclaimed] {
		if os.Remove(filepath.Join(dir, n)) == nil {
			in.log.Warn("unclaimed inbound message removed: the folder is full (inbound.max_unclaimed)", "file", n)
		}
	}
}

// codec is the token codec shared with VERP.
func (in *Inbound) codec() *rewrite.Codec { return in.cfg.VERP.Codec() }
