package smtpd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/trackrelay/trackrelay/mime"
	"github.com/trackrelay/trackrelay/rewrite"
	"github.com/trackrelay/trackrelay/store"
)

// Tracker returns the rewrite.Tracker for copy c: a pure function of the
// copy's stored settings, so every try of a copy sends the same bytes.
func (q *Queue) Tracker(c *store.Copy) *rewrite.Tracker {
	return q.tracker(c, nil)
}

func (q *Queue) tracker(c *store.Copy, onLink func(uint32, rewrite.Kind, string)) *rewrite.Tracker {
	return rewrite.New(rewrite.Config{
		OnLink:       onLink,
		Clicks:       c.Clicks,
		Opens:        c.Opens,
		PreventScam:  c.PreventScam,
		Codec:        q.cfg.Codec,
		Scheme:       c.Scheme,
		Domain:       c.ClickDomain,
		MessageID:    c.ID,
		ClickDomains: q.cfg.ClickDomains,
	})
}

// WriteCopy writes copy c of the spooled message read from src to dst:
// the control headers stripped, and links and images tracked as c says.
func (q *Queue) WriteCopy(dst io.Writer, src io.Reader, c *store.Copy) error {
	return q.writeCopy(dst, src, c, nil, c.TrackSigned)
}

// writeCopy is WriteCopy telling onLink, when set, of every tracked URL,
// and tracking a DKIM-signed message when trackSigned (it is re-signed).
func (q *Queue) writeCopy(dst io.Writer, src io.Reader, c *store.Copy, onLink func(uint32, rewrite.Kind, string), trackSigned bool) error {
	// mime.Rewrite buffers src itself; the walk writes in small pieces, so
	// the output is buffered here, in a recycled buffer.
	bw := copyWriters.Get().(*bufio.Writer)
	bw.Reset(dst)
	defer func() {
		bw.Reset(nil)
		copyWriters.Put(bw)
	}()
	_, err := mime.Rewrite(bw, src, mime.Options{TrackText: c.Text && c.Clicks, TrackSigned: trackSigned}, func(mime.Controls) (mime.Tracker, error) {
		if !c.Clicks && !c.Opens {
			return nil, nil
		}
		return q.tracker(c, onLink), nil
	})
	if err != nil {
		return err
	}
	return bw.Flush()
}

// copyWriters recycles WriteCopy's output buffers.
var copyWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 32<<10) }}

// errLocal marks a failure on our side (the spool file), not the upstream.
type errLocal struct{ err error }

func (e errLocal) Error() string { return e.err.Error() }
func (e errLocal) Unwrap() error { return e.err }

// deliverCopy makes one try at c and records it.
func (q *Queue) deliverCopy(ctx context.Context, c *store.Copy) {
	log := q.log.With("copy", store.FormatID(c.ID), "message", store.FormatID(c.MessageID))
	up, ok := q.cfg.Upstreams[c.Upstream]
	var res Result
	var err error
	var msg *store.Message
	if !ok {
		err = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 5}, Message: "no upstream named " + strconv.Quote(c.Upstream)}
	} else if msg, err = q.cfg.Store.Message(ctx, c.MessageID); err == nil {
		var links *linkRecorder
		if c.Clicks && !q.linksKnown(ctx, c.MessageID) {
			links = &linkRecorder{}
		}
		res, err = q.try(ctx, up, msg, c, links)
		if links != nil && links.done {
			// Before the copy is recorded as delivered: no click can
			// come before its link is known (a crash in between sends
			// the copy again, and records them then).
			if lerr := q.cfg.Store.PutMessageLinks(context.Background(), c.MessageID, links.links); lerr != nil {
				log.Warn("recording the message's links failed; its clicks report the URLs readers asked for", "err", lerr)
			} else {
				q.linksRecorded(c.MessageID)
			}
		}
	}
	if ctx.Err() != nil && err != nil {
		// Shutting down: the try is abandoned, the copy stays queued.
		log.Info("delivery abandoned at shutdown")
		q.forget(c)
		return
	}
	now := q.cfg.Now().UTC()
	c.Attempts++
	var events []store.Event
	base := store.Event{Account: c.Account, ID: c.ID, Time: now, Recipient: c.Recipient, Tags: c.Tags}
	outcome := ""
	if err == nil {
		c.State = store.CopyDelivered
		c.LastReply = res.Reply
		e := base
		e.Log = store.LogDeliveries
		e.Fields = map[string]string{"envelope": c.From, "from": res.From, "to": res.To, "attempt": strconv.Itoa(c.Attempts)}
		events = append(events, e)
		outcome = "delivered"
		log.Info("delivered", "attempt", c.Attempts)
	} else {
		code, status, desc := describe(err)
		// Only the upstream's verdict on this message is final: a 5xx to
		// MAIL, RCPT or DATA. A 5xx while connecting (greeting, EHLO,
		// STARTTLS, AUTH) says the upstream or our settings for it are
		// wrong, such as a rotated smarthost password; bouncing every
		// queued copy for that would lose mail, so it is retried until
		// max_age like any other fault.
		permanent := code >= 500 && res.State != "connect"
		typ := "soft"
		switch {
		case permanent:
			typ = "hard"
			c.State = store.CopyFailed
		case now.Sub(c.Created) >= q.cfg.MaxAge:
			typ = "expired"
			c.State = store.CopyFailed
		default:
			c.NextAttempt = now.Add(q.backoff(c.Attempts))
		}
		c.LastReply = strings.TrimSpace(strconv.Itoa(code) + " " + desc)
		e := base
		e.Log = store.LogFailures
		e.Fields = map[string]string{
			"envelope": c.From, "attempt": strconv.Itoa(c.Attempts), "from": res.From, "to": res.To,
			"type": typ, "code": strconv.Itoa(code), "status": status, "description": desc, "state": res.State,
		}
		events = append(events, e)
		if c.Final() {
			outcome = "failed"
			log.Warn("delivery failed", "attempt", c.Attempts, "code", code, "type", typ, "state", res.State)
		} else {
			outcome = "deferred"
			log.Info("delivery deferred", "attempt", c.Attempts, "code", code, "retry_in", c.NextAttempt.Sub(now).String())
		}
	}
	q.m.deliveries.WithLabelValues(outcome).Inc()
	// Record even while shutting down: the try happened.
	last, serr := q.cfg.Store.UpdateCopy(context.Background(), c, events)
	if serr != nil {
		// Not recorded: keep it queued; a retry may deliver twice, which
		// costs less than losing mail.
		log.Error("delivery record failed", "err", serr)
		if c.State == store.CopyDelivered || c.State == store.CopyFailed {
			c.State = store.CopyQueued
		}
		c.NextAttempt = now.Add(q.backoff(c.Attempts))
		q.requeue(c)
		return
	}
	if last && msg != nil {
		if err := q.cfg.Spool.Remove(msg); err != nil {
			log.Error("spool remove failed", "err", err)
		}
	}
	q.requeue(c)
}

// try streams the copy through the rewrite into the upstream.
func (q *Queue) try(ctx context.Context, up Upstream, msg *store.Message, c *store.Copy, links *linkRecorder) (Result, error) {
	f, err := q.cfg.Spool.Open(msg)
	if err != nil {
		return Result{State: "connect"}, errLocal{err}
	}
	defer f.Close()
	env := Envelope{From: q.cfg.VERP.Sender(c), To: c.Recipient, SMTPUTF8: c.SMTPUTF8, Body8Bit: c.Body8Bit}
	sign, err := q.dkimPlan(c, f) // sign.go: the copy's DKIM keys, if any
	if err != nil {
		return Result{State: "connect"}, errLocal{err}
	}
	used := false
	ctx = WithFileName(ctx, store.FormatID(c.ID))
	return up.Deliver(ctx, env, sign.wrap(func(w io.Writer) error {
		if used {
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				return errLocal{err}
			}
		}
		used = true
		if links == nil {
			return q.writeCopy(w, f, c, nil, sign.trackSigned)
		}
		links.links = links.links[:0]
		err := q.writeCopy(w, f, c, links.add, sign.trackSigned)
		links.done = err == nil
		return err
	}))
}

// backoff is the delay before the next try after attempts tries.
func (q *Queue) backoff(attempts int) time.Duration {
	d := q.cfg.RetryBase
	for i := 1; i < attempts && d < q.cfg.RetryMax; i++ {
		d *= 2
	}
	return min(d, q.cfg.RetryMax)
}

// describe turns a delivery error into the failures log's code, status and
// description. Upstream replies keep their codes; network faults are
// 4.4.x; local faults 4.3.0. Unknown errors count as temporary.
func describe(err error) (code int, status, desc string) {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		code = se.Code
		if se.EnhancedCode != smtp.NoEnhancedCode && se.EnhancedCode != (smtp.EnhancedCode{}) {
			status = fmt.Sprintf("%d.%d.%d", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
		} else {
			status = fmt.Sprintf("%d.0.0", code/100)
		}
		return code, status, truncate(se.Message, 512)
	}
	var le errLocal
	if errors.As(err, &le) {
		return 451, "4.3.0", truncate(err.Error(), 512)
	}
	var ne interface{ Timeout() bool }
	if errors.As(err, &ne) && ne.Timeout() {
		return 451, "4.4.2", truncate(err.Error(), 512)
	}
	return 451, "4.4.1", truncate(err.Error(), 512)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// linkRecorder gathers a message's click links while its first copy is
// written (store.PutMessageLinks).
type linkRecorder struct {
	links []store.MessageLink
	done  bool // the copy was written to its end
}

// maxMessageLinks bounds the links recorded per message.
const maxMessageLinks = 10000

func (l *linkRecorder) add(pos uint32, kind rewrite.Kind, url string) {
	if kind == rewrite.KindClick && len(l.links) < maxMessageLinks {
		l.links = append(l.links, store.MessageLink{Position: pos, URL: url})
	}
}

// linksKnown reports whether message's links are recorded: from memory,
// else from the store (once per message and process).
func (q *Queue) linksKnown(ctx context.Context, message uint64) bool {
	q.linksMu.Lock()
	_, ok := q.links[message]
	q.linksMu.Unlock()
	if ok {
		return true
	}
	if has, err := q.cfg.Store.HasMessageLinks(ctx, message); err == nil && has {
		q.linksRecorded(message)
		return true
	}
	return false
}

// linksRecorded remembers that message's links are recorded; the memory
// is bounded (forgetting only costs a store read).
func (q *Queue) linksRecorded(message uint64) {
	q.linksMu.Lock()
	defer q.linksMu.Unlock()
	if q.links == nil || len(q.links) >= 100000 {
		q.links = map[uint64]struct{}{}
	}
	q.links[message] = struct{}{}
}
