package store

import "time"

// Hit is one request a recipient's mail client made to the redirector. The
// redirector journals it before answering and ships it to the relay, which
// stores each hit once (by ID) in its clicks or opens log. The JSON form is
// the journal's record and the wire format of the ingest endpoint.
type Hit struct {
	ID        string    `json:"id"`            // unique hit id, made by the redirector (sortable by time)
	Time      time.Time `json:"time"`          // UTC
	Kind      string    `json:"kind"`          // "click", "image" or "pixel" (an open is image or pixel)
	MessageID uint64    `json:"message_id"`    // the message copy, from the token
	Position  uint32    `json:"position"`      // link position, from the token
	URL       string    `json:"url,omitempty"` // the original URL the reader was sent to ("" for the pixel)
	IP        string    `json:"ip,omitempty"`
	UserAgent string    `json:"user_agent,omitempty"`
	Referer   string    `json:"referer,omitempty"`
	Protocol  string    `json:"protocol,omitempty"` // "HTTP/1.1", "HTTP/2.0"; "+tls" appended over HTTPS
	Head      bool      `json:"head,omitempty"`     // a HEAD request
	Machine   bool      `json:"machine,omitempty"`  // a known link scanner or image proxy
}

// Open reports whether h counts as an open (an image or the pixel).
func (h *Hit) Open() bool { return h.Kind == "image" || h.Kind == "pixel" }
