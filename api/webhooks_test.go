package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/trackrelay/trackrelay/smtpd"
	"github.com/trackrelay/trackrelay/store"
	"github.com/trackrelay/trackrelay/webhook"
)

const keyWHOperator = "operator-key-0123456789abcdef"

// hookEnv is the REST API over a real store, with the real delivery
// engine sending to a real receiver on loopback.
type hookEnv struct {
	*env
	eng *webhook.Engine
	rc  *hookReceiver
}

// hookReceiver verifies every request with the standard-webhooks library
// against the secrets the test gives it.
type hookReceiver struct {
	srv *httptest.Server
	mu  sync.Mutex
	// secrets the receiver knows; a request verifies when one matches.
	secrets []string
	got     []hookDelivery
}

type hookDelivery struct {
	id       string
	body     map[string]any
	verified map[string]bool // by secret
}

func (hr *hookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	d := hookDelivery{id: r.Header.Get("webhook-id"), verified: map[string]bool{}}
	json.Unmarshal(b, &d.body)
	hr.mu.Lock()
	for _, s := range hr.secrets {
		if wh, err := standardwebhooks.NewWebhook(s); err == nil {
			d.verified[s] = wh.Verify(b, r.Header) == nil
		}
	}
	hr.got = append(hr.got, d)
	hr.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (hr *hookReceiver) know(s string) {
	hr.mu.Lock()
	hr.secrets = append(hr.secrets, s)
	hr.mu.Unlock()
}

func (hr *hookReceiver) deliveries() []hookDelivery {
	hr.mu.Lock()
	defer hr.mu.Unlock()
	return append([]hookDelivery(nil), hr.got...)
}

func newHookEnv(t *testing.T, policy webhook.Policy) *hookEnv {
	t.Helper()
	dir := t.TempDir()
	relay, err := store.OpenRelay(filepath.Join(dir, "relay.db"), store.RelayOptions{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	spool, err := smtpd.NewSpool(smtpd.SpoolConfig{Dir: filepath.Join(dir, "spool"), Store: relay, MaxMessageBytes: 256 << 10, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	kr, err := NewKeyring([]Key{
		{Hash: hashKey(t, keyShop), Cred: &smtpd.Credential{Username: "shop-api", Account: "shop", ClickDomain: "t.example", Scheme: "https"}},
		{Hash: hashKey(t, keyOther), Cred: &smtpd.Credential{Username: "other-api", Account: "other", ClickDomain: "t.example", Scheme: "https"}},
		{Hash: hashKey(t, keyWHOperator), Operator: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"shop", "other"} {
		if err := store.Create(context.Background(), relay, &store.Account{Name: a}); err != nil {
			t.Fatal(err)
		}
	}
	eng, err := webhook.New(webhook.Config{Store: relay, Policy: policy, Poll: 10 * time.Millisecond, Timeout: 2 * time.Second, Lease: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	eng.Start()
	he := &hookEnv{env: &env{t: t, relay: relay, spool: spool, now: time.Now()}, eng: eng, rc: &hookReceiver{}}
	he.srv = newTestServer(New(Config{Submitter: spool, Store: relay, Keys: kr, Webhooks: eng}))
	rsrv := httptest.NewServer(he.rc)
	he.rc.srv = rsrv
	t.Cleanup(func() {
		he.srv.Close()
		rsrv.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		eng.Shutdown(ctx)
		spool.Close()
		relay.Close()
	})
	return he
}

// call sends a JSON body and decodes a JSON answer into out (if non-nil).
func (he *hookEnv) call(method, path, key, body string, out any) (int, []byte) {
	he.t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	st, _, b := he.do(method, path, key, r, "Content-Type", "application/json")
	if out != nil && st < 300 {
		if err := json.Unmarshal(b, out); err != nil {
			he.t.Fatalf("%s %s: %v in %s", method, path, err, b)
		}
	}
	return st, b
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestWebhooksREST(t *testing.T) {
	he := newHookEnv(t, webhook.Policy{AllowHTTP: true, AllowLoopback: true})
	url := he.rc.srv.URL + "/hooks"

	// Make one: the answer holds the id and the secret, once.
	var made webhookJSON
	st, b := he.call("POST", "/v1/webhooks", keyShop, fmt.Sprintf(`{"url":%q,"events":["delivered","test_never"]}`, url), nil)
	wantError(t, st, b, 400, `events: "test_never" is not one of`)
	st, b = he.call("POST", "/v1/webhooks", keyShop, fmt.Sprintf(`{"url":%q,"events":["delivered","clicked","delivered"],"tags":["news"]}`, url), &made)
	if st != 201 || !strings.HasPrefix(made.ID, "wh_") || !strings.HasPrefix(made.Secret, "whsec_") || made.Account != "shop" {
		t.Fatalf("create: %d %s", st, b)
	}
	if strings.Join(made.Events, ",") != "delivered,clicked" || strings.Join(made.Tags, ",") != "news" || !made.Enabled || made.Machine {
		t.Errorf("create: %+v", made)
	}
	he.rc.know(made.Secret)
	path := "/v1/webhooks/" + made.ID
	var got webhookJSON
	if st, b := he.call("GET", path, keyShop, "", &got); st != 200 || got.Secret != "" || got.URL != url {
		t.Fatalf("get: %d %s", st, b)
	}
	if _, b := he.call("GET", "/v1/webhooks", keyShop, "", nil); strings.Contains(string(b), made.Secret) || !strings.Contains(string(b), made.ID) {
		t.Errorf("list: %s", b)
	}
	// Another account sees nothing of it; an operator does.
	st, b = he.call("GET", path, keyOther, "", nil)
	wantError(t, st, b, 404, "no webhook")
	if _, b := he.call("GET", "/v1/webhooks", keyOther, "", nil); strings.Contains(string(b), made.ID) {
		t.Errorf("other account's list shows it: %s", b)
	}
	st, b = he.call("DELETE", path, keyOther, "", nil)
	wantError(t, st, b, 404, "no webhook")
	st, b = he.call("GET", path+"?account=shop", keyOther, "", nil)
	wantError(t, st, b, 403, "its own account only")
	if st, b := he.call("GET", path, keyWHOperator, "", &got); st != 200 || got.ID != made.ID {
		t.Errorf("operator get: %d %s", st, b)
	}
	st, b = he.call("GET", path+"?account=other", keyWHOperator, "", nil)
	wantError(t, st, b, 404, "no webhook")
	if _, b := he.call("GET", "/v1/webhooks", keyWHOperator, "", nil); !strings.Contains(string(b), made.ID) {
		t.Errorf("operator list: %s", b)
	}

	// A stored event of the account reaches the receiver, signed.
	ctx := context.Background()
	ev := store.Event{Log: store.LogDeliveries, Account: "shop", ID: he.relay.NextID(), Time: time.Now().UTC(), Recipient: "ann@example.net", Tags: []string{"news"},
		Fields: map[string]string{"envelope": "shop@example.com", "from": "relay", "to": "mx", "attempt": "1"}}
	other := ev
	other.Tags = []string{"other-tag"}
	if err := he.relay.AppendEvents(ctx, []store.Event{ev, other}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the event", func() bool { return len(he.rc.deliveries()) == 1 })
	d := he.rc.deliveries()[0]
	if !d.verified[made.Secret] || d.body["event"] != "delivered" || d.body["recipient"] != "ann@example.net" {
		t.Fatalf("delivery %+v", d)
	}

	// The test event; then the message list and one message with its attempts.
	var tm webhookMessageJSON
	if st, b := he.call("POST", path+"/test", keyShop, "", &tm); st != 202 || tm.Type != "test" || tm.State != store.WebhookPending {
		t.Fatalf("test: %d %s", st, b)
	}
	waitUntil(t, "the test event", func() bool { return len(he.rc.deliveries()) == 2 })
	if d := he.rc.deliveries()[1]; d.id != tm.ID || d.body["event"] != "test" || !d.verified[made.Secret] {
		t.Errorf("test delivery %+v", d)
	}
	var page struct {
		Messages []webhookMessageJSON `json:"messages"`
		Next     string               `json:"next"`
	}
	waitUntil(t, "both delivered", func() bool {
		he.call("GET", path+"/messages?state=delivered", keyShop, "", &page)
		return len(page.Messages) == 2
	})
	if page.Messages[0].ID != tm.ID || page.Messages[1].Type != "delivered" {
		t.Errorf("messages newest first: %+v", page.Messages)
	}
	if st, _ := he.call("GET", path+"/messages?limit=1", keyShop, "", &page); st != 200 || len(page.Messages) != 1 || page.Next != tm.ID {
		t.Errorf("page 1: %+v", page)
	}
	if he.call("GET", path+"/messages?limit=1&before="+page.Next, keyShop, "", &page); len(page.Messages) != 1 || page.Messages[0].Type != "delivered" {
		t.Errorf("page 2: %+v", page)
	}
	var one webhookMessageJSON
	if st, b := he.call("GET", path+"/messages/"+tm.ID, keyShop, "", &one); st != 200 || one.Tries == nil || len(*one.Tries) != 1 || (*one.Tries)[0].Status != 204 {
		t.Fatalf("message: %d %s", st, b)
	}
	if p, _ := one.Payload.MarshalJSON(); !strings.Contains(string(p), `"event":"test"`) {
		t.Errorf("payload %s", p)
	}
	st, b = he.call("GET", path+"/messages/"+tm.ID, keyOther, "", nil)
	wantError(t, st, b, 404, "no webhook")
	st, b = he.call("GET", path+"/messages/msg_nope", keyShop, "", nil)
	wantError(t, st, b, 404, "no message")
	st, b = he.call("GET", path+"/messages?state=odd", keyShop, "", nil)
	wantError(t, st, b, 400, "state")

	// Resend: the same id again.
	if st, b := he.call("POST", path+"/messages/"+tm.ID+"/resend", keyShop, "", &one); st != 202 || one.State != store.WebhookPending {
		t.Fatalf("resend: %d %s", st, b)
	}
	waitUntil(t, "the resent message", func() bool { return len(he.rc.deliveries()) == 3 })
	if d := he.rc.deliveries()[2]; d.id != tm.ID {
		t.Errorf("resent with id %s, want %s", d.id, tm.ID)
	}

	// Rotate: the new secret is shown once; both sign for 24 hours.
	var rot webhookJSON
	if st, b := he.call("POST", path+"/secret", keyShop, "", &rot); st != 200 || rot.Secret == made.Secret || !strings.HasPrefix(rot.Secret, "whsec_") || rot.OldSecretUntil == nil {
		t.Fatalf("rotate: %d %s", st, b)
	} else if d := time.Until(*rot.OldSecretUntil); d < 23*time.Hour || d > 25*time.Hour {
		t.Errorf("old secret until %v", rot.OldSecretUntil)
	}
	he.rc.know(rot.Secret)
	he.call("POST", path+"/test", keyShop, "", nil)
	waitUntil(t, "a test after rotating", func() bool { return len(he.rc.deliveries()) == 4 })
	if d := he.rc.deliveries()[3]; !d.verified[made.Secret] || !d.verified[rot.Secret] {
		t.Errorf("during the grace period both secrets must verify: %+v", d.verified)
	}
	if _, b := he.call("GET", path, keyShop, "", nil); strings.Contains(string(b), rot.Secret) {
		t.Error("GET shows the new secret")
	}

	// PATCH: pause (tests refused), then enable, which also clears a
	// disabled endpoint.
	if st, b := he.call("PATCH", path, keyShop, `{"paused":true}`, &got); st != 200 || !got.Paused || got.Enabled {
		t.Fatalf("pause: %d %s", st, b)
	}
	st, b = he.call("POST", path+"/test", keyShop, "", nil)
	wantError(t, st, b, 409, "paused")
	if err := store.Update(ctx, he.relay, store.KindWebhook, made.ID, false, func(w *store.Webhook) (*store.Webhook, error) {
		w.Paused, w.Disabled, w.FailingSince = false, "failing since then", time.Now().Add(-6*24*time.Hour)
		return w, nil
	}); err != nil {
		t.Fatal(err)
	}
	if he.call("GET", path, keyShop, "", &got); got.Disabled == "" || got.Enabled || got.FailingSince == nil {
		t.Errorf("disabled endpoint shows %+v", got)
	}
	st, b = he.call("POST", path+"/messages/"+tm.ID+"/resend", keyShop, "", nil)
	wantError(t, st, b, 409, "disabled")
	var en webhookJSON
	if st, b := he.call("PATCH", path, keyShop, `{"enabled":true,"events":[],"machine":true,"tags":["a","b"]}`, &en); st != 200 || !en.Enabled || en.Disabled != "" || en.FailingSince != nil || len(en.Events) != 0 || !en.Machine || len(en.Tags) != 2 {
		t.Fatalf("enable: %d %s", st, b)
	}
	st, b = he.call("PATCH", path, keyShop, `{"paused":true,"enabled":true}`, nil)
	wantError(t, st, b, 400, "contradict")

	// DELETE.
	if st, b := he.call("DELETE", path, keyShop, "", nil); st != 204 {
		t.Fatalf("delete: %d %s", st, b)
	}
	st, b = he.call("GET", path, keyShop, "", nil)
	wantError(t, st, b, 404, "no webhook")

	// An operator makes one for a named account only.
	st, b = he.call("POST", "/v1/webhooks", keyWHOperator, fmt.Sprintf(`{"url":%q}`, url), nil)
	wantError(t, st, b, 400, "?account=")
	st, b = he.call("POST", "/v1/webhooks?account=nobody", keyWHOperator, fmt.Sprintf(`{"url":%q}`, url), nil)
	wantError(t, st, b, 404, "not found")
	if st, b := he.call("POST", "/v1/webhooks?account=other", keyWHOperator, fmt.Sprintf(`{"url":%q}`, url), &made); st != 201 || made.Account != "other" {
		t.Fatalf("operator create: %d %s", st, b)
	}
}

// TestWebhooksRefused: bad requests get a clear 4xx naming the field; the
// strict policy (no engine: the default) refuses http:// and private or
// loopback targets.
func TestWebhooksRefused(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		body, status, sub string
	}{
		{`{"url":"http://hooks.example.com/x"}`, "400", "url: refused by the endpoint policy: url must be https://"},
		{`{"url":"https://127.0.0.1/x"}`, "400", "loopback"},
		{`{"url":"https://localhost/x"}`, "400", "loopback"},
		{`{"url":"https://[::1]/x"}`, "400", "loopback"},
		{`{"url":"https://0.0.0.0/x"}`, "400", "unspecified"},
		{`{"url":"https://10.0.0.7/x"}`, "400", "private"},
		{`{"url":"https://169.254.169.254/x"}`, "400", "link-local"},
		{`{"url":"https://user:pw@hooks.example.com/x"}`, "400", "user name"},
		{`{"url":""}`, "400", "url: required"},
		{`{}`, "400", "url: required"},
		{`{"url":"https://hooks.example.com/x","tags":["a,b"]}`, "400", "tags"},
		{`{"url":"https://hooks.example.com/x","tags":[""]}`, "400", "empty tag"},
		{`{"url":"https://hooks.example.com/x","secret":"mine"}`, "400", "unknown field"},
		{`{"url":"https://hooks.example.com/x"} {}`, "400", "nothing after it"},
		{`[1]`, "400", "body"},
		{`{"url":"https://hooks.example.com/` + strings.Repeat("a", 70<<10) + `"}`, "413", "larger than"},
	} {
		st, _, b := e.do("POST", "/v1/webhooks", keyShop, strings.NewReader(tc.body))
		if fmt.Sprint(st) != tc.status || !strings.Contains(string(b), tc.sub) {
			t.Errorf("%.80s: %d %s, want %s with %q", tc.body, st, b, tc.status, tc.sub)
		}
	}
	st, _, b := e.do("POST", "/v1/webhooks", keyShop, strings.NewReader(`{"url":"https://hooks.example.com/x"}`))
	if st != 201 {
		t.Fatalf("a good endpoint: %d %s", st, b)
	}
	// At most MaxWebhooks per account.
	for i := 1; i < MaxWebhooks; i++ {
		if st, _, b := e.do("POST", "/v1/webhooks", keyShop, strings.NewReader(`{"url":"https://hooks.example.com/x"}`)); st != 201 {
			t.Fatalf("endpoint %d: %d %s", i+1, st, b)
		}
	}
	st, _, b = e.do("POST", "/v1/webhooks", keyShop, strings.NewReader(`{"url":"https://hooks.example.com/x"}`))
	wantError(t, st, b, 409, "the most it may have")
	for _, p := range []string{"/v1/webhooks/nope", "/v1/webhooks/wh_nope", "/v1/webhooks/wh_nope/messages", "/v1/webhooks/wh_nope/messages/msg_x"} {
		st, _, b := e.do("GET", p, keyShop, nil)
		wantError(t, st, b, 404, "no webhook")
	}
}
