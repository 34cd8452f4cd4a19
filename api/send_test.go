package api

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"

	trmime "github.com/trackrelay/trackrelay/mime"
	"github.com/trackrelay/trackrelay/smtpd"
	"github.com/trackrelay/trackrelay/store"
)

// spooled returns the spooled message and copy behind a copy id.
func (e *env) spooled(id string) ([]byte, *store.Copy) {
	e.t.Helper()
	cid, err := store.ParseID(id)
	if err != nil {
		e.t.Fatal(err)
	}
	c, err := e.relay.Copy(context.Background(), cid)
	if err != nil {
		e.t.Fatalf("copy %s: %v", id, err)
	}
	m, err := e.relay.Message(context.Background(), c.MessageID)
	if err != nil {
		e.t.Fatal(err)
	}
	f, err := e.spool.Open(m)
	if err != nil {
		e.t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		e.t.Fatal(err)
	}
	return b, c
}

func (e *env) send(key string, req any) (int, []byte) {
	e.t.Helper()
	var body []byte
	switch r := req.(type) {
	case string:
		body = []byte(r)
	default:
		var err error
		if body, err = json.Marshal(r); err != nil {
			e.t.Fatal(err)
		}
	}
	st, _, b := e.do(http.MethodPost, "/v1/send", key, bytes.NewReader(body), "Content-Type", "application/json")
	return st, b
}

// leaves walks a message and returns "type:body" per leaf, in order.
func leaves(t testing.TB, raw []byte) (*message.Entity, []string) {
	t.Helper()
	ent, err := message.Read(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("reading the built message: %v\n%s", err, raw)
	}
	var out []string
	var walk func(*message.Entity)
	walk = func(e *message.Entity) {
		mt, params, _ := e.Header.ContentType()
		if mr := e.MultipartReader(); mr != nil {
			out = append(out, mt)
			for {
				p, err := mr.NextPart()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("part: %v", err)
				}
				walk(p)
			}
			return
		}
		b, err := io.ReadAll(e.Body)
		if err != nil {
			t.Fatalf("leaf: %v", err)
		}
		if n := params["name"]; n != "" {
			mt += ";name=" + n
		}
		out = append(out, mt+":"+string(b))
	}
	walk(ent)
	return ent, out
}

func TestSendBuildsMIME(t *testing.T) {
	pdf := []byte("%PDF-1.4 fake\x00\x01\xff")
	tests := []struct {
		name   string
		req    map[string]any
		rcpts  []string
		env    string
		leaves []string
	}{
		{
			name:   "text only",
			req:    map[string]any{"from": "Shop <news@shop.example>", "to": "ann@example.com", "subject": "Hi", "text": "hello\n"},
			rcpts:  []string{"ann@example.com"},
			env:    "news@shop.example",
			leaves: []string{"text/plain:hello\r\n"},
		},
		{
			name:   "html only, to and cc lists, utf-8 subject",
			req:    map[string]any{"from": "news@shop.example", "to": []string{"Ann <ann@example.com>", "bob@example.com"}, "cc": "cy@example.com", "subject": "Grüße", "html": `<a href="https://shop.example/">x</a>`},
			rcpts:  []string{"ann@example.com", "bob@example.com", "cy@example.com"},
			env:    "news@shop.example",
			leaves: []string{`text/html:<a href="https://shop.example/">x</a>`},
		},
		{
			name:   "text and html",
			req:    map[string]any{"from": "news@shop.example", "to": "ann@example.com", "text": "t", "html": "<p>h</p>", "recipient": "bcc@example.com", "envelope": "bounce@shop.example"},
			rcpts:  []string{"bcc@example.com"},
			env:    "bounce@shop.example",
			leaves: []string{"multipart/alternative", "text/plain:t", "text/html:<p>h</p>"},
		},
		{
			name: "attachments",
			req: map[string]any{"from": "news@shop.example", "to": "ann@example.com", "text": "t", "html": "<p>h</p>",
				"attachments": []map[string]string{{"name": "invoice ü.pdf", "type": "application/pdf", "data": base64.StdEncoding.EncodeToString(pdf)}, {"name": "a.txt", "data": base64.StdEncoding.EncodeToString([]byte("att"))}}},
			rcpts:  []string{"ann@example.com"},
			env:    "news@shop.example",
			leaves: []string{"multipart/mixed", "multipart/alternative", "text/plain:t", "text/html:<p>h</p>", "application/pdf;name=invoice ü.pdf:" + string(pdf), "application/octet-stream;name=a.txt:att"},
		},
		{
			name:   "recipients list and duplicates",
			req:    map[string]any{"from": "news@shop.example", "text": "t", "recipients": []string{"a@example.com", "<b@example.com>", "A@example.com"}, "recipient": "c@example.com"},
			rcpts:  []string{"c@example.com", "a@example.com", "b@example.com"},
			env:    "news@shop.example",
			leaves: []string{"text/plain:t"},
		},
		{
			name:   "mime",
			req:    map[string]any{"mime": "From: Shop <news@shop.example>\r\nTo: ann@example.com, Bob <bob@example.com>\r\nSubject: x\r\n\r\nbody\r\n", "tags": []string{"nov", "news"}, "trackclicks": false},
			rcpts:  []string{"ann@example.com", "bob@example.com"},
			env:    "news@shop.example",
			leaves: []string{"text/plain:body\r\n"},
		},
		{
			name:   "mime with null envelope",
			req:    map[string]any{"mime": "Subject: x\r\n\r\nbody\r\n", "recipient": "ann@example.com", "envelope": "<>"},
			rcpts:  []string{"ann@example.com"},
			env:    "",
			leaves: []string{"text/plain:body\r\n"},
		},
	}
	e := newEnv(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, body := e.send(keyShop, tc.req)
			if st != http.StatusOK {
				t.Fatalf("status %d: %s", st, body)
			}
			ids := sendIDs(t, body)
			if len(ids) != len(tc.rcpts) {
				t.Fatalf("ids %v, want one per %v", ids, tc.rcpts)
			}
			var first []byte
			for _, r := range tc.rcpts {
				id, ok := ids[r]
				if !ok {
					t.Fatalf("no id for %s in %v", r, ids)
				}
				raw, c := e.spooled(id)
				if c.Recipient != r || c.From != tc.env || c.Account != "shop" || c.Credential != "shop-api" {
					t.Fatalf("copy %+v: want recipient %s, envelope %q, account shop", c, r, tc.env)
				}
				if first == nil {
					first = raw
				}
			}
			if c := mustCopy(t, e, ids[tc.rcpts[0]]); tc.req["trackclicks"] == false && c.Clicks {
				t.Errorf("trackclicks false did not reach the copy")
			} else if tc.req["trackclicks"] == nil && !c.Clicks {
				t.Errorf("the credential's click tracking was lost")
			}
			ent, got := leaves(t, first)
			if strings.Join(got, "\n") != strings.Join(tc.leaves, "\n") {
				t.Fatalf("leaves:\n%q\nwant\n%q\n%s", got, tc.leaves, first)
			}
			if tc.req["mime"] == nil {
				h := mail.Header{Header: ent.Header}
				if subj, ok := tc.req["subject"].(string); ok {
					if got, _ := h.Subject(); got != subj {
						t.Errorf("subject %q, want %q", got, subj)
					}
				}
				if id, err := h.MessageID(); err != nil || !strings.HasSuffix(id, "@shop.example") {
					t.Errorf("message-id %q, %v", id, err)
				}
				if d, err := h.Date(); err != nil || !d.Equal(e.now) {
					t.Errorf("date %v, %v", d, err)
				}
			}
		})
	}
}

func mustCopy(t testing.TB, e *env, id string) *store.Copy {
	t.Helper()
	_, c := e.spooled(id)
	return c
}

// TestSendGolden pins the built message byte for byte (boundaries and the
// Message-ID, which are random, are normalized).
func TestSendGolden(t *testing.T) {
	e := newEnv(t)
	st, body := e.send(keyShop, map[string]any{
		"from": "Shop <news@shop.example>", "to": []string{"Ann Ünïcode <ann@example.com>"}, "replyto": "help@shop.example",
		"subject": "Your invoice — November", "text": "Hello Ann,\nyour invoice is attached. " + strings.Repeat("long line ", 120) + "\n",
		"html":        `<p>Hello Ann, <a href="https://shop.example/invoice?id=1&amp;x=2">invoice</a></p>`,
		"unsubscribe": "https://shop.example/unsubscribe?u=ann", "extra": map[string]string{"X-Campaign": "nov-2026", "X-Note": "grüße"},
		"attachments": []map[string]string{{"name": "invoice.pdf", "type": "application/pdf", "data": base64.StdEncoding.EncodeToString([]byte("%PDF fake"))}},
	})
	if st != http.StatusOK {
		t.Fatalf("status %d: %s", st, body)
	}
	ids := sendIDs(t, body)
	raw, _ := e.spooled(ids["ann@example.com"])
	boundaries := regexp.MustCompile(`boundary=([0-9a-f]+)`).FindAllSubmatch(raw, -1)
	for i, b := range boundaries {
		raw = bytes.ReplaceAll(raw, b[1], []byte("BOUNDARY"+string(rune('A'+i))))
	}
	raw = regexp.MustCompile(`Message-Id: <[^>]+>`).ReplaceAll(raw, []byte("Message-Id: <ID>"))
	raw = regexp.MustCompile(` id [0-9a-f]{16}(\r\n|;)`).ReplaceAll(raw, []byte(" id ID$1"))
	raw = regexp.MustCompile(`(?m)^(Received: from )\S+ \(\[[^]]+\]\)`).ReplaceAll(raw, []byte("${1}CLIENT ([CLIENT])"))
	raw = regexp.MustCompile(`(>|ID); [A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} [\d:]{8} \+0000\r\n`).ReplaceAll(raw, []byte("$1; DATE\r\n"))
	goldenCompare(t, "send/structured.eml", raw)
	for _, line := range bytes.Split(raw, []byte("\r\n")) {
		if len(line) > 998 {
			t.Fatalf("line longer than 998 octets: %.80q", line)
		}
	}
}

func TestSendRejects(t *testing.T) {
	e := newEnv(t)
	big := `{"from":"a@b.example","to":"c@d.example","text":"` + strings.Repeat("x", 2<<20) + `"}`
	hugeMIME := map[string]any{"mime": "Subject: x\r\n\r\n" + strings.Repeat("y", 300<<10), "recipient": "a@b.example", "envelope": ""}
	tests := []struct {
		name   string
		req    any
		status int
		errSub string
	}{
		{"not json", `{"from":`, 400, "body"},
		{"trailing garbage", `{"mime":"Subject: x\r\n\r\nb","recipient":"a@b.example"} {}`, 400, "one JSON object"},
		{"array", `[1,2]`, 400, "JSON object"},
		{"empty", ``, 400, "empty"},
		{"unknown field", map[string]any{"from": "a@b.example", "bcc": "x@y.example", "text": "t"}, 400, "bcc"},
		{"wrong type", `{"trackclicks":"yes","from":"a@b.example","to":"c@d.example","text":"t"}`, 400, "trackclicks"},
		{"to not an address", map[string]any{"from": "a@b.example", "to": "nope", "text": "t"}, 400, "to"},
		{"to[1] bad", map[string]any{"from": "a@b.example", "to": []string{"c@d.example", "x y"}, "text": "t"}, 400, "to[1]"},
		{"to a number", `{"from":"a@b.example","to":5,"text":"t"}`, 400, "to: want a string or an array"},
		{"no from", map[string]any{"to": "c@d.example", "text": "t"}, 400, "from"},
		{"two from", map[string]any{"from": "a@b.example, c@d.example", "to": "c@d.example", "text": "t"}, 400, "from"},
		{"no body", map[string]any{"from": "a@b.example", "to": "c@d.example"}, 400, "text"},
		{"no recipients", map[string]any{"from": "a@b.example", "text": "t"}, 400, "recipients"},
		{"bad recipient", map[string]any{"from": "a@b.example", "text": "t", "recipient": "a@"}, 400, "recipient"},
		{"recipient with CRLF", map[string]any{"from": "a@b.example", "text": "t", "recipient": "a@b.example\r\nRCPT TO:<x@y>"}, 400, "recipient"},
		{"recipients[2] bad", map[string]any{"from": "a@b.example", "text": "t", "recipients": []string{"a@b.example", "c@d.example", "e"}}, 400, "recipients[2]"},
		{"bad envelope", map[string]any{"from": "a@b.example", "to": "c@d.example", "text": "t", "envelope": "no at"}, 400, "envelope"},
		{"subject with newline", map[string]any{"from": "a@b.example", "to": "c@d.example", "text": "t", "subject": "a\r\nBcc: x@y.example"}, 400, "subject"},
		{"mime and from", map[string]any{"mime": "Subject: x\r\n\r\nb", "from": "a@b.example", "recipient": "c@d.example"}, 400, "from"},
		{"mime empty", map[string]any{"mime": "", "recipient": "c@d.example"}, 400, "mime"},
		{"mime without recipients", map[string]any{"mime": "Subject: x\r\n\r\nb"}, 400, "recipients"},
		{"mime without from", map[string]any{"mime": "Subject: x\r\n\r\nb", "recipient": "c@d.example"}, 400, "envelope"},
		{"attachment bad base64", map[string]any{"from": "a@b.example", "to": "c@d.example", "text": "t", "attachments": []map[string]string{{"name": "a", "data": "!!!"}}}, 400, "attachments[0].data"},
		{"attachment no name", map[string]any{"from": "a@b.example", "to": "c@d.example", "text": "t", "attachments": []map[string]string{{"data": "YQ=="}}}, 400, "attachments[0].name"},
		{"attachment bad type", map[string]any{"from": "a@b.example", "to": "c@d.example", "text": "t", "attachments": []map[string]string{{"name": "a", "type": "nonsense", "data": "YQ=="}}}, 400, "attachments[0].type"},
		{"attachment unknown field", `{"from":"a@b.example","to":"c@d.example","text":"t","attachments":[{"name":"a","data":"YQ==","size":1}]}`, 400, "size"},
		{"extra not x-", map[string]any{"from": "a@b.example", "to": "c@d.example", "text": "t", "extra": map[string]string{"Bcc": "x@y.example"}}, 400, "extra"},
		{"extra control header", map[string]any{"from": "a@b.example", "to": "c@d.example", "text": "t", "extra": map[string]string{"X-Smtpeter-Trackclicks": "false"}}, 400, "trackclicks"},
		{"extra with newline", map[string]any{"from": "a@b.example", "to": "c@d.example", "text": "t", "extra": map[string]string{"X-A": "1\r\nBcc: x@y.example"}}, 400, "extra"},
		{"extra bad name", map[string]any{"from": "a@b.example", "to": "c@d.example", "text": "t", "extra": map[string]string{"X-A:B": "1"}}, 400, "extra"},
		{"extra with mime", map[string]any{"mime": "Subject: x\r\n\r\nb", "recipient": "c@d.example", "envelope": "", "extra": map[string]string{"X-A": "1"}}, 400, "extra"},
		{"unsubscribe with newline", map[string]any{"from": "a@b.example", "to": "c@d.example", "text": "t", "unsubscribe": "https://x/\r\nBcc: y"}, 400, "unsubscribe"},
		{"bad tag", map[string]any{"from": "a@b.example", "to": "c@d.example", "text": "t", "tags": []string{"a;b"}}, 400, "tags"},
		{"too many tags", map[string]any{"from": "a@b.example", "to": "c@d.example", "text": "t", "tags": strings.Repeat("t,", 30) + "x"}, 400, "tags"},
		{"bad control header", map[string]any{"mime": "X-Smtpeter-Trackclicks: maybe\r\nSubject: x\r\n\r\nb", "recipient": "c@d.example", "envelope": ""}, 400, "x-smtpeter-trackclicks"},
		{"body too large", big, 413, "larger than"},
		{"message too large for the spool", hugeMIME, 413, "too big"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, body := e.send(keyShop, tc.req)
			wantError(t, st, body, tc.status, tc.errSub)
		})
	}
	t.Run("content type", func(t *testing.T) {
		st, _, body := e.do(http.MethodPost, "/v1/send", keyShop, strings.NewReader(`{}`), "Content-Type", "text/plain")
		wantError(t, st, body, 415, "application/json")
	})
	// Nothing of the refused requests reached the store.
	days, err := e.relay.EventDays(context.Background(), "shop")
	if err != nil || len(days) != 0 {
		t.Fatalf("refused sends left events: %v, %v", days, err)
	}
}

// failingSubmitter answers every Submit with err, after reading the body
// as the contract says.
type failingSubmitter struct{ err error }

func (f failingSubmitter) Submit(ctx context.Context, sub *smtpd.Submission, body io.Reader) (*smtpd.Receipt, error) {
	if _, err := io.Copy(io.Discard, body); err != nil {
		return nil, err
	}
	return nil, f.err
}

// TestSendErrorMapping pins how Submitter errors become answers: the one
// error boundary of /v1/send.
func TestSendErrorMapping(t *testing.T) {
	tests := []struct {
		err    error
		status int
		errSub string
	}{
		{&trmime.ControlError{Header: "x-smtpeter-trackclicks", Value: "maybe"}, 400, "x-smtpeter-trackclicks"},
		{fmt.Errorf("spool: %w", smtpd.ErrTooBig), 413, "too big"},
		{errors.New("disk full at /var/secret/path"), 503, "try again later"},
		{context.DeadlineExceeded, 503, "try again later"},
	}
	for _, tc := range tests {
		t.Run(tc.err.Error(), func(t *testing.T) {
			e := newEnv(t)
			kr, _ := NewKeyring([]Key{{Hash: hashKey(t, keyShop), Cred: &smtpd.Credential{Username: "u", Account: "shop"}}})
			srv := httptest.NewServer(New(Config{Submitter: failingSubmitter{tc.err}, Store: e.relay, Keys: kr}))
			defer srv.Close()
			e.srv = srv
			st, body := e.send(keyShop, map[string]any{"from": "a@b.example", "to": "c@d.example", "text": "t"})
			wantError(t, st, body, tc.status, tc.errSub)
			if strings.Contains(string(body), "secret") {
				t.Fatalf("internal detail leaked: %s", body)
			}
		})
	}
}

// sendIDs reads a /v1/send answer (SMTPeter's shape: {"id": "recipient"})
// and returns recipient -> id, checking each id's form.
func sendIDs(t testing.TB, body []byte) map[string]string {
	t.Helper()
	var byID map[string]string
	if err := json.Unmarshal(body, &byID); err != nil {
		t.Fatalf("send answer %s: %v", body, err)
	}
	out := make(map[string]string, len(byID))
	for id, rcpt := range byID {
		if _, err := store.ParseID(id); err != nil {
			t.Fatalf("send answer %s: %v", body, err)
		}
		if _, dup := out[rcpt]; dup {
			t.Fatalf("send answer %s: two ids for %s", body, rcpt)
		}
		out[rcpt] = id
	}
	return out
}

func TestSendForm(t *testing.T) {
	e := newEnv(t)
	post := func(form url.Values) (int, []byte) {
		st, _, b := e.do(http.MethodPost, "/v1/send", keyShop, strings.NewReader(form.Encode()), "Content-Type", "application/x-www-form-urlencoded")
		return st, b
	}
	st, body := post(url.Values{"from": {"news@shop.example"}, "to": {"ann@example.com", "Bob <bob@example.com>"}, "subject": {"Hi"},
		"text": {"hello"}, "trackclicks": {"no"}, "tags": {"a", "b"}})
	if st != 200 {
		t.Fatalf("%d %s", st, body)
	}
	ids := sendIDs(t, body)
	if len(ids) != 2 {
		t.Fatalf("ids %v", ids)
	}
	if c := mustCopy(t, e, ids["bob@example.com"]); c.Clicks || strings.Join(c.Tags, ",") != "a,b" {
		t.Fatalf("copy %+v: trackclicks=no or tags lost", c)
	}
	bad := []struct {
		form   url.Values
		errSub string
	}{
		{url.Values{"from": {"a@b.example"}, "to": {"c@d.example"}, "text": {"t"}, "trackclicks": {"maybe"}}, "trackclicks"},
		{url.Values{"from": {"a@b.example", "b@b.example"}, "to": {"c@d.example"}, "text": {"t"}}, "from"},
		{url.Values{"from": {"a@b.example"}, "to": {"c@d.example"}, "text": {"t"}, "attachments": {"x"}}, "attachments"},
		{url.Values{"from": {"a@b.example"}, "to": {"c@d.example"}, "text": {"t"}, "nonsense": {"x"}}, "nonsense"},
	}
	for _, tc := range bad {
		st, body := post(tc.form)
		wantError(t, st, body, 400, tc.errSub)
	}
}

var spoolAdded = regexp.MustCompile(`^(Date: [A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d \+0000|Message-ID: <[0-9a-f]{16}\.[0-9a-f]{12}@[^<>@\s]+>)\r?\n`)

// asSent checks that raw, a spooled message, is sent as the spool writes
// it: the relay's Received field first, then sent byte for byte but for a
// Date and a Message-ID field at the end of its header (RFC 6409 §8).
func asSent(t *testing.T, raw, sent []byte) {
	t.Helper()
	i := bytes.Index(raw, []byte(" +0000\n"))
	if j := bytes.Index(raw, []byte(" +0000\r\n")); j >= 0 && (i < 0 || j < i) {
		i = j + 1
	}
	if !bytes.HasPrefix(raw, []byte("Received: from ")) || i < 0 || !bytes.Contains(raw[:i], []byte("(trackrelay) with HTTP")) {
		t.Fatalf("no Received field of the relay's first: %.200q", raw)
	}
	rest := raw[i+len(" +0000\n"):]
	if bytes.Equal(rest, sent) {
		return
	}
	k := -1
	if j := bytes.Index(sent, []byte("\n\r\n")); j >= 0 {
		k = j + 1
	}
	if j := bytes.Index(sent, []byte("\n\n")); j >= 0 && (k < 0 || j+1 < k) {
		k = j + 1
	}
	if k < 0 || len(rest) < len(sent) || !bytes.Equal(rest[:k], sent[:k]) || !bytes.Equal(rest[len(rest)-(len(sent)-k):], sent[k:]) {
		t.Fatalf("spooled message differs from the one sent (%d vs %d bytes)", len(rest), len(sent))
	}
	for mid := rest[k : len(rest)-(len(sent)-k)]; len(mid) > 0; {
		m := spoolAdded.Find(mid)
		if m == nil {
			t.Fatalf("the spool added %q", mid)
		}
		mid = mid[len(m):]
	}
}

// RFC 8058: an https unsubscribe URL gets List-Unsubscribe-Post, a mailto:
// one does not (one click cannot send mail).
func TestSendUnsubscribeOneClick(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		unsub string
		post  bool
	}{
		{"https://shop.example/u?x=1", true},
		{"<HTTPS://shop.example/u>", true},
		{"mailto:unsub@shop.example", false},
		{"<mailto:u@shop.example>, <https://shop.example/u>", true},
		{"http://shop.example/u", false},
	} {
		st, body := e.send(keyShop, map[string]any{"from": "a@shop.example", "to": "ann@example.com", "text": "t", "unsubscribe": tc.unsub})
		if st != http.StatusOK {
			t.Fatalf("%s: status %d: %s", tc.unsub, st, body)
		}
		raw, _ := e.spooled(sendIDs(t, body)["ann@example.com"])
		if got := bytes.Contains(raw, []byte("\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")); got != tc.post {
			t.Errorf("%s: List-Unsubscribe-Post %v, want %v", tc.unsub, got, tc.post)
		}
	}
}

// A whole message sent without Date or Message-ID gets both (RFC 6409 §8),
// and a Received field; one that has them keeps its own.
func TestSendMIMEGetsDateAndMessageID(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		msg   string
		added bool
	}{
		{"From: a@shop.example\r\nSubject: hi\r\n\r\nbody\r\n", true},
		{"From: a@shop.example\r\nDate: Mon, 2 Nov 2026 10:00:00 +0100\r\nMessage-ID: <own@shop.example>\r\n\r\nbody\r\n", false},
	} {
		st, body := e.send(keyShop, map[string]any{"mime": tc.msg, "recipient": "ann@example.com"})
		if st != http.StatusOK {
			t.Fatalf("status %d: %s", st, body)
		}
		raw, _ := e.spooled(sendIDs(t, body)["ann@example.com"])
		asSent(t, raw, []byte(tc.msg))
		s := string(raw)
		if got := strings.Count(s, "\r\nDate: ") == 1 && strings.Count(strings.ToLower(s), "\r\nmessage-id: ") == 1; !got {
			t.Errorf("want exactly one Date and one Message-ID:\n%s", s)
		}
		if added := strings.Contains(s, "\r\nMessage-ID: <") && !strings.Contains(s, "<own@shop.example>"); added != tc.added {
			t.Errorf("Message-ID added %v, want %v:\n%s", added, tc.added, s)
		}
	}
}

// The OpenAPI document is served at /v1/openapi.json without a key.
func TestOpenAPIServed(t *testing.T) {
	e := newEnv(t)
	st, hdr, body := e.do(http.MethodGet, "/v1/openapi.json", "", nil)
	if st != http.StatusOK || !strings.HasPrefix(hdr.Get("Content-Type"), "application/json") || !bytes.Equal(body, Spec) {
		t.Fatalf("status %d, type %q, %d bytes (want the %d of Spec)", st, hdr.Get("Content-Type"), len(body), len(Spec))
	}
	var doc map[string]any
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatal(err)
	}
	if st, _, _ := e.do(http.MethodPost, "/v1/openapi.json", "", nil); st != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d", st)
	}
}
