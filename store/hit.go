package store

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"time"
)

// Hit is one request a recipient's mail client made to the redirector. The
// redirector journals it before answering and ships it to the relay, which
// stores each hit once (by ID) in its clicks or opens log. The JSON form is
// the wire format of the ingest endpoint; the journal keeps a compact
// binary record (appendHitRecord).
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

// hitRecordV1 starts a hit's binary journal record (see appendHitRecord).
// A JSON record starts with '{'; both are read.
const hitRecordV1 = 0x01

// maxHitField bounds one string field of a binary hit record.
const maxHitField = 64 << 10

// appendHitRecord appends h's journal record, without its ID (the key):
//
//	0x01 time(varint unix ns) message_id(uvarint) position(uvarint)
//	flags(1: 1=head 2=machine) then kind, url, ip, user_agent, referer,
//	protocol, each as uvarint length + bytes.
//
// It is about ten times cheaper to write and read than the JSON form, and
// the redirector writes one per request.
func appendHitRecord(b []byte, h *Hit) []byte {
	b = append(b, hitRecordV1)
	b = binary.AppendVarint(b, h.Time.UnixNano())
	b = binary.AppendUvarint(b, h.MessageID)
	b = binary.AppendUvarint(b, uint64(h.Position))
	var flags byte
	if h.Head {
		flags |= 1
	}
	if h.Machine {
		flags |= 2
	}
	b = append(b, flags)
	for _, s := range [...]string{h.Kind, h.URL, h.IP, h.UserAgent, h.Referer, h.Protocol} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	return b
}

var errHitRecord = errors.New("store: damaged hit record")

// decodeHitRecord reads a journal record written by appendHitRecord, or
// by an earlier version as JSON. The ID is not set.
func decodeHitRecord(v []byte, h *Hit) error {
	if len(v) > 0 && v[0] == '{' {
		return json.Unmarshal(v, h)
	}
	if len(v) == 0 || v[0] != hitRecordV1 {
		return errHitRecord
	}
	v = v[1:]
	uns, n := uvarint(v)
	if n <= 0 {
		return errHitRecord
	}
	ns := int64(uns >> 1) // zigzag, as binary.AppendVarint writes it
	if uns&1 != 0 {
		ns = ^ns
	}
	v = v[n:]
	mid, n := uvarint(v)
	if n <= 0 {
		return errHitRecord
	}
	v = v[n:]
	pos, n := uvarint(v)
	if n <= 0 || pos > math.MaxUint32 || len(v) < n+1 {
		return errHitRecord
	}
	flags := v[n]
	v = v[n+1:]
	if flags&^3 != 0 {
		return errHitRecord
	}
	var fields [6]string
	for i := range fields {
		l, n := uvarint(v)
		if n <= 0 || l > maxHitField || uint64(len(v)-n) < l {
			return errHitRecord
		}
		fields[i] = string(v[n : n+int(l)])
		v = v[n+int(l):]
	}
	if len(v) != 0 {
		return errHitRecord
	}
	*h = Hit{
		ID: h.ID, Time: time.Unix(0, ns).UTC(), MessageID: mid, Position: uint32(pos),
		Head: flags&1 != 0, Machine: flags&2 != 0,
		Kind: fields[0], URL: fields[1], IP: fields[2], UserAgent: fields[3], Referer: fields[4], Protocol: fields[5],
	}
	return nil
}

// uvarint is binary.Uvarint refusing overlong encodings, so that a record
// has exactly one form.
func uvarint(b []byte) (uint64, int) {
	x, n := binary.Uvarint(b)
	if n > 1 && b[n-1] == 0 {
		return 0, 0
	}
	return x, n
}
