package store

import (
	"encoding/json"
	"slices"
	"time"
)

// Webhook event types (SPEC §13), as endpoints subscribe to them.
const (
	EventAccepted   = "accepted"
	EventDelivered  = "delivered"
	EventDeferred   = "deferred"
	EventFailed     = "failed"
	EventBounced    = "bounced"
	EventComplained = "complained"
	EventOpened     = "opened"
	EventClicked    = "clicked"
	EventResponded  = "responded"
)

// EventTypes lists the webhook event types.
var EventTypes = []string{EventAccepted, EventDelivered, EventDeferred, EventFailed, EventBounced, EventComplained, EventOpened, EventClicked, EventResponded}

// EventType is the webhook event type of a stored event, "" for events
// no webhook carries (DMARC report rows).
func EventType(e *Event) string {
	switch e.Log {
	case LogAttempts:
		return EventAccepted
	case LogDeliveries:
		return EventDelivered
	case LogFailures:
		if FinalFailure(e) {
			return EventFailed
		}
		return EventDeferred
	case LogBounces:
		if e.Fields["type"] == "delayed" {
			return EventDeferred
		}
		return EventBounced
	case LogComplaints:
		return EventComplained
	case LogOpens:
		return EventOpened
	case LogClicks:
		return EventClicked
	case LogResponses:
		return EventResponded
	}
	return ""
}

// FinalFailure reports whether a failures event ended its copy (a hard
// failure, an expired or suppressed copy) rather than being retried.
func FinalFailure(e *Event) bool {
	switch e.Value("type") {
	case "soft", "temporary":
		return false
	}
	return true
}

// Wants reports whether endpoint w takes event e of type typ.
func (w *Webhook) Wants(e *Event, typ string) bool {
	if w.Paused || w.Disabled != "" || typ == "" {
		return false
	}
	if len(w.Events) > 0 && !slices.Contains(w.Events, typ) {
		return false
	}
	if !w.Machine && IsMachine(e) {
		return false
	}
	if len(w.Tags) > 0 && !slices.ContainsFunc(e.Tags, func(t string) bool { return slices.Contains(w.Tags, t) }) {
		return false
	}
	return true
}

// AppendWebhookMessages appends to ms the webhook messages event e makes:
// one, pending and due now, for each of eps (the account's endpoints) that
// wants it, all with the same payload, their ids from newID. The backends
// store them in the transaction that stores e.
func AppendWebhookMessages(ms []WebhookMessage, e *Event, eps []Webhook, newID func() string) []WebhookMessage {
	if len(eps) == 0 {
		return ms
	}
	typ := EventType(e)
	var payload []byte
	for i := range eps {
		w := &eps[i]
		if !w.Wants(e, typ) {
			continue
		}
		if payload == nil {
			payload = WebhookPayload(e, typ)
		}
		now := time.Now().UTC()
		ms = append(ms, WebhookMessage{
			ID: newID(), Endpoint: w.ID, Account: e.Account, Type: typ, Payload: payload,
			Created: now, NextAttempt: now, State: WebhookPending, Recipient: NormalAddress(e.Recipient),
		})
	}
	return ms
}

// WebhookPayload is the JSON body of one event: the event type, the log
// it comes from, and the log record's fields by their SPEC §9 names.
func WebhookPayload(e *Event, typ string) []byte {
	b := make([]byte, 0, 256)
	b = append(b, `{"event":`...)
	b = AppendJSONString(b, typ)
	b = append(b, `,"log":`...)
	b = AppendJSONString(b, e.Log)
	for _, name := range LogFields[e.Log] {
		b = append(b, ',')
		b = AppendJSONString(b, name)
		b = append(b, ':')
		if name == "tags" {
			b = append(b, '[')
			for i, t := range e.Tags {
				if i > 0 {
					b = append(b, ',')
				}
				b = AppendJSONString(b, t)
			}
			b = append(b, ']')
			continue
		}
		b = AppendJSONString(b, e.Value(name))
	}
	return append(b, '}')
}

// Webhook message states.
const (
	WebhookPending   = "pending"
	WebhookDelivered = "delivered"
	WebhookFailed    = "failed" // given up: a final answer, or retries exhausted
)

// WebhookMessage is one event queued for one endpoint. Its ID is the
// Standard Webhooks webhook-id: the same on every retry.
type WebhookMessage struct {
	ID          string          `json:"id"`
	Endpoint    string          `json:"endpoint"`
	Account     string          `json:"account"`
	Type        string          `json:"type"`
	Payload     json.RawMessage `json:"payload"` // the JSON body (kept as JSON, not base64)
	Created     time.Time       `json:"created"`
	Attempts    int             `json:"attempts"`
	NextAttempt time.Time       `json:"next_attempt"`
	State       string          `json:"state"`
	LastStatus  int             `json:"last_status,omitempty"`
	LastError   string          `json:"last_error,omitempty"`
	// Recipient is the event's recipient, so an erasure finds it.
	Recipient string `json:"recipient,omitempty"`
}

// WebhookAttempt records one try to deliver a message.
type WebhookAttempt struct {
	Message  string        `json:"message"`
	Endpoint string        `json:"endpoint"`
	Time     time.Time     `json:"time"`
	Status   int           `json:"status"` // HTTP status; 0 when there was none
	Latency  time.Duration `json:"latency"`
	Response string        `json:"response,omitempty"` // the first bytes of the answer
	Error    string        `json:"error,omitempty"`
}

// WebhookQueueStat is one endpoint's queue: how many messages wait and
// since when the oldest.
type WebhookQueueStat struct {
	Endpoint string
	Account  string
	Depth    int
	Oldest   time.Time
}
