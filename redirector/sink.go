package redirector

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/trackrelay/trackrelay/store"
)

// Sink receives shipped hits. Ingest returns nil only once every hit is
// stored durably; it must be idempotent by hit id, because a batch whose
// acknowledgement was lost is sent again.
type Sink interface {
	Ingest(ctx context.Context, hits []store.Hit) error
}

// SinkFunc adapts a function to Sink.
type SinkFunc func(ctx context.Context, hits []store.Hit) error

// Ingest calls f.
func (f SinkFunc) Ingest(ctx context.Context, hits []store.Hit) error { return f(ctx, hits) }

// Rejection names a hit of a batch that the relay refused, and why. The
// relay stores the rest of the batch; the shipper drops rejected hits
// (logging them) instead of retrying them forever.
type Rejection struct {
	Index  int    `json:"index"` // position in the batch
	ID     string `json:"id"`    // the hit's id, "" when it had none
	Reason string `json:"reason"`
}

// RejectedError is what a Sink returns when it stored every hit of a batch
// except the Rejected ones: a partial success, not a failure to retry.
type RejectedError struct {
	Rejected []Rejection
}

func (e *RejectedError) Error() string {
	msg := fmt.Sprintf("redirector: %d hits rejected", len(e.Rejected))
	if len(e.Rejected) > 0 {
		msg += ": first: " + e.Rejected[0].Reason
	}
	return msg
}

// CheckedSink returns a Sink that applies the ingest endpoint's checks to
// each hit before passing the valid ones to sink, and answers a
// *RejectedError naming the others. In-process hand-off (serve) uses it so
// that it takes the same path as shipping over HTTP.
func CheckedSink(sink Sink) Sink {
	return SinkFunc(func(ctx context.Context, hits []store.Hit) error {
		var rej []Rejection
		valid := make([]store.Hit, 0, len(hits))
		index := make([]int, 0, len(hits))
		for i, h := range hits {
			if err := checkHit(h); err != nil {
				rej = append(rej, Rejection{Index: i, ID: clip(h.ID, maxHitID), Reason: err.Error()})
				continue
			}
			valid = append(valid, h)
			index = append(index, i)
		}
		if len(valid) > 0 {
			var err error
			if rej, err = mergeRejected(rej, sink.Ingest(ctx, valid), index); err != nil {
				return err
			}
		}
		if len(rej) > 0 {
			return &RejectedError{Rejected: rej}
		}
		return nil
	})
}

// ErrDiskReserve is what a ReserveSink returns while the disk is below
// the hits' floor: the batch is not stored, and the shipper retries it.
var ErrDiskReserve = errors.New("redirector: disk below the hits' floor (redirector.min_free_bytes): hits not stored now")

// ReserveSink returns a Sink that hands batches to sink only while the
// file system holding dir has at least minFree bytes free, and otherwise
// fails them with ErrDiskReserve (the shipper keeps them and retries). It
// guards the relay's store of hits, so that hits never take the last free
// space, which mail needs. minFree <= 0 is sink itself.
func ReserveSink(sink Sink, dir string, minFree int64) Sink {
	if minFree <= 0 {
		return sink
	}
	return SinkFunc(func(ctx context.Context, hits []store.Hit) error {
		if free, err := store.FreeBytes(dir); err == nil && free < minFree {
			return fmt.Errorf("%w: %s has %d bytes free, the floor is %d", ErrDiskReserve, dir, free, minFree)
		}
		return sink.Ingest(ctx, hits)
	})
}

// Limits of the ingest endpoint.
const (
	// MaxIngestBody bounds one POST to the ingest endpoint.
	MaxIngestBody = 32 << 20
	// MaxIngestHits bounds the hits in one POST.
	MaxIngestHits = 10000
	maxHitID      = 64
)

// ingestBody is the JSON of one batch.
type ingestBody struct {
	Hits []store.Hit `json:"hits"`
}

// ingestRaw is how the endpoint reads a batch: each hit on its own, so one
// that does not decode is rejected alone.
type ingestRaw struct {
	Hits []json.RawMessage `json:"hits"`
}

// ingestAnswer is the JSON of the endpoint's 200 answer.
type ingestAnswer struct {
	Accepted int         `json:"accepted"`
	Rejected []Rejection `json:"rejected,omitempty"`
}

// maxAnswer bounds the ingest answer the shipper reads: every hit of a
// full batch rejected with a long reason fits.
const maxAnswer = MaxIngestHits * 512

// HTTPSink ships hits to a relay's IngestHandler over HTTP(S) with a
// bearer secret.
type HTTPSink struct {
	URL    string
	Secret string
	Client *http.Client // nil: http.DefaultClient (the caller's ctx bounds each call)
}

// Ingest POSTs hits as one JSON batch and succeeds only on a 2xx answer.
// When the answer names rejected hits, it returns a *RejectedError: the
// others are stored.
func (s *HTTPSink) Ingest(ctx context.Context, hits []store.Hit) error {
	body, err := json.Marshal(ingestBody{Hits: hits})
	if err != nil {
		return fmt.Errorf("redirector: ship: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("redirector: ship: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+s.Secret)
	c := s.Client
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("redirector: ship: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("redirector: ship: relay answered %s: %s", resp.Status, strings.TrimSpace(strings.ToValidUTF8(string(msg), "?")))
	}
	// 2xx means the relay stored the batch. An answer that does not parse
	// (an older relay) names no rejections.
	var ans ingestAnswer
	if json.NewDecoder(io.LimitReader(resp.Body, maxAnswer)).Decode(&ans) == nil && len(ans.Rejected) > 0 {
		return &RejectedError{Rejected: ans.Rejected}
	}
	return nil
}

// IngestHandler is the relay's side of shipping: it accepts POSTed batches
// from redirectors that present secret as a bearer token, checks them, and
// hands them to sink (the relay's store). The answer is 200 only after sink
// has stored them. Bodies are bounded by MaxIngestBody.
func IngestHandler(sink Sink, secret string, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	want := sha256.Sum256([]byte(secret))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", "POST")
			plain(w, http.StatusMethodNotAllowed, "405 method not allowed\n")
			return
		}
		auth := r.Header.Get("Authorization")
		got, ok := strings.CutPrefix(auth, "Bearer ")
		gotSum := sha256.Sum256([]byte(got))
		if !ok || secret == "" || subtle.ConstantTimeCompare(gotSum[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="trackrelay-ingest"`)
			plain(w, http.StatusUnauthorized, "401 unauthorized\n")
			return
		}
		var b ingestRaw
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxIngestBody))
		if err := dec.Decode(&b); err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				plain(w, http.StatusRequestEntityTooLarge, "413 batch too large\n")
				return
			}
			plain(w, http.StatusBadRequest, "400 bad batch: not JSON\n")
			return
		}
		if len(b.Hits) > MaxIngestHits {
			plain(w, http.StatusRequestEntityTooLarge, "413 too many hits in one batch\n")
			return
		}
		// Hits are checked one by one: a bad one is named in the answer
		// and the rest are stored, so it cannot block the ones behind it.
		var rej []Rejection
		hits := make([]store.Hit, 0, len(b.Hits))
		index := make([]int, 0, len(b.Hits))
		for i, raw := range b.Hits {
			var h store.Hit
			if err := json.Unmarshal(raw, &h); err != nil {
				var id struct {
					ID string `json:"id"`
				}
				_ = json.Unmarshal(raw, &id)
				rej = append(rej, Rejection{Index: i, ID: clip(id.ID, maxHitID), Reason: "not a hit: " + clip(err.Error(), 200)})
				continue
			}
			hits = append(hits, h)
			index = append(index, i)
		}
		rej, err := mergeRejected(rej, CheckedSink(sink).Ingest(r.Context(), hits), index)
		if err != nil {
			log.Error("ingest failed", "err", err, "hits", len(hits))
			plain(w, http.StatusServiceUnavailable, "503 could not store the batch\n")
			return
		}
		if len(rej) > 0 {
			log.Warn("ingest rejected hits", "rejected", len(rej), "hits", len(b.Hits), "first_id", rej[0].ID, "first_reason", rej[0].Reason)
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(ingestAnswer{Accepted: len(b.Hits) - len(rej), Rejected: rej})
	})
}

// mergeRejected takes the outcome err of ingesting a sub-batch: nil, a
// *RejectedError, or a failure, which it returns. It appends the rejected
// hits to rej with their index mapped back through index (sub-batch
// position -> position in the whole batch).
func mergeRejected(rej []Rejection, err error, index []int) ([]Rejection, error) {
	if err == nil {
		return rej, nil
	}
	var re *RejectedError
	if !errors.As(err, &re) {
		return rej, err
	}
	for _, r := range re.Rejected {
		if r.Index >= 0 && r.Index < len(index) {
			r.Index = index[r.Index]
		}
		rej = append(rej, r)
	}
	return rej, nil
}

// clip cuts s to at most n bytes of valid UTF-8, for echoing untrusted
// input in an answer or a log.
func clip(s string, n int) string {
	return strings.ToValidUTF8(truncate(s, n), "?")
}

func checkHit(h store.Hit) error {
	if h.ID == "" || len(h.ID) > maxHitID {
		return errors.New("bad id")
	}
	switch h.Kind {
	case "click", "image", "pixel":
	default:
		return errors.New("bad kind")
	}
	if h.Time.IsZero() {
		return errors.New("no time")
	}
	// Twice what the redirector itself records, so a newer redirector
	// with slightly larger bounds is still accepted.
	if len(h.URL) > 2*maxLocation || len(h.UserAgent) > 2*maxUserAgent || len(h.Referer) > 2*maxReferer ||
		len(h.IP) > 64 || len(h.Protocol) > 32 {
		return errors.New("field too long")
	}
	return nil
}

// plain writes a small text/plain answer over net/http.
func plain(w http.ResponseWriter, code int, body string) {
	hdr := w.Header()
	hdr["Content-Type"] = []string{"text/plain; charset=utf-8"}
	hdr["Content-Length"] = []string{strconv.Itoa(len(body))}
	hdr["Cache-Control"] = []string{"no-store"}
	hdr["X-Content-Type-Options"] = []string{"nosniff"}
	w.WriteHeader(code)
	_, _ = io.WriteString(w, body)
}
