package store

import "time"

// Hit is one request a recipient's mail client made to the redirector. The
// redirector journals it before answering and ships it to the relay, which
// stores each hit once (by ID) in its clicks or opens log.
type Hit struct {
	ID        string    // unique hit id, made by the redirector (sortable by time)
	Time      time.Time // UTC
	Kind      string    // "click", "image" or "pixel" (an open is image or pixel)
	MessageID uint64    // the message copy, from the token
	Position  uint32    // link position, from the token
	URL       string    // the original URL the reader was sent to ("" for the pixel)
	IP        string
	UserAgent string
	Referer   string
	Protocol  string // "HTTP/1.1", "HTTP/2.0"; "+tls" appended over HTTPS
	Head      bool   // a HEAD request
	Machine   bool   // a known link scanner or image proxy
}
