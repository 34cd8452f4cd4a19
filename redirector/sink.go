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

// HTTPSink ships hits to a relay's IngestHandler over HTTP(S) with a
// bearer secret.
type HTTPSink struct {
	URL    string
	Secret string
	Client *http.Client // nil: http.DefaultClient (the caller's ctx bounds each call)
}

// Ingest POSTs hits as one JSON batch and succeeds only on a 2xx answer.
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
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("redirector: ship: relay answered %s: %s", resp.Status, strings.TrimSpace(string(msg)))
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
		var b ingestBody
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
		for i, h := range b.Hits {
			if err := checkHit(h); err != nil {
				plain(w, http.StatusBadRequest, "400 bad batch: hit "+strconv.Itoa(i)+": "+err.Error()+"\n")
				return
			}
		}
		if err := sink.Ingest(r.Context(), b.Hits); err != nil {
			log.Error("ingest failed", "err", err, "hits", len(b.Hits))
			plain(w, http.StatusServiceUnavailable, "503 could not store the batch\n")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = fmt.Fprintf(w, "{\"accepted\":%d}\n", len(b.Hits))
	})
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
