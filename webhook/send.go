package webhook

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/trackrelay/trackrelay/store"
)

// Attempt outcomes, as the metrics name them.
const (
	outcomeDelivered = "delivered"
	outcomeRetry     = "retry"  // failed, tried again later
	outcomeFailed    = "failed" // failed for good
)

// UserAgent is sent with every request.
const UserAgent = "trackrelay-webhooks/1"

// result is what one attempt got.
type result struct {
	status     int
	latency    time.Duration
	response   string // the first ResponseBytes of the answer
	err        error  // no answer: the transport's error
	retryAfter time.Duration
	location   string
}

// Sign returns the webhook-signature header value for message id sent
// at ts with body: one "v1,<base64>" signature per secret (the current
// one, and the old one while a rotation's grace lasts), space-separated.
func Sign(w *store.Webhook, id string, ts time.Time, body []byte, now time.Time) (string, error) {
	secrets := []string{w.Secret}
	if w.OldSecret != "" && now.Before(w.OldSecretUntil) {
		secrets = append(secrets, w.OldSecret)
	}
	sigs := make([]string, 0, len(secrets))
	for _, s := range secrets {
		wh, err := standardwebhooks.NewWebhook(s)
		if err != nil {
			return "", fmt.Errorf("webhook: endpoint %s: unusable secret: %w", w.ID, err)
		}
		sig, err := wh.Sign(id, ts, body)
		if err != nil {
			return "", fmt.Errorf("webhook: endpoint %s: sign: %w", w.ID, err)
		}
		sigs = append(sigs, sig)
	}
	return strings.Join(sigs, " "), nil
}

// deliver makes one attempt at it. It returns the function that records
// the attempt (nil when there is nothing to record) and whether a request
// was made, with its latency.
func (e *Engine) deliver(ep *endpoint, it *item) (record func(), sent bool, latency time.Duration) {
	m := &it.msg
	if ep == nil {
		return func() { e.finishUnsent(m, "endpoint deleted") }, false, 0
	}
	e.mu.Lock()
	rec := ep.rec
	e.mu.Unlock()
	switch {
	case rec.Disabled != "":
		return func() { e.finishUnsent(m, "endpoint disabled: "+rec.Disabled) }, false, 0
	case rec.Paused:
		return nil, false, 0 // pending; back when its lease ends
	}
	now := e.cfg.Now()
	res := e.attempt(&rec, m, now)
	if res.err != nil && e.sendCtx.Err() != nil {
		// Cut off by Shutdown: whether the receiver got it is unknown, so
		// the message stays pending and goes again after its lease.
		return nil, true, res.latency
	}
	return func() { e.record(ep, m, &res, now) }, true, res.latency
}

// record stores the outcome of an attempt and what comes next.
func (e *Engine) record(ep *endpoint, m *store.WebhookMessage, res *result, now time.Time) {
	outcome, reason := classify(res)
	state, next := store.WebhookDelivered, time.Time{}
	switch outcome {
	case outcomeRetry:
		n := m.Attempts + 1 // attempts made, this one included
		if n >= len(e.cfg.Schedule) {
			outcome, state = outcomeFailed, store.WebhookFailed
			reason = fmt.Sprintf("%s; gave up after %d attempts", reason, n)
		} else {
			state, next = store.WebhookPending, now.Add(max(e.cfg.Schedule[n], res.retryAfter))
		}
	case outcomeFailed:
		state = store.WebhookFailed
	}
	a := store.WebhookAttempt{
		Message: m.ID, Endpoint: m.Endpoint, Time: now.UTC(), Status: res.status,
		Latency: res.latency, Response: res.response, Error: reason,
	}
	// Recording happens even while shutting down: the store outlives us.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.cfg.Store.FinishWebhookAttempt(ctx, m.ID, a, state, next); err != nil {
		// Not recorded: it goes again when its lease ends (at least once).
		e.log.Error("webhook finish failed", "message", m.ID, "endpoint", m.Endpoint, "err", err)
		return
	}
	e.metrics.attempts.WithLabelValues(outcome).Inc()
	e.metrics.latency.Observe(res.latency.Seconds())
	if outcome != outcomeDelivered {
		e.log.Debug("webhook attempt failed", "message", m.ID, "endpoint", m.Endpoint, "account", m.Account,
			"status", res.status, "outcome", outcome, "attempt", m.Attempts+1, "err", reason)
	}
	e.health(ep, outcome == outcomeDelivered, reason, now)
}

// attempt sends m to w once.
func (e *Engine) attempt(w *store.Webhook, m *store.WebhookMessage, now time.Time) result {
	start := time.Now()
	var res result
	fail := func(err error) result {
		res.err = err
		res.latency = time.Since(start)
		return res
	}
	// The URL is checked again: the policy may have changed since the
	// endpoint was made.
	if err := e.cfg.Policy.CheckURL(w.URL); err != nil {
		return fail(err)
	}
	// The timestamp is the sending time by the real clock, which the
	// receiver compares with its own.
	ts := time.Now()
	sig, err := Sign(w, m.ID, ts, m.Payload, now)
	if err != nil {
		return fail(fmt.Errorf("%w: %v", errBadEndpoint, err))
	}
	ctx, cancel := context.WithTimeout(e.sendCtx, e.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(m.Payload))
	if err != nil {
		return fail(fmt.Errorf("%w: %v", errBadEndpoint, err))
	}
	h := req.Header
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", UserAgent)
	h[standardwebhooks.HeaderWebhookID] = []string{m.ID}
	h[standardwebhooks.HeaderWebhookTimestamp] = []string{strconv.FormatInt(ts.Unix(), 10)}
	h[standardwebhooks.HeaderWebhookSignature] = []string{sig}
	resp, err := e.client.Do(req)
	if err != nil {
		// The URL (it may hold a token) stays out of the message.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fail(err)
	}
	defer resp.Body.Close()
	res.status = resp.StatusCode
	// The status decides; a body that breaks off (or runs past maxDrain,
	// and then the connection is not reused) changes nothing.
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxDrain))
	res.latency = time.Since(start)
	if len(body) > ResponseBytes {
		body = body[:ResponseBytes]
	}
	res.response = strings.ToValidUTF8(string(body), "\uFFFD")
	res.retryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), e.cfg.Now())
	res.location = resp.Header.Get("Location")
	return res
}

// errBadEndpoint marks an endpoint record that cannot be sent to.
var errBadEndpoint = errors.New("webhook: endpoint unusable")

// classify returns an attempt's outcome and, for a failure, the reason.
func classify(r *result) (outcome, reason string) {
	if r.err != nil {
		if errors.Is(r.err, ErrRefused) || errors.Is(r.err, errBadEndpoint) {
			return outcomeFailed, r.err.Error()
		}
		if errors.Is(r.err, context.DeadlineExceeded) || isTimeout(r.err) {
			return outcomeRetry, "timeout: " + r.err.Error()
		}
		return outcomeRetry, r.err.Error()
	}
	s := r.status
	text := fmt.Sprintf("answered %d %s", s, http.StatusText(s))
	switch {
	case s >= 200 && s < 300:
		return outcomeDelivered, ""
	case s >= 300 && s < 400:
		loc := r.location
		if len(loc) > 256 {
			loc = loc[:256] + "..."
		}
		return outcomeFailed, fmt.Sprintf("%s: redirects are not followed (Location: %q); set the endpoint's URL to where it leads", text, loc)
	case s == http.StatusRequestTimeout, s == http.StatusConflict, s == http.StatusTooEarly,
		s == http.StatusTooManyRequests, s >= 500:
		return outcomeRetry, text
	case s >= 400 && s < 500:
		return outcomeFailed, text
	}
	return outcomeRetry, text // unknown: retrying costs less than losing it
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// parseRetryAfter reads a Retry-After value (RFC 9110 §10.2.3): seconds or
// an HTTP date, capped at MaxRetryAfter; 0 when absent or unreadable.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return 0
		}
		if n > int64(MaxRetryAfter/time.Second) {
			return MaxRetryAfter
		}
		d = time.Duration(n) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), MaxRetryAfter)
}

// health keeps the endpoint's FailingSince and disables it after
// DisableAfter of failures without a success. The record changes only
// when the state does.
func (e *Engine) health(ep *endpoint, ok bool, reason string, now time.Time) {
	e.mu.Lock()
	since := ep.rec.FailingSince
	var fn func(cur *store.Webhook) (*store.Webhook, error)
	disable := ""
	switch {
	case ok && !since.IsZero():
		ep.rec.FailingSince = time.Time{}
		fn = func(cur *store.Webhook) (*store.Webhook, error) {
			cur.FailingSince = time.Time{}
			return cur, nil
		}
	case !ok && since.IsZero():
		ep.rec.FailingSince = now.UTC()
		fn = func(cur *store.Webhook) (*store.Webhook, error) {
			if cur.FailingSince.IsZero() {
				cur.FailingSince = now.UTC()
			}
			return cur, nil
		}
	case !ok && ep.rec.Disabled == "" && now.Sub(since) >= e.cfg.DisableAfter:
		disable = fmt.Sprintf("failing since %s without a success; last error: %s", since.UTC().Format(time.RFC3339), reason)
		if len(disable) > 512 {
			disable = disable[:512]
		}
		ep.rec.Disabled = disable
		fn = func(cur *store.Webhook) (*store.Webhook, error) {
			if cur.Disabled == "" {
				cur.Disabled = disable
			}
			return cur, nil
		}
	}
	rec := ep.rec
	e.mu.Unlock()
	if fn == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := store.Update(ctx, e.cfg.Store, store.KindWebhook, rec.ID, false, fn)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		e.log.Error("webhook endpoint update failed", "endpoint", rec.ID, "err", err)
		return
	}
	if disable != "" && err == nil {
		// The account sees it in the endpoint's record (REST, dashboard).
		e.log.Warn("webhook endpoint disabled", "endpoint", rec.ID, "account", rec.Account,
			"failing_since", since.UTC(), "after", e.cfg.DisableAfter)
		e.metrics.disabled.WithLabelValues(rec.Account).Inc()
	}
}

// SecretPrefix starts every endpoint secret (Standard Webhooks' format).
const SecretPrefix = "whsec_"

// NewSecret returns a new endpoint secret: SecretPrefix and the base64 of
// 32 random bytes, the form the standard-webhooks libraries read.
func NewSecret() string {
	return SecretPrefix + base64.StdEncoding.EncodeToString(randomBytes(32))
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return b
}
