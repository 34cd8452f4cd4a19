package rewrite

// Config says how one message copy is tracked.
type Config struct {
	Clicks      bool // rewrite <a href>, <area href>, <v:roundrect href>
	Opens       bool // rewrite image URLs and add the open pixel (HTML only)
	PreventScam bool // leave links whose visible text is a URL or domain
	Codec       *Codec
	Scheme      string // scheme of tracked URLs: "http" or "https"
	Domain      string // click domain, host[:port]
	MessageID   uint64 // the copy's id, carried in every token
	// ClickDomains lists hosts (host[:port], case-insensitive) that are
	// already click domains: links to them are left alone. Domain is
	// always included.
	ClickDomains []string
	// OnEdit, when set, is told of every change in output order. Tests use
	// it to undo the rewrite and check that nothing else changed.
	OnEdit func(Edit)
	// OnLink, when set, is told of every tracked URL: its position, its
	// kind, and the original URL (scheme, host and port as the token
	// holds them, then the path, query and fragment as written). Delivery
	// records a message's links with it once.
	OnLink func(pos uint32, kind Kind, url string)
}

// Edit describes one change the rewriter made: at output offset Off it
// wrote New where the input had Old. A tracked URL value has both (Old is
// the raw attribute value as written, New its escaped replacement,
// including quotes when an unquoted value needed them); the open pixel has
// only New; a removed no-track attribute has only Old, with the whitespace
// before it. Off counts from the start of the output of the HTML or Text
// call that made the change.
type Edit struct {
	Off int64
	Old string
	New string
}

// Stats counts what a Tracker has rewritten so far.
type Stats struct {
	Links  int  // hyperlinks tracked
	Images int  // images tracked
	Pixel  bool // open pixel added
}

// Tracker rewrites the bodies of one message copy. Link positions are
// numbered in document order across all calls on one Tracker, so an HTML
// and a text part of one message never share a position. The output is a
// pure function of the Config and the inputs: a retried copy gets the same
// bytes. A Tracker is not safe for concurrent use.
type Tracker struct {
	cfg   Config
	stats Stats
	pos   uint32 // the next link position
	buf   []byte // scratch for building URLs
	qbuf  []byte // scratch for quoting them
	// tokenBound, when set, replaces maxBuf (tests use a small one).
	tokenBound int
}

// Stats returns what the Tracker has rewritten so far, over all calls.
func (t *Tracker) Stats() Stats { return t.stats }

// New returns a Tracker for one message copy.
func New(cfg Config) *Tracker {
	return &Tracker{cfg: cfg}
}
