package api

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/emersion/go-smtp"
	"io"
	stdmime "mime"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"

	trmime "github.com/trackrelay/trackrelay/mime"
	"github.com/trackrelay/trackrelay/smtpd"
	"github.com/trackrelay/trackrelay/store"
)

// Limits on a send request's fields.
const (
	MaxRecipients  = 1000
	MaxTags        = trmime.MaxTags   // as in the X-SMTPeter-Tags header
	MaxTagLen      = trmime.MaxTagLen // bytes
	MaxAddressLen  = 320              // local part 64 + @ + domain 255
	MaxSubjectLen  = 998
	MaxAttachments = 100
)

// sendRequest is POST /v1/send's body. Fields that take a string or a
// list of strings are raw and parsed with their name at hand.
type sendRequest struct {
	Recipient  json.RawMessage `json:"recipient"`
	Recipients json.RawMessage `json:"recipients"`
	Envelope   *string         `json:"envelope"`

	MIME *string `json:"mime"`

	From        *string           `json:"from"`
	To          json.RawMessage   `json:"to"`
	Cc          json.RawMessage   `json:"cc"`
	ReplyTo     json.RawMessage   `json:"replyto"`
	Subject     *string           `json:"subject"`
	Text        *string           `json:"text"`
	HTML        *string           `json:"html"`
	Attachments []attachment      `json:"attachments"`
	Unsubscribe *string           `json:"unsubscribe"` // List-Unsubscribe (RFC 2369)
	Extra       map[string]string `json:"extra"`       // extra X-* headers

	TrackClicks *bool           `json:"trackclicks"`
	TrackOpens  *bool           `json:"trackopens"`
	PreventScam *bool           `json:"preventscam"`
	Tags        json.RawMessage `json:"tags"`
}

type attachment struct {
	Name string `json:"name"`
	Type string `json:"type"`
	Data string `json:"data"` // base64
}

// sendPlan is a validated send request.
type sendPlan struct {
	envelope   string
	recipients []string
	body       []byte
	tags       []string
}

func (s *server) send(w http.ResponseWriter, r *http.Request, p *Principal) error {
	if p.Cred == nil {
		return errorf(http.StatusForbidden, "this key sends no mail (an operator or dashboard principal): use an account's key")
	}
	// One account holds at most half the slots, so a slow or busy client
	// cannot keep the others' mail out.
	// A refused send's body is never read: "Connection: close" stops
	// net/http from draining it first, which a client that trickles it
	// would drag out without end.
	if !s.takeAccountSlot(p.Account) {
		w.Header().Set("Connection", "close")
		return &httpError{status: http.StatusServiceUnavailable, msg: "too many sends at once for this account; try again later"}
	}
	defer s.releaseAccountSlot(p.Account)
	select {
	case s.sends <- struct{}{}:
		defer func() { <-s.sends }()
	case <-r.Context().Done():
		w.Header().Set("Connection", "close")
		return &httpError{status: http.StatusServiceUnavailable, msg: "too many sends at once; try again later", err: r.Context().Err()}
	}
	// The body must arrive within Timeout: a slot is memory and a place in
	// line, not something a client may hold by trickling bytes. (Not every
	// ResponseWriter supports deadlines; the server's own timeouts remain.)
	ctl := http.NewResponseController(w)
	_ = ctl.SetReadDeadline(time.Now().Add(s.cfg.Timeout))
	var req sendRequest
	mt := "application/json"
	if ct := r.Header.Get("Content-Type"); ct != "" {
		var err error
		if mt, _, err = stdmime.ParseMediaType(ct); err != nil {
			mt = ""
		}
	}
	switch mt {
	case "application/json":
		if err := decodeJSON(r.Body, &req); err != nil {
			return err
		}
	case "application/x-www-form-urlencoded":
		if err := decodeForm(r, &req); err != nil {
			return err
		}
	default:
		return errorf(http.StatusUnsupportedMediaType, "content-type: want application/json or application/x-www-form-urlencoded")
	}
	// The body is in; the spool may take its time (the call's own timeout
	// bounds it), and the connection must not be cut under it.
	_ = ctl.SetReadDeadline(time.Time{})
	plan, err := planSend(&req, s.cfg.Now())
	if err != nil {
		return err
	}
	sub := &smtpd.Submission{
		Cred:        p.Cred,
		From:        plan.envelope,
		Recipients:  plan.recipients,
		SMTPUTF8:    !isASCII(plan.envelope) || !allASCII(plan.recipients),
		Body8Bit:    !isASCII(string(plan.body)),
		Size:        int64(len(plan.body)),
		Clicks:      req.TrackClicks,
		Opens:       req.TrackOpens,
		PreventScam: req.PreventScam,
		Tags:        plan.tags,
		RemoteAddr:  r.RemoteAddr,
		Trace:       &smtpd.Trace{Via: "HTTP", AuthUser: p.Cred.Username},
	}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		sub.Trace.RemoteIP = ap.Addr().Unmap()
	}
	if r.TLS != nil {
		sub.Trace.TLSVersion, sub.Trace.TLSCipher = r.TLS.Version, r.TLS.CipherSuite
	}
	rc, err := s.cfg.Submitter.Submit(r.Context(), sub, bytes.NewReader(plan.body))
	if err != nil {
		var ce *trmime.ControlError
		if errors.As(err, &ce) {
			return &httpError{status: http.StatusBadRequest, msg: "mime: " + strings.TrimPrefix(ce.Error(), "mime: "), err: err}
		}
		if errors.Is(err, smtpd.ErrTooBig) {
			return &httpError{status: http.StatusRequestEntityTooLarge, msg: "message too big", err: err}
		}
		var se *smtp.SMTPError
		if errors.As(err, &se) && se.EnhancedCode == (smtp.EnhancedCode{5, 7, 1}) {
			return &httpError{status: http.StatusUnprocessableEntity, msg: "no recipient can be sent to: " + se.Message, err: err}
		}
		if errors.Is(err, smtpd.ErrInsufficientStorage) {
			return &httpError{status: http.StatusServiceUnavailable, msg: "the relay is low on disk space; try again later", err: err}
		}
		return &httpError{status: http.StatusServiceUnavailable, msg: "cannot queue the message now; try again later", err: err}
	}
	if len(rc.CopyIDs)+len(rc.Refused) != len(plan.recipients) {
		return &httpError{status: http.StatusInternalServerError, msg: "internal error",
			err: fmt.Errorf("submitter returned %d ids for %d recipients", len(rc.CopyIDs), len(plan.recipients))}
	}
	// SMTPeter's answer: one id per recipient, the id as the key. A
	// recipient on the suppression list has none: it is named, with the
	// reason, in a Trackrelay-Refused field of the answer (and in the
	// failures log), so the answer's JSON keeps SMTPeter's shape.
	refused := map[string]bool{}
	for _, r := range rc.Refused {
		refused[r.Recipient] = true
		w.Header().Add("Trackrelay-Refused", r.Recipient+"; "+r.Reason)
	}
	ids := make(map[string]string, len(plan.recipients))
	i := 0
	for _, rcpt := range plan.recipients {
		if refused[rcpt] {
			continue
		}
		ids[store.FormatID(rc.CopyIDs[i])] = rcpt
		i++
	}
	s.log.Info("api message queued", "account", p.Account, "message", store.FormatID(rc.MessageID), "recipients", len(ids))
	writeJSON(w, http.StatusOK, ids)
	return nil
}

// decodeJSON decodes exactly one JSON object into v, refusing unknown
// fields, and maps every failure to a 400 that names the field or offset.
func decodeJSON(body io.Reader, v any) error {
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, err2 := dec.Token(); err2 != io.EOF {
			var mbe *http.MaxBytesError
			if errors.As(err2, &mbe) {
				return err2
			}
			return badRequest("body: want one JSON object, found more after it")
		}
		return nil
	}
	var (
		syn *json.SyntaxError
		typ *json.UnmarshalTypeError
		mbe *http.MaxBytesError
	)
	switch {
	case errors.As(err, &mbe):
		return err
	case errors.As(err, &syn):
		return badRequest("body: invalid JSON at byte %d: %s", syn.Offset, syn.Error())
	case errors.As(err, &typ):
		if typ.Field == "" {
			return badRequest("body: want a JSON object, not %s", typ.Value)
		}
		return badRequest("%s: want %s, not %s", typ.Field, jsonKind(typ.Type.Kind().String()), typ.Value)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("body: empty or truncated JSON")
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return badRequest("%s: unknown field", strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`))
	}
	return badRequest("body: %s", strings.TrimPrefix(err.Error(), "json: "))
}

func jsonKind(k string) string {
	switch k {
	case "ptr", "string":
		return "a string"
	case "bool":
		return "true or false"
	case "slice":
		return "an array"
	case "struct", "map":
		return "an object"
	}
	return k
}

// decodeForm reads a form-encoded send request, as SMTPeter accepts too:
// the same fields, repeated for lists (attachments only in JSON).
func decodeForm(r *http.Request, req *sendRequest) error {
	if err := r.ParseForm(); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return badRequest("body: %v", err)
	}
	obj := map[string]any{}
	for k, vs := range r.PostForm {
		switch k {
		case "trackclicks", "trackopens", "preventscam":
			b, ok := formBool(vs[0])
			if !ok || len(vs) > 1 {
				return badRequest("%s: want true or false", k)
			}
			obj[k] = b
		case "to", "cc", "replyto", "recipients", "tags":
			obj[k] = vs
		case "attachments", "extra":
			return badRequest("%s: send it as JSON", k)
		default:
			if len(vs) > 1 {
				return badRequest("%s: given more than once", k)
			}
			obj[k] = vs[0]
		}
	}
	b, err := json.Marshal(obj)
	if err != nil {
		return badRequest("body: %v", err)
	}
	return decodeJSON(bytes.NewReader(b), req)
}

func formBool(v string) (bool, bool) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "true", "yes", "on", "1":
		return true, true
	case "false", "no", "off", "0":
		return false, true
	}
	return false, false
}

// stringList parses a field that holds a string or an array of strings.
// null and absent are empty.
func stringList(field string, raw json.RawMessage) ([]string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		return []string{one}, nil
	}
	var many []string
	if err := json.Unmarshal(raw, &many); err != nil {
		return nil, badRequest("%s: want a string or an array of strings", field)
	}
	return many, nil
}

// parseAddresses parses header addresses ("Name <a@b>", lists allowed).
func parseAddresses(field string, raw json.RawMessage) ([]*mail.Address, error) {
	vals, err := stringList(field, raw)
	if err != nil {
		return nil, err
	}
	var out []*mail.Address
	for i, v := range vals {
		name := field
		if len(vals) > 1 {
			name = fmt.Sprintf("%s[%d]", field, i)
		}
		if strings.ContainsAny(v, "\r\n") {
			return nil, badRequest("%s: line break in address", name)
		}
		list, err := mail.ParseAddressList(v)
		if err != nil || len(list) == 0 {
			return nil, badRequest("%s: not an address: %q", name, clip(v))
		}
		for _, a := range list {
			if err := checkAddr(a.Address); err != nil {
				return nil, badRequest("%s: %v", name, err)
			}
		}
		out = append(out, list...)
	}
	return out, nil
}

// checkAddr vets an envelope address (addr-spec, no display name).
func checkAddr(a string) error {
	switch {
	case len(a) > MaxAddressLen:
		return fmt.Errorf("address longer than %d bytes", MaxAddressLen)
	case !utf8.ValidString(a):
		return errors.New("address is not UTF-8")
	case strings.IndexFunc(a, func(r rune) bool { return unicode.IsControl(r) || unicode.IsSpace(r) }) >= 0 && !strings.HasPrefix(a, `"`):
		return fmt.Errorf("space or control character in address %q", clip(a))
	}
	at := strings.LastIndexByte(a, '@')
	if at <= 0 || at == len(a)-1 {
		return fmt.Errorf("address %q: want local@domain", clip(a))
	}
	if strings.ContainsAny(a, "<>\r\n") {
		return fmt.Errorf("address %q: want local@domain", clip(a))
	}
	return nil
}

// envelopeList parses recipient(s): bare addresses, one each.
func envelopeList(field string, raw json.RawMessage) ([]string, error) {
	vals, err := stringList(field, raw)
	if err != nil {
		return nil, err
	}
	for i, v := range vals {
		v = strings.TrimSpace(v)
		if a, err := mail.ParseAddress(v); err == nil && a.Name == "" {
			v = a.Address // accept <a@b>
		}
		if err := checkAddr(v); err != nil {
			name := field
			if len(vals) > 1 {
				name = fmt.Sprintf("%s[%d]", field, i)
			}
			return nil, badRequest("%s: %v", name, err)
		}
		vals[i] = v
	}
	return vals, nil
}

func parseTags(raw json.RawMessage) ([]string, error) {
	vals, err := stringList("tags", raw)
	if err != nil {
		return nil, err
	}
	var tags []string
	for _, v := range vals {
		for t := range strings.SplitSeq(v, ",") {
			t = strings.TrimSpace(t)
			if t == "" {
				continue
			}
			if err := checkTag(t); err != nil {
				return nil, badRequest("tags: %v", err)
			}
			tags = append(tags, t)
		}
	}
	if len(tags) > MaxTags {
		return nil, badRequest("tags: more than %d", MaxTags)
	}
	return tags, nil
}

// checkTag vets one tag: it must survive a comma-separated header and a
// semicolon-separated path segment.
func checkTag(t string) error {
	if len(t) > MaxTagLen {
		return fmt.Errorf("tag longer than %d bytes", MaxTagLen)
	}
	if !utf8.ValidString(t) || strings.IndexFunc(t, func(r rune) bool {
		return unicode.IsControl(r) || r == ',' || r == ';' || r == '/'
	}) >= 0 {
		return fmt.Errorf("tag %q: no commas, semicolons, slashes or control characters", clip(t))
	}
	return nil
}

// planSend validates a send request and builds its message.
func planSend(req *sendRequest, now time.Time) (*sendPlan, error) {
	plan := &sendPlan{}
	var err error
	if plan.tags, err = parseTags(req.Tags); err != nil {
		return nil, err
	}
	one, err := envelopeList("recipient", req.Recipient)
	if err != nil {
		return nil, err
	}
	many, err := envelopeList("recipients", req.Recipients)
	if err != nil {
		return nil, err
	}
	rcpts := append(one, many...)
	var defaultRcpts []string
	var defaultEnvelope string
	if req.MIME != nil {
		for name, set := range map[string]bool{
			"from": req.From != nil, "to": len(req.To) > 0, "cc": len(req.Cc) > 0, "replyto": len(req.ReplyTo) > 0,
			"subject": req.Subject != nil, "text": req.Text != nil, "html": req.HTML != nil, "attachments": req.Attachments != nil,
			"unsubscribe": req.Unsubscribe != nil, "extra": req.Extra != nil,
		} {
			if set {
				return nil, badRequest("%s: not allowed with mime (the message is complete)", name)
			}
		}
		plan.body = []byte(*req.MIME)
		if len(plan.body) == 0 {
			return nil, badRequest("mime: empty")
		}
		defaultEnvelope, defaultRcpts, err = mimeDefaults(plan.body)
		if err != nil {
			return nil, err
		}
	} else {
		var from *mail.Address
		if req.From == nil {
			return nil, badRequest("from: missing (or give mime)")
		}
		fl, err := parseAddresses("from", json.RawMessage(strconvQuote(*req.From)))
		if err != nil {
			return nil, err
		}
		if len(fl) != 1 {
			return nil, badRequest("from: want one address")
		}
		from = fl[0]
		to, err := parseAddresses("to", req.To)
		if err != nil {
			return nil, err
		}
		cc, err := parseAddresses("cc", req.Cc)
		if err != nil {
			return nil, err
		}
		replyTo, err := parseAddresses("replyto", req.ReplyTo)
		if err != nil {
			return nil, err
		}
		if req.Text == nil && req.HTML == nil {
			return nil, badRequest("text: give text, html or both (or mime)")
		}
		if req.Subject != nil && (len(*req.Subject) > MaxSubjectLen || strings.ContainsAny(*req.Subject, "\r\n")) {
			return nil, badRequest("subject: one line of at most %d bytes", MaxSubjectLen)
		}
		if len(req.Attachments) > MaxAttachments {
			return nil, badRequest("attachments: more than %d", MaxAttachments)
		}
		plan.body, err = buildMessage(req, from, to, cc, replyTo, now)
		if err != nil {
			return nil, err
		}
		defaultEnvelope = from.Address
		for _, a := range append(to, cc...) {
			defaultRcpts = append(defaultRcpts, a.Address)
		}
	}
	if len(rcpts) == 0 {
		rcpts = defaultRcpts
	}
	plan.recipients = dedupe(rcpts)
	switch {
	case len(plan.recipients) == 0:
		return nil, badRequest("recipients: missing (give recipient, recipients, to or cc)")
	case len(plan.recipients) > MaxRecipients:
		return nil, badRequest("recipients: more than %d", MaxRecipients)
	}
	if req.Envelope != nil {
		plan.envelope = strings.TrimSpace(*req.Envelope)
		if plan.envelope == "<>" {
			plan.envelope = "" // the null sender, as SMTP writes it
		}
		if a, err := mail.ParseAddress(plan.envelope); err == nil && a.Name == "" {
			plan.envelope = a.Address
		}
		if plan.envelope != "" { // "" is the null sender
			if err := checkAddr(plan.envelope); err != nil {
				return nil, badRequest("envelope: %v", err)
			}
		}
	} else {
		if defaultEnvelope == "" {
			return nil, badRequest("envelope: missing (the message has no From address)")
		}
		plan.envelope = defaultEnvelope
	}
	return plan, nil
}

// mimeDefaults reads a whole message's top-level header for the default
// envelope (From) and recipients (To and Cc).
func mimeDefaults(body []byte) (envelope string, rcpts []string, err error) {
	th, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(body)))
	if err != nil {
		return "", nil, badRequest("mime: cannot read the header: %v", err)
	}
	h := mail.Header{Header: message.Header{Header: th}}
	if from, err := h.AddressList("From"); err == nil && len(from) == 1 {
		envelope = from[0].Address
	}
	for _, k := range []string{"To", "Cc"} {
		list, err := h.AddressList(k)
		if err != nil {
			continue // the caller must then name recipients
		}
		for _, a := range list {
			if checkAddr(a.Address) == nil {
				rcpts = append(rcpts, a.Address)
			}
		}
	}
	return envelope, rcpts, nil
}

// buildMessage writes the message the structured fields describe: text
// and html as multipart/alternative, attachments in a multipart/mixed.
func buildMessage(req *sendRequest, from *mail.Address, to, cc, replyTo []*mail.Address, now time.Time) ([]byte, error) {
	type part struct {
		h    message.Header
		data []byte
	}
	var atts []part
	for i, a := range req.Attachments {
		field := fmt.Sprintf("attachments[%d]", i)
		if a.Name == "" || strings.ContainsAny(a.Name, "\r\n\x00/\\") || len(a.Name) > 255 || !utf8.ValidString(a.Name) {
			return nil, badRequest("%s.name: want a file name without line breaks or slashes, 1 to 255 bytes", field)
		}
		ct := a.Type
		if ct == "" {
			ct = "application/octet-stream"
		}
		mt, params, err := stdmime.ParseMediaType(ct)
		if err != nil || !strings.Contains(mt, "/") || strings.HasPrefix(mt, "multipart/") || strings.HasPrefix(mt, "message/") {
			return nil, badRequest("%s.type: not a media type: %q", field, clip(a.Type))
		}
		data, err := base64.StdEncoding.DecodeString(a.Data)
		if err != nil {
			if data, err = base64.RawStdEncoding.DecodeString(a.Data); err != nil {
				return nil, badRequest("%s.data: not base64", field)
			}
		}
		var h message.Header
		params["name"] = a.Name
		h.SetContentType(mt, params)
		h.SetContentDisposition("attachment", map[string]string{"filename": a.Name})
		h.Set("Content-Transfer-Encoding", "base64")
		atts = append(atts, part{h, data})
	}

	var h mail.Header
	h.SetDate(now)
	h.SetAddressList("From", []*mail.Address{from})
	if len(to) > 0 {
		h.SetAddressList("To", to)
	}
	if len(cc) > 0 {
		h.SetAddressList("Cc", cc)
	}
	if len(replyTo) > 0 {
		h.SetAddressList("Reply-To", replyTo)
	}
	if req.Subject != nil {
		h.SetSubject(*req.Subject)
	}
	host := from.Address[strings.LastIndexByte(from.Address, '@')+1:]
	if err := h.GenerateMessageIDWithHostname(host); err != nil {
		return nil, fmt.Errorf("api: message-id: %w", err)
	}
	if req.Unsubscribe != nil {
		v := strings.TrimSpace(*req.Unsubscribe)
		if v == "" || len(v) > 2000 || strings.ContainsAny(v, "\r\n") || !isASCII(v) {
			return nil, badRequest("unsubscribe: want a URL or mailto: address on one line, at most 2000 bytes")
		}
		if !strings.HasPrefix(v, "<") {
			v = "<" + v + ">"
		}
		h.Set("List-Unsubscribe", v)
		// RFC 8058 one-click: only for an https URI (its §3.1), so that
		// the mail client may POST to it without asking the recipient.
		if oneClick(v) {
			h.Set("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")
		}
	}
	if len(req.Extra) > 50 {
		return nil, badRequest("extra: more than 50 headers")
	}
	names := make([]string, 0, len(req.Extra))
	for k := range req.Extra {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		v := req.Extra[k]
		lk := strings.ToLower(k)
		switch {
		case !strings.HasPrefix(lk, "x-") || len(k) > 76 || !validFieldName(k):
			return nil, badRequest("extra: %q: only X-* header names", clip(k))
		case strings.HasPrefix(lk, "x-smtpeter-"):
			return nil, badRequest("extra: %q: use the properties trackclicks, trackopens, preventscam and tags", clip(k))
		case strings.ContainsAny(v, "\r\n") || len(v) > 998:
			return nil, badRequest("extra: %q: want one line of at most 998 bytes", clip(k))
		}
		h.Set(k, stdmime.QEncoding.Encode("utf-8", v))
	}
	// go-message writes the field set last first; turn the list around
	// so that the message reads Date, From, To, ... in the order set.
	var natural mail.Header
	for f := h.Fields(); f.Next(); {
		natural.Add(f.Key(), f.Value())
	}
	h = natural

	leaf := func(ct, s string) part {
		var ph message.Header
		ph.SetContentType(ct, map[string]string{"charset": "utf-8"})
		ph.Set("Content-Transfer-Encoding", "quoted-printable")
		return part{ph, []byte(s)}
	}
	var bodies []part
	if req.Text != nil {
		bodies = append(bodies, leaf("text/plain", *req.Text))
	}
	if req.HTML != nil {
		bodies = append(bodies, leaf("text/html", *req.HTML))
	}

	var buf bytes.Buffer
	writeLeaf := func(mw *message.Writer, p part) error {
		w, err := mw.CreatePart(p.h)
		if err != nil {
			return err
		}
		if _, err := w.Write(p.data); err != nil {
			return err
		}
		return w.Close()
	}
	// writeBody writes the text/html body either as the top entity (top
	// is the message header) or as a part of parent.
	writeBody := func(top *message.Header, parent *message.Writer) error {
		var bh message.Header
		single := len(bodies) == 1
		if single {
			bh = bodies[0].h
		} else {
			bh.SetContentType("multipart/alternative", nil)
		}
		var w *message.Writer
		var err error
		if top != nil {
			for f := bh.Fields(); f.Next(); {
				top.Set(f.Key(), f.Value())
			}
			w, err = message.CreateWriter(&buf, *top)
		} else {
			w, err = parent.CreatePart(bh)
		}
		if err != nil {
			return err
		}
		if single {
			_, err = w.Write(bodies[0].data)
		} else {
			for _, b := range bodies {
				if err = writeLeaf(w, b); err != nil {
					break
				}
			}
		}
		if err != nil {
			return err
		}
		return w.Close()
	}

	var err error
	if len(atts) == 0 {
		err = writeBody(&h.Header, nil)
	} else {
		h.SetContentType("multipart/mixed", nil)
		var mw *message.Writer
		if mw, err = message.CreateWriter(&buf, h.Header); err == nil {
			if err = writeBody(nil, mw); err == nil {
				for _, a := range atts {
					if err = writeLeaf(mw, a); err != nil {
						break
					}
				}
			}
			if err == nil {
				err = mw.Close()
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("api: build message: %w", err)
	}
	return buf.Bytes(), nil
}

// oneClick reports whether a List-Unsubscribe value (one or more <URI>s,
// comma-separated) holds an https URI, which RFC 8058 one-click
// unsubscription needs.
func oneClick(v string) bool {
	for u := range strings.SplitSeq(v, ",") {
		u = strings.TrimSpace(u)
		u = strings.TrimSuffix(strings.TrimPrefix(u, "<"), ">")
		if len(u) > len("https://") && strings.EqualFold(u[:len("https://")], "https://") {
			return true
		}
	}
	return false
}

// validFieldName reports whether k is an RFC 5322 field name: printable
// US-ASCII except colon.
func validFieldName(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		if k[i] <= ' ' || k[i] > '~' || k[i] == ':' {
			return false
		}
	}
	return true
}

func dedupe(in []string) []string {
	seen := make(map[string]bool, len(in))
	out := in[:0:0]
	for _, s := range in {
		k := strings.ToLower(s)
		if !seen[k] {
			seen[k] = true
			out = append(out, s)
		}
	}
	return out
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func allASCII(ss []string) bool {
	for _, s := range ss {
		if !isASCII(s) {
			return false
		}
	}
	return true
}

func strconvQuote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// clip shortens s for an error message.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

func (s *server) takeAccountSlot(account string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.acctSends[account] >= max(1, s.cfg.MaxSends/2) {
		return false
	}
	s.acctSends[account]++
	return true
}

func (s *server) releaseAccountSlot(account string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.acctSends[account]--; s.acctSends[account] <= 0 {
		delete(s.acctSends, account)
	}
}
