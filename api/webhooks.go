package api

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/trackrelay/trackrelay/store"
	"github.com/trackrelay/trackrelay/webhook"
)

// The webhook endpoints of an account (issue 17): made, changed and
// removed here, delivered by package webhook. A secret is shown once,
// when the endpoint is made or its secret rotated.
func init() {
	routes = append(routes,
		route{http.MethodPost, "/v1/webhooks", direct, (*server).webhookCreate},
		route{http.MethodGet, "/v1/webhooks", buffered, (*server).webhookList},
		route{http.MethodGet, "/v1/webhooks/{id}", buffered, (*server).webhookGet},
		route{http.MethodPatch, "/v1/webhooks/{id}", direct, (*server).webhookPatch},
		route{http.MethodDelete, "/v1/webhooks/{id}", direct, (*server).webhookDelete},
		route{http.MethodPost, "/v1/webhooks/{id}/secret", direct, (*server).webhookRotate},
		route{http.MethodPost, "/v1/webhooks/{id}/test", direct, (*server).webhookTest},
		route{http.MethodGet, "/v1/webhooks/{id}/messages", buffered, (*server).webhookMessages},
		route{http.MethodGet, "/v1/webhooks/{id}/messages/{msg}", buffered, (*server).webhookMessage},
		route{http.MethodPost, "/v1/webhooks/{id}/messages/{msg}/resend", direct, (*server).webhookResend},
	)
}

// WebhookEngine is what the webhook routes need from the delivery engine
// (*webhook.Engine): its URL policy, and a nudge to look at the queue now.
type WebhookEngine interface {
	CheckURL(raw string) error
	Kick()
}

// Webhook limits.
const (
	// MaxWebhooks bounds an account's endpoints.
	MaxWebhooks = 50
	// WebhookSecretGrace is how long an old secret keeps signing after a
	// rotation.
	WebhookSecretGrace = 24 * time.Hour
	maxWebhookBody     = 64 << 10
	maxWebhookPage     = 500
)

// webhookJSON is an endpoint as the API shows it.
type webhookJSON struct {
	ID      string   `json:"id"`
	Account string   `json:"account"`
	URL     string   `json:"url"`
	Events  []string `json:"events"` // empty: every type
	Tags    []string `json:"tags"`   // empty: every message
	Machine bool     `json:"machine"`
	Paused  bool     `json:"paused"`
	// Enabled: neither paused nor disabled.
	Enabled bool `json:"enabled"`
	// Disabled holds why the relay disabled it (failing for days).
	Disabled       string     `json:"disabled,omitempty"`
	FailingSince   *time.Time `json:"failing_since,omitempty"`
	OldSecretUntil *time.Time `json:"old_secret_until,omitempty"`
	Created        time.Time  `json:"created"`
	// Secret is shown once: in the answer that made it.
	Secret string `json:"secret,omitempty"`
}

func webhookOut(w *store.Webhook, now time.Time, secret bool) webhookJSON {
	out := webhookJSON{
		ID: w.ID, Account: w.Account, URL: w.URL, Events: w.Events, Tags: w.Tags, Machine: w.Machine,
		Paused: w.Paused, Enabled: !w.Paused && w.Disabled == "", Disabled: w.Disabled, Created: w.Created,
	}
	if out.Events == nil {
		out.Events = []string{}
	}
	if out.Tags == nil {
		out.Tags = []string{}
	}
	if !w.FailingSince.IsZero() {
		t := w.FailingSince
		out.FailingSince = &t
	}
	if w.OldSecret != "" && now.Before(w.OldSecretUntil) {
		t := w.OldSecretUntil
		out.OldSecretUntil = &t
	}
	if secret {
		out.Secret = w.Secret
	}
	return out
}

// webhookRequest is the body of POST and PATCH /v1/webhooks: absent
// fields are left as they are (PATCH) or take their default (POST).
type webhookRequest struct {
	URL     *string   `json:"url"`
	Events  *[]string `json:"events"`
	Tags    *[]string `json:"tags"`
	Machine *bool     `json:"machine"`
	Paused  *bool     `json:"paused"`
	// Enabled true resumes a paused endpoint and clears a disabled one;
	// false pauses it.
	Enabled *bool `json:"enabled"`
}

func readWebhookRequest(r *http.Request) (*webhookRequest, error) {
	b, err := io.ReadAll(io.LimitReader(r.Body, maxWebhookBody+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxWebhookBody {
		return nil, errorf(http.StatusRequestEntityTooLarge, "request body larger than %d bytes", maxWebhookBody)
	}
	var req webhookRequest
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return nil, badRequest("body: %v", err)
	}
	if dec.More() {
		return nil, badRequest("body: one JSON object, nothing after it")
	}
	return &req, nil
}

// apply changes w as req says.
func (s *server) applyWebhook(w *store.Webhook, req *webhookRequest) error {
	if req.URL != nil {
		if err := s.checkWebhookURL(*req.URL); err != nil {
			return badRequest("url: %v", strings.TrimPrefix(err.Error(), "webhook: "))
		}
		w.URL = *req.URL
	}
	if req.Events != nil {
		var evs []string
		for _, e := range *req.Events {
			if !slices.Contains(store.EventTypes, e) {
				return badRequest("events: %q is not one of %s", clip(e), strings.Join(store.EventTypes, ", "))
			}
			if !slices.Contains(evs, e) {
				evs = append(evs, e)
			}
		}
		w.Events = evs
	}
	if req.Tags != nil {
		if len(*req.Tags) > MaxTags {
			return badRequest("tags: more than %d", MaxTags)
		}
		var tags []string
		for _, t := range *req.Tags {
			if t == "" {
				return badRequest("tags: an empty tag")
			}
			if err := checkTag(t); err != nil {
				return badRequest("tags: %v", err)
			}
			if !slices.Contains(tags, t) {
				tags = append(tags, t)
			}
		}
		w.Tags = tags
	}
	if req.Machine != nil {
		w.Machine = *req.Machine
	}
	if req.Paused != nil && req.Enabled != nil && *req.Paused == *req.Enabled {
		return badRequest("paused, enabled: they contradict each other")
	}
	if req.Paused != nil {
		w.Paused = *req.Paused
	}
	if req.Enabled != nil {
		w.Paused = !*req.Enabled
		if *req.Enabled {
			w.Disabled, w.FailingSince = "", time.Time{}
		}
	}
	return nil
}

func (s *server) checkWebhookURL(u string) error {
	if s.cfg.Webhooks != nil {
		return s.cfg.Webhooks.CheckURL(u)
	}
	var strict webhook.Policy
	return strict.CheckURL(u)
}

func (s *server) kickWebhooks() {
	if s.cfg.Webhooks != nil {
		s.cfg.Webhooks.Kick()
	}
}

// webhookAccount is the account a call acts for: the key's, or the one
// an operator named with ?account= (dispatch's scope has checked it;
// required when need is set).
func (s *server) webhookAccount(_ context.Context, _ *http.Request, p *Principal, need bool) (string, error) {
	if need {
		return needAccount(p)
	}
	return p.Account, nil
}

// loadWebhook returns the endpoint {id} if the caller may see it.
func (s *server) loadWebhook(r *http.Request, p *Principal) (*store.Webhook, error) {
	id := r.PathValue("id")
	acct, err := s.webhookAccount(r.Context(), r, p, false)
	if err != nil {
		return nil, err
	}
	notFound := errorf(http.StatusNotFound, "no webhook %q", clip(id))
	if !strings.HasPrefix(id, "wh_") || len(id) > 64 {
		return nil, notFound
	}
	w, err := store.Get[store.Webhook](r.Context(), s.cfg.Store, store.KindWebhook, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, notFound
	}
	if err != nil {
		return nil, err
	}
	if acct != "" && w.Account != acct {
		return nil, notFound // never say another account's id exists
	}
	return w, nil
}

func newWebhookID() string {
	b := make([]byte, 15)
	_, _ = rand.Read(b)
	return "wh_" + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))
}

// webhookCreate answers POST /v1/webhooks: the new endpoint with its
// secret, shown this once.
func (s *server) webhookCreate(w http.ResponseWriter, r *http.Request, p *Principal) error {
	ctx := r.Context()
	acct, err := s.webhookAccount(ctx, r, p, true)
	if err != nil {
		return err
	}
	req, err := readWebhookRequest(r)
	if err != nil {
		return err
	}
	if req.URL == nil || *req.URL == "" {
		return badRequest("url: required")
	}
	now := s.cfg.Now().UTC()
	wh := &store.Webhook{ID: newWebhookID(), Account: acct, Secret: webhook.NewSecret(), Created: now}
	if err := s.applyWebhook(wh, req); err != nil {
		return err
	}
	have, err := store.List[store.Webhook](ctx, s.cfg.Store, store.KindWebhook, acct)
	if err != nil {
		return err
	}
	if len(have) >= MaxWebhooks {
		return errorf(http.StatusConflict, "account %s has %d webhooks, the most it may have", acct, len(have))
	}
	if err := store.Create(ctx, s.cfg.Store, wh); err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/webhooks/"+wh.ID)
	writeJSON(w, http.StatusCreated, webhookOut(wh, now, true))
	return nil
}

// webhookList answers GET /v1/webhooks: the account's endpoints (an
// operator's without ?account=: every account's).
func (s *server) webhookList(w http.ResponseWriter, r *http.Request, p *Principal) error {
	acct, err := s.webhookAccount(r.Context(), r, p, false)
	if err != nil {
		return err
	}
	now := s.cfg.Now()
	out, err := listViews(r.Context(), s.cfg.Store, store.KindWebhook, acct, nil, func(w *store.Webhook) webhookJSON { return webhookOut(w, now, false) })
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, struct {
		Webhooks []webhookJSON `json:"webhooks"`
	}{out})
	return nil
}

func (s *server) webhookGet(w http.ResponseWriter, r *http.Request, p *Principal) error {
	wh, err := s.loadWebhook(r, p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, webhookOut(wh, s.cfg.Now(), false))
	return nil
}

// updateWebhook changes endpoint wh in one store transaction with fn.
func (s *server) updateWebhook(ctx context.Context, wh *store.Webhook, fn func(cur *store.Webhook) error) (*store.Webhook, error) {
	var out *store.Webhook
	err := store.Update(ctx, s.cfg.Store, store.KindWebhook, wh.ID, false, func(cur *store.Webhook) (*store.Webhook, error) {
		if cur.Account != wh.Account {
			return nil, store.ErrNotFound
		}
		if err := fn(cur); err != nil {
			return nil, err
		}
		out = cur
		return cur, nil
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, errorf(http.StatusNotFound, "no webhook %q", wh.ID)
	}
	return out, err
}

func (s *server) webhookPatch(w http.ResponseWriter, r *http.Request, p *Principal) error {
	wh, err := s.loadWebhook(r, p)
	if err != nil {
		return err
	}
	req, err := readWebhookRequest(r)
	if err != nil {
		return err
	}
	wh, err = s.updateWebhook(r.Context(), wh, func(cur *store.Webhook) error { return s.applyWebhook(cur, req) })
	if err != nil {
		return err
	}
	if !wh.Paused && wh.Disabled == "" {
		s.kickWebhooks()
	}
	writeJSON(w, http.StatusOK, webhookOut(wh, s.cfg.Now(), false))
	return nil
}

func (s *server) webhookDelete(w http.ResponseWriter, r *http.Request, p *Principal) error {
	wh, err := s.loadWebhook(r, p)
	if err != nil {
		return err
	}
	if err := store.Delete(r.Context(), s.cfg.Store, store.KindWebhook, wh.ID); errors.Is(err, store.ErrNotFound) {
		return errorf(http.StatusNotFound, "no webhook %q", wh.ID)
	} else if err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// webhookRotate answers POST /v1/webhooks/{id}/secret: a new secret,
// shown this once; the old one keeps signing beside it for
// WebhookSecretGrace, so receivers can switch without losing an event.
func (s *server) webhookRotate(w http.ResponseWriter, r *http.Request, p *Principal) error {
	wh, err := s.loadWebhook(r, p)
	if err != nil {
		return err
	}
	now := s.cfg.Now().UTC()
	secret := webhook.NewSecret()
	wh, err = s.updateWebhook(r.Context(), wh, func(cur *store.Webhook) error {
		cur.OldSecret, cur.OldSecretUntil, cur.Secret = cur.Secret, now.Add(WebhookSecretGrace), secret
		return nil
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, webhookOut(wh, now, true))
	return nil
}

// webhookMessageJSON is a queued message as the API shows it.
type webhookMessageJSON struct {
	ID          string          `json:"id"`
	Endpoint    string          `json:"endpoint"`
	Type        string          `json:"type"`
	State       string          `json:"state"`
	Attempts    int             `json:"attempt_count"`
	Created     time.Time       `json:"created"`
	NextAttempt *time.Time      `json:"next_attempt,omitempty"` // pending ones
	LastStatus  int             `json:"last_status,omitempty"`
	LastError   string          `json:"last_error,omitempty"`
	Payload     json.RawMessage `json:"payload"`
	// Tries is every attempt, in GET .../messages/{msg} only.
	Tries *[]webhookAttemptJSON `json:"attempts,omitempty"`
}

type webhookAttemptJSON struct {
	Time      time.Time `json:"time"`
	Status    int       `json:"status"` // 0: no answer
	LatencyMS float64   `json:"latency_ms"`
	Response  string    `json:"response,omitempty"`
	Error     string    `json:"error,omitempty"`
}

func messageOut(m *store.WebhookMessage) webhookMessageJSON {
	out := webhookMessageJSON{
		ID: m.ID, Endpoint: m.Endpoint, Type: m.Type, State: m.State, Attempts: m.Attempts, Created: m.Created,
		LastStatus: m.LastStatus, LastError: m.LastError, Payload: json.RawMessage(m.Payload),
	}
	if !json.Valid(m.Payload) {
		out.Payload, _ = json.Marshal(string(m.Payload))
	}
	if m.State == store.WebhookPending {
		t := m.NextAttempt
		out.NextAttempt = &t
	}
	return out
}

// webhookMessages answers GET /v1/webhooks/{id}/messages: the newest
// first, ?state= pending, delivered or failed, ?limit= (default 50), and
// ?before= the last id of the previous page.
func (s *server) webhookMessages(w http.ResponseWriter, r *http.Request, p *Principal) error {
	wh, err := s.loadWebhook(r, p)
	if err != nil {
		return err
	}
	qv := r.URL.Query()
	state := qv.Get("state")
	switch state {
	case "", store.WebhookPending, store.WebhookDelivered, store.WebhookFailed:
	default:
		return badRequest("state: want pending, delivered or failed")
	}
	limit := 50
	if v := qv.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxWebhookPage {
			return badRequest("limit: want 1 to %d", maxWebhookPage)
		}
		limit = n
	}
	before := qv.Get("before")
	if before != "" && (!strings.HasPrefix(before, "msg_") || len(before) > 64) {
		return badRequest("before: want a message id")
	}
	ms, err := s.cfg.Store.WebhookMessages(r.Context(), wh.ID, state, before, limit)
	if err != nil {
		return err
	}
	out := struct {
		Messages []webhookMessageJSON `json:"messages"`
		Next     string               `json:"next,omitempty"` // ?before= for the next page
	}{Messages: make([]webhookMessageJSON, 0, len(ms))}
	for i := range ms {
		if ms[i].Account != wh.Account {
			continue // defence in depth
		}
		out.Messages = append(out.Messages, messageOut(&ms[i]))
	}
	if len(ms) == limit {
		out.Next = ms[len(ms)-1].ID
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// loadWebhookMessage returns endpoint {id} and its message {msg}.
func (s *server) loadWebhookMessage(r *http.Request, p *Principal) (*store.Webhook, *store.WebhookMessage, error) {
	wh, err := s.loadWebhook(r, p)
	if err != nil {
		return nil, nil, err
	}
	id := r.PathValue("msg")
	notFound := errorf(http.StatusNotFound, "no message %q at webhook %s", clip(id), wh.ID)
	if !strings.HasPrefix(id, "msg_") || len(id) > 64 {
		return nil, nil, notFound
	}
	m, err := s.cfg.Store.WebhookMessage(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, notFound
	}
	if err != nil {
		return nil, nil, err
	}
	if m.Endpoint != wh.ID || m.Account != wh.Account {
		return nil, nil, notFound
	}
	return wh, m, nil
}

// webhookMessage answers GET /v1/webhooks/{id}/messages/{msg}: the
// message with every attempt.
func (s *server) webhookMessage(w http.ResponseWriter, r *http.Request, p *Principal) error {
	_, m, err := s.loadWebhookMessage(r, p)
	if err != nil {
		return err
	}
	as, err := s.cfg.Store.WebhookAttempts(r.Context(), m.ID)
	if err != nil {
		return err
	}
	out := messageOut(m)
	tries := make([]webhookAttemptJSON, 0, len(as))
	for _, a := range as {
		tries = append(tries, webhookAttemptJSON{
			Time: a.Time, Status: a.Status, LatencyMS: float64(a.Latency.Microseconds()) / 1000, Response: a.Response, Error: a.Error,
		})
	}
	out.Tries = &tries
	writeJSON(w, http.StatusOK, out)
	return nil
}

// sendable refuses a test or resend to an endpoint that would not send.
func sendable(wh *store.Webhook) error {
	switch {
	case wh.Disabled != "":
		return errorf(http.StatusConflict, "webhook %s is disabled (%s): enable it first", wh.ID, clip(wh.Disabled))
	case wh.Paused:
		return errorf(http.StatusConflict, "webhook %s is paused: enable it first", wh.ID)
	}
	return nil
}

// webhookResend answers POST /v1/webhooks/{id}/messages/{msg}/resend: the
// message goes again now, with its id, so receivers can de-duplicate.
func (s *server) webhookResend(w http.ResponseWriter, r *http.Request, p *Principal) error {
	wh, m, err := s.loadWebhookMessage(r, p)
	if err != nil {
		return err
	}
	if err := sendable(wh); err != nil {
		return err
	}
	if err := s.cfg.Store.ResendWebhook(r.Context(), wh.Account, m.ID); err != nil {
		return err
	}
	s.kickWebhooks()
	if m, err = s.cfg.Store.WebhookMessage(r.Context(), m.ID); err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, messageOut(m))
	return nil
}

// webhookTest answers POST /v1/webhooks/{id}/test: a test event queued
// for the endpoint, sent like any other.
func (s *server) webhookTest(w http.ResponseWriter, r *http.Request, p *Principal) error {
	wh, err := s.loadWebhook(r, p)
	if err != nil {
		return err
	}
	if err := sendable(wh); err != nil {
		return err
	}
	now := s.cfg.Now().UTC()
	payload, err := json.Marshal(struct {
		Event    string `json:"event"`
		Log      string `json:"log"`
		Time     string `json:"time"`
		Endpoint string `json:"endpoint"`
		Account  string `json:"account"`
	}{"test", "test", now.Format(time.RFC3339Nano), wh.ID, wh.Account})
	if err != nil {
		return err
	}
	m := store.WebhookMessage{
		ID: store.NewWebhookMessageID(), Endpoint: wh.ID, Account: wh.Account, Type: "test", Payload: payload, Created: now,
	}
	if err := s.cfg.Store.QueueWebhook(r.Context(), m); err != nil {
		return err
	}
	s.kickWebhooks()
	got, err := s.cfg.Store.WebhookMessage(r.Context(), m.ID)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusAccepted, messageOut(got))
	return nil
}
