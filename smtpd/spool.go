package smtpd

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/emersion/go-message/textproto"
	"github.com/emersion/go-smtp"

	"github.com/trackrelay/trackrelay/mime"
	"github.com/trackrelay/trackrelay/store"
)

// SpoolConfig configures a Spool.
type SpoolConfig struct {
	Dir             string // spool folder; created if missing
	Store           Store  // where messages and copies are recorded
	MaxMessageBytes int64  // required: larger messages get ErrTooBig
	// MaxHeaderBytes bounds the top-level header read for control
	// headers; default 1 MiB. A longer header is passed through untracked
	// by nothing: the message is spooled, its controls are not read.
	MaxHeaderBytes int64
	// Enqueue, if set, is handed the copies of every message once they are
	// durable. Delivery's Queue.Add fits.
	Enqueue func([]*store.Copy)
	// Hostname names the relay in the Received field it adds to every
	// message, and in the Message-ID it adds where one is missing;
	// default "localhost".
	Hostname string
	// MinFreeBytes is the free space the spool's file system keeps: below
	// it (counting the declared size of the message) submissions are
	// refused with ErrInsufficientStorage, so the disk never fills with
	// mail. 0 turns the check off.
	MinFreeBytes int64
	// NoSync skips fsync. Only for tests and benchmarks.
	NoSync bool
	Logger *slog.Logger
	Now    func() time.Time
}

// Spool makes submitted messages durable: the body in a file of its own,
// the message and one copy per recipient in the store. It implements
// Submitter. It is safe for concurrent use.
type Spool struct {
	cfg SpoolConfig
	log *slog.Logger
}

var _ Submitter = (*Spool)(nil)

// NewSpool opens the spool folder, creating it if needed.
func NewSpool(cfg SpoolConfig) (*Spool, error) {
	if cfg.Store == nil || cfg.Dir == "" || cfg.MaxMessageBytes <= 0 {
		return nil, errors.New("smtpd: spool: Dir, Store and MaxMessageBytes are required")
	}
	if cfg.MaxHeaderBytes <= 0 {
		cfg.MaxHeaderBytes = 1 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Hostname == "" {
		cfg.Hostname = "localhost"
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("smtpd: spool: %w", err)
	}
	s := &Spool{cfg: cfg, log: cfg.Logger}
	if !cfg.NoSync {
		// The folder's fsync makes renamed spool files durable; the store
		// runs it once per group commit, before the records that point
		// to them (one fsync for every message in the group).
		cfg.Store.SetBeforeCommit(func() error { return syncDir(cfg.Dir) })
	}
	return s, nil
}

// Close releases the spool. Submissions must have ended.
func (s *Spool) Close() error { return nil }

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

func spoolName(id uint64) string { return store.FormatID(id) + ".eml" }

const tmpPrefix = "tmp-"

// Open opens the spooled body of message m for reading.
func (s *Spool) Open(m *store.Message) (*os.File, error) {
	f, err := os.Open(filepath.Join(s.cfg.Dir, filepath.Base(m.SpoolPath)))
	if err != nil {
		return nil, fmt.Errorf("smtpd: spool: %w", err)
	}
	return f, nil
}

// Remove deletes the spooled body of message m, once all its copies are
// final.
func (s *Spool) Remove(m *store.Message) error {
	err := os.Remove(filepath.Join(s.cfg.Dir, filepath.Base(m.SpoolPath)))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("smtpd: spool: %w", err)
	}
	return nil
}

// Recover removes what a crash left behind: temporary files, and spooled
// bodies that no message with copies left points to (written, but the
// client never got its 250). Run it at start-up, before serving.
func (s *Spool) Recover() (removed int, err error) {
	keep := map[string]bool{}
	if err := s.cfg.Store.SpoolFiles(context.Background(), func(name string) { keep[filepath.Base(name)] = true }); err != nil {
		return 0, err
	}
	ents, err := os.ReadDir(s.cfg.Dir)
	if err != nil {
		return 0, fmt.Errorf("smtpd: spool: %w", err)
	}
	for _, e := range ents {
		if e.IsDir() || keep[e.Name()] {
			continue
		}
		if strings.HasPrefix(e.Name(), tmpPrefix) || strings.HasSuffix(e.Name(), ".eml") {
			if os.Remove(filepath.Join(s.cfg.Dir, e.Name())) == nil {
				removed++
			}
		}
	}
	return removed, nil
}

// spoolLimit passes at most n bytes and then fails with ErrTooBig if more
// follow, so an oversized message is refused while it streams.
type spoolLimit struct {
	r   io.Reader
	n   int64
	err error // first error seen, sticky
}

func (l *spoolLimit) Read(p []byte) (int, error) {
	if l.err != nil {
		return 0, l.err
	}
	if l.n <= 0 {
		var one [1]byte
		k, err := io.ReadFull(l.r, one[:])
		if k > 0 {
			l.err = ErrTooBig
		} else if err == io.ErrUnexpectedEOF || err == io.EOF {
			l.err = io.EOF
		} else {
			l.err = err
		}
		return 0, l.err
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	k, err := l.r.Read(p)
	l.n -= int64(k)
	if err != nil {
		l.err = err
	}
	return k, err
}

// headerCap stops the header phase after n bytes.
type headerCap struct {
	r   io.Reader
	n   int64
	hit bool
}

var errHeaderTooLong = errors.New("smtpd: header too long")

func (h *headerCap) Read(p []byte) (int, error) {
	if h.n <= 0 {
		h.hit = true
		return 0, errHeaderTooLong
	}
	if int64(len(p)) > h.n {
		p = p[:h.n]
	}
	k, err := h.r.Read(p)
	h.n -= int64(k)
	return k, err
}

// Submit implements Submitter: it streams body into the spool, reads the
// control headers on the way, and returns once the body, the message and
// its copies are on disk. Nothing of a failed submission stays behind.
func (s *Spool) Submit(ctx context.Context, sub *Submission, body io.Reader) (*Receipt, error) {
	if sub == nil || sub.Cred == nil || len(sub.Recipients) == 0 {
		return nil, errors.New("smtpd: spool: submission needs a credential and recipients")
	}
	if err := s.CheckSpace(sub.Size); err != nil {
		return nil, err
	}
	keep, refused, notrack := s.screen(ctx, sub)
	if len(keep) == 0 {
		return nil, &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: refused[0].Reason}
	}
	if len(refused) > 0 {
		cp := *sub
		cp.Recipients = keep
		sub = &cp
	}
	st := s.cfg.Store
	msgID := st.NextID()
	name := spoolName(msgID)
	tmp := filepath.Join(s.cfg.Dir, tmpPrefix+name)
	final := filepath.Join(s.cfg.Dir, name)
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("smtpd: spool: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()

	now := s.cfg.Now().UTC()
	ctrl, sum, size, err := s.write(f, body, sub, msgID, now)
	if err != nil {
		return nil, err
	}
	if !s.cfg.NoSync {
		if err := f.Sync(); err != nil {
			return nil, s.diskErr("fsync", err)
		}
	}
	if err := f.Close(); err != nil {
		return nil, s.diskErr("close", err)
	}
	if err := os.Rename(tmp, final); err != nil {
		return nil, fmt.Errorf("smtpd: spool: %w", err)
	}
	ok = true
	committed := false
	defer func() {
		if !committed {
			os.Remove(final)
		}
	}()
	m := &store.Message{
		ID: msgID, SpoolPath: name, Size: size, From: sub.From,
		Recipients: slices.Clone(sub.Recipients), SMTPUTF8: sub.SMTPUTF8, Body8Bit: sub.Body8Bit,
		Created: now, Remaining: len(sub.Recipients),
		Account: sub.Cred.Account, Credential: sub.Cred.Username, Subject: sum.subject, HeaderFrom: sum.from,
	}
	copies, events := s.makeCopies(m, sub, ctrl, now, notrack)
	if len(copies) > 0 {
		m.Tags = copies[0].Tags
	}
	if err := st.AddMessage(ctx, m, copies, events); err != nil {
		return nil, fmt.Errorf("smtpd: spool: record: %w", err)
	}
	committed = true
	rc := &Receipt{MessageID: msgID, CopyIDs: make([]uint64, len(copies)), Refused: refused}
	for i, c := range copies {
		rc.CopyIDs[i] = c.ID
	}
	if s.cfg.Enqueue != nil {
		s.cfg.Enqueue(copies)
	}
	return rc, nil
}

// write streams body into f, reading the top-level header's controls on
// the way. A malformed or over-long header is not an error: the message
// is spooled and its controls count as absent. Before the message it
// writes the Received field, and at the end of its header the Date and
// Message-ID fields the sender left out (a header it cannot read gets
// only the Received field). Everything else is written as it came.
func (s *Spool) write(f *os.File, body io.Reader, sub *Submission, id uint64, now time.Time) (mime.Controls, headerSummary, int64, error) {
	lim := &spoolLimit{r: body, n: s.cfg.MaxMessageBytes}
	bw := bufio.NewWriterSize(f, 64<<10)
	cw := &countWriter{w: bw}
	// The header is held (at most MaxHeaderBytes, plus what the reader
	// below buffered of the body) until it is known what it lacks.
	var held bytes.Buffer
	hc := &headerCap{r: io.TeeReader(lim, &held), n: s.cfg.MaxHeaderBytes}
	br := bufio.NewReaderSize(hc, 16<<10)
	h, herr := textproto.ReadHeader(br)
	var ctrl mime.Controls
	var sum headerSummary
	switch {
	case lim.err != nil && lim.err != io.EOF:
		return ctrl, sum, 0, s.readErr(lim.err)
	case herr == nil:
		c, err := mime.ParseControls(&h)
		if err != nil {
			var ce *mime.ControlError
			if errors.As(err, &ce) {
				return ctrl, sum, 0, ce
			}
			return ctrl, sum, 0, fmt.Errorf("smtpd: spool: control headers: %w", err)
		}
		ctrl = c
		sum = summarize(&h)
	default:
		s.log.Debug("spool header unreadable, controls ignored", "err", herr)
	}
	raw := held.Bytes()
	eol := "\r\n"
	if i := bytes.IndexByte(raw, '\n'); i == 0 || i > 0 && raw[i-1] != '\r' {
		eol = "\n"
	}
	_, _ = io.WriteString(cw, receivedField(sub.Trace, s.cfg.Hostname, id, sub.Recipients, sub.SMTPUTF8, now, eol))
	end := len(raw) - br.Buffered() // where ReadHeader stopped
	if at, ok := headerEnd(raw[:end]); herr == nil && ok {
		// ReadHeader stopped after the empty line that ends the header
		// (or at the end of a message that is all header); what br holds
		// beyond it is body.
		cw.Write(raw[:at])
		if !h.Has("Date") {
			_, _ = io.WriteString(cw, dateField(now, eol))
		}
		if !h.Has("Message-Id") {
			_, _ = io.WriteString(cw, messageIDField(s.cfg.Hostname, id, eol))
		}
		cw.Write(raw[at:])
	} else {
		cw.Write(raw)
	}
	// Everything br buffered has gone through the tee already.
	if _, err := io.Copy(cw, lim); err != nil {
		if cw.err != nil {
			return ctrl, sum, 0, s.diskErr("write", cw.err)
		}
		return ctrl, sum, 0, s.readErr(err)
	}
	if cw.err != nil {
		return ctrl, sum, 0, s.diskErr("write", cw.err)
	}
	if err := bw.Flush(); err != nil {
		return ctrl, sum, 0, s.diskErr("write", err)
	}
	return ctrl, sum, cw.n, nil
}

// headerEnd returns where fields may be added to a header block hdr (as
// ReadHeader consumed it): before its empty line, or after its last field
// when the message ends without one. ok is false when hdr is empty or does
// not end with a line ending.
func headerEnd(hdr []byte) (int, bool) {
	n := len(hdr)
	if n == 0 || hdr[n-1] != '\n' {
		return 0, false
	}
	switch {
	case n == 1 || hdr[n-2] == '\n':
		return n - 1, n > 1 // LF ending an LF line; a message that is one empty line has no header
	case hdr[n-2] == '\r' && (n == 2 || hdr[n-3] == '\n'):
		return n - 2, n > 2
	}
	return n, true // the last field's line: no empty line before the end
}

// diskErr wraps a failure to write the spool file; a full disk is
// ErrInsufficientStorage, so the client hears 452 4.3.1.
func (s *Spool) diskErr(op string, err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w: %s: %w", ErrInsufficientStorage, op, err)
	}
	return fmt.Errorf("smtpd: spool: %s: %w", op, err)
}

// HasSpace reports whether the spool's disk is above its floor (for
// /readyz: it logs nothing).
func (s *Spool) HasSpace() bool {
	if s.cfg.MinFreeBytes <= 0 {
		return true
	}
	free, err := freeBytes(s.cfg.Dir)
	return err != nil || free >= s.cfg.MinFreeBytes
}

// CheckSpace returns ErrInsufficientStorage when a message of size bytes
// (0: unknown) would leave less than SpoolConfig.MinFreeBytes free on the
// spool's file system. A free space that cannot be read does not refuse
// mail: the write itself still fails cleanly on a full disk.
func (s *Spool) CheckSpace(size int64) error {
	if s.cfg.MinFreeBytes <= 0 {
		return nil
	}
	free, err := freeBytes(s.cfg.Dir)
	if err != nil {
		s.log.Warn("spool free space unknown", "err", err)
		return nil
	}
	if free-max(size, 0) < s.cfg.MinFreeBytes {
		s.log.Warn("spool low on disk space, refusing mail", "free_bytes", free, "min_free_bytes", s.cfg.MinFreeBytes, "size", size)
		return ErrInsufficientStorage
	}
	return nil
}

func (s *Spool) readErr(err error) error {
	if errors.Is(err, ErrTooBig) {
		return ErrTooBig
	}
	return fmt.Errorf("smtpd: spool: read: %w", err)
}

type countWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (c *countWriter) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.err = err
	return n, err
}

// Effective settings, SPEC §4: header > REST property > credential.
func pick(header, rest *bool, cred bool) bool {
	if header != nil {
		return *header
	}
	if rest != nil {
		return *rest
	}
	return cred
}

func (s *Spool) makeCopies(m *store.Message, sub *Submission, ctrl mime.Controls, now time.Time, notrack map[string]bool) ([]*store.Copy, []store.Event) {
	cr := sub.Cred
	// Header tags are checked by mime.ParseControls and REST tags by the
	// API; the cap here keeps any other caller from storing unbounded tags
	// with every copy and event.
	var tags []string
	for _, t := range append(slices.Clone(ctrl.Tags), sub.Tags...) {
		t = strings.TrimSpace(t)
		if len(tags) < mime.MaxTags && t != "" && len(t) <= mime.MaxTagLen && !strings.ContainsRune(t, 0) && !slices.Contains(tags, t) {
			tags = append(tags, t)
		}
	}
	clicks := pick(ctrl.TrackClicks, sub.Clicks, cr.Clicks)
	opens := pick(ctrl.TrackOpens, sub.Opens, cr.Opens)
	scam := pick(ctrl.PreventScam, sub.PreventScam, cr.PreventScam)
	props, _ := json.Marshal(map[string]any{
		"trackclicks": clicks, "trackopens": opens, "preventscam": scam,
		"credential": cr.Username, "message": store.FormatID(m.ID), "size": m.Size,
	})
	untrackedProps, _ := json.Marshal(map[string]any{
		"trackclicks": false, "trackopens": false, "preventscam": scam, "notrack": true,
		"credential": cr.Username, "message": store.FormatID(m.ID), "size": m.Size,
	})
	copies := make([]*store.Copy, len(sub.Recipients))
	events := make([]store.Event, len(sub.Recipients))
	for i, rcpt := range sub.Recipients {
		c := &store.Copy{
			ID: s.cfg.Store.NextID(), MessageID: m.ID,
			Credential: cr.Username, Account: cr.Account, Upstream: cr.Upstream,
			Clicks: clicks, Opens: opens, PreventScam: scam, Text: cr.Text, TrackSigned: cr.TrackSigned,
			ClickDomain: cr.ClickDomain, Scheme: cr.Scheme, Tags: tags,
			From: m.From, Recipient: rcpt, SMTPUTF8: m.SMTPUTF8, Body8Bit: m.Body8Bit,
			Created: now, State: store.CopyQueued, NextAttempt: now,
		}
		p := props
		if notrack[rcpt] {
			// The reader asked not to be tracked: this copy goes as
			// written, and its attempts record says so.
			c.Clicks, c.Opens, p = false, false, untrackedProps
		}
		copies[i] = c
		events[i] = store.Event{
			Log: store.LogAttempts, Account: cr.Account, ID: c.ID, Time: now,
			Recipient: rcpt, Tags: tags,
			Fields: map[string]string{"envelope": m.From, "properties": string(p)},
		}
	}
	return copies, events
}
